//! Under systemd (`Type=notify`), the master tells the socket in `NOTIFY_SOCKET`: READY=1 (with
//! its pid) once every port answers and every worker is up, RELOADING=1 then READY=1 around a
//! reload, and STOPPING=1 when it is asked to stop.
mod common;
use common::*;
use nix::sys::signal::Signal;
use std::os::unix::net::UnixDatagram;

/// The next notification, as text (bounded by `WAIT`).
fn next(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("a notification within the wait");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn the_master_notifies_ready_once_serving_then_reloading_ready_and_stopping() {
    let server = ServerBuilder::new("notify").prepare();
    let path = server.dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
    sock.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut start = wspush_command(&["start", "--foreground"], &server.config);
    start.env("NOTIFY_SOCKET", &path);
    let mut server = server.launch_command(start);

    let ready = next(&sock);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    let main_pid = format!("MAINPID={}", server.pid());
    assert!(ready.lines().any(|l| l == main_pid), "{ready}");
    // Ready means serving: both ports answer at once, no waiting.
    let stats = server
        .try_stats()
        .expect("the HTTP port answers at READY=1");
    assert!(
        workers(&stats).iter().all(|w| w["ready"] == true),
        "{stats}"
    );
    let mut alice = server.login(1, "app");

    server.signal(Signal::SIGUSR1);
    let reloading = next(&sock);
    assert!(reloading.lines().any(|l| l == "RELOADING=1"), "{reloading}");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    let reloaded = next(&sock);
    assert!(reloaded.lines().any(|l| l == "READY=1"), "{reloaded}");
    assert!(
        reloaded.contains("STATUS=ready; reloaded 2 task workers"),
        "{reloaded}"
    );

    server.signal(Signal::SIGTERM);
    let stopping = next(&sock);
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping}");
    alice.expect_close(1001);
    assert!(server.wait_exit().success());
}
