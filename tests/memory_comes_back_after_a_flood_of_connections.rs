//! After a flood of connections has closed, the server gives its memory back: the master's
//! resident size returns near where it started, within seconds.
mod common;
use common::*;

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

#[test]
fn resident_memory_returns_near_its_baseline() {
    const USERS: u64 = 2000;
    let server = ServerBuilder::new("memory-back")
        .set("connection_rate_per_ip", "100000")
        .start();
    let baseline = rss_kib(server.pid());
    let clients: Vec<Client> = (1..=USERS).map(|uid| server.login(uid, "app")).collect();
    let loaded = rss_kib(server.pid());
    assert!(
        loaded > baseline + 1024,
        "the connections took memory: {baseline} -> {loaded} KiB"
    );
    drop(clients);
    wait_for("every connection to be gone", || {
        (server.stats()["connections"] == 0).then_some(())
    });
    // "Near": within a fifth of what the flood took, or 1 MiB, whichever is larger.
    let near = baseline + ((loaded - baseline) / 5).max(1024);
    let after = wait_for("resident memory back near its baseline", || {
        let now = rss_kib(server.pid());
        (now <= near).then_some(now)
    });
    println!(
        "master RSS: {baseline} KiB, {loaded} KiB with {USERS} connections, {after} KiB after"
    );
}
