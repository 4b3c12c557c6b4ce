//! A burst of connections arriving while the master is busy waits in the listen backlog: every
//! TCP handshake completes at once (no SYN dropped and retransmitted a second later), and every
//! connection is served when the master gets to it.
mod common;
use common::*;
use nix::sys::signal::Signal;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Well past the 128 that std and mio listen with.
const BURST: usize = 600;

#[test]
fn six_hundred_connections_complete_their_handshake_while_the_master_is_stopped() {
    let server = ServerBuilder::new("backlog")
        .set("connection_rate_per_ip", "100000")
        .set("connection_burst_per_ip", "100000")
        .start();
    let addr: SocketAddr = format!("127.0.0.1:{}", server.ws_port)
        .parse()
        .expect("address");
    // Stopped, the master accepts nothing: the kernel alone queues the connections.
    server.signal(Signal::SIGSTOP);
    let mut streams = Vec::with_capacity(BURST);
    let mut refused = 0;
    for _ in 0..BURST {
        // A dropped SYN is retried after a second: half a second tells the two apart.
        match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Ok(s) => streams.push(s),
            Err(_) => {
                refused += 1;
                if refused > 3 {
                    break;
                }
            }
        }
    }
    server.signal(Signal::SIGCONT);
    assert_eq!(
        refused, 0,
        "connections beyond the listen backlog were dropped"
    );
    drop(streams);
    // The master goes on serving once it runs again.
    let mut c = server.login(1, "app");
    c.send_text("ping");
    assert_eq!(c.recv()["type"], "pong");
}
