//! SIGHUP re-reads the certificate and key: the next connection is served the new certificate
//! while an open one keeps talking; a bad new pair is logged and the old one kept. A bad pair
//! at start stops the start with exit code 2 and a message naming the file and the key.
mod common;
use common::tls::{connect, TestCert};
use common::*;
use nix::sys::signal::Signal;
use std::process::Stdio;

/// The certificate (DER) the server presents to a new connection on the WebSocket port,
/// checked against `trusting`'s roots.
fn presented(server: &Server, trusting: &TestCert) -> Option<Vec<u8>> {
    let s = connect(server.ws_port, &trusting.client).ok()?;
    let certs = s.conn.peer_certificates()?;
    Some(certs.first()?.to_vec())
}

#[test]
fn a_renewed_certificate_is_served_to_the_next_connection() {
    let old = TestCert::new();
    let mut server = ServerBuilder::new("tls-reload").tls(&old).start();
    let mut open = server.login(1, "app");
    assert!(presented(&server, &old).is_some());

    // The renewal replaces both files (as certbot's deploy hook would), then SIGHUP.
    let new = TestCert::new();
    new.write(&server.dir, "server");
    server.signal(Signal::SIGHUP);
    wait_for("the new certificate to be served", || {
        presented(&server, &new)
    });
    assert!(presented(&server, &old).is_none(), "the old one is gone");
    // From now on the harness's own clients must trust the new one.
    server.tls = Some(new.client.clone());
    // The connection opened before still works (it keeps its session).
    open.send_text("ping");
    assert_eq!(open.recv()["type"], "pong");

    // A broken pair (a key of another certificate) is refused; the last good one stays.
    let other = TestCert::new();
    std::fs::write(server.dir.join("server.key"), &other.key_pem).expect("write key");
    server.signal(Signal::SIGHUP);
    wait_for("the refusal to be logged", || {
        server
            .log()
            .contains("TLS not reloaded, the old certificate stays")
            .then_some(())
    });
    assert!(presented(&server, &new).is_some());
    server.login(2, "app");
}

#[test]
fn a_bad_pair_stops_the_start_with_exit_2() {
    let a = TestCert::new();
    let b = TestCert::new();
    let server = ServerBuilder::new("tls-bad-pair").tls(&a).prepare();
    // The key no longer matches the certificate.
    std::fs::write(server.dir.join("server.key"), &b.key_pem).expect("write key");
    let out = wspush_command(&["start", "--foreground"], &server.config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("server.ssl_key_file"), "{stderr}");
    assert!(stderr.contains("server.key"), "{stderr}");
    assert!(stderr.contains("websocket.toml"), "{stderr}");

    // A missing certificate file names its key.
    std::fs::remove_file(server.dir.join("server.crt")).expect("remove");
    let out = wspush_command(&["check-config"], &server.config)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("server.ssl_cert_file"), "{stderr}");
}
