//! SIGHUP reopens the log file (logrotate renames it, then signals): the master and every task
//! worker write to the new file from then on, and nothing more goes to the renamed one.
mod common;
use common::*;
use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};

fn log_path(server: &Server) -> PathBuf {
    server.dir.join("logs/wspush.log")
}

/// Renames the log file as logrotate would; returns the new name of the old file.
fn rotate(server: &Server, suffix: &str) -> PathBuf {
    let rotated = server.dir.join(format!("logs/wspush.log.{suffix}"));
    std::fs::rename(log_path(server), &rotated).expect("rename the log file");
    assert!(!log_path(server).exists());
    rotated
}

fn wait_for_line(path: &Path, needle: &str) -> String {
    wait_for(&format!("{needle:?} in {}", path.display()), || {
        let text = read_file(path);
        text.contains(needle).then_some(text)
    })
}

#[test]
fn after_sighup_master_and_workers_write_to_a_fresh_log_file() {
    let mut server = Server::start("sighup");
    assert!(!server.log().is_empty(), "the server logs at start-up");
    let rotated = rotate(&server, "1");
    server.signal(Signal::SIGHUP);
    let fresh = wait_for_line(&log_path(&server), "log file reopened");
    assert!(fresh.contains("[master "), "{fresh}");
    let old = read_file(&rotated);
    assert!(
        !old.contains("log file reopened"),
        "the renamed file got the line:\n{old}"
    );

    // Stopping makes every worker log its exit: those lines must land in the new file.
    let workers = server.worker_pids();
    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait_exit().code(), Some(0));
    let fresh = read_file(&log_path(&server));
    for pid in &workers {
        assert!(
            fresh
                .lines()
                .any(|l| l.contains(&format!("[worker {pid}]")) && l.contains("task worker exits")),
            "worker {pid} still writes to the renamed file:\nnew file:\n{fresh}\nrenamed file:\n{}",
            read_file(&rotated)
        );
    }
    assert!(fresh.contains("stopped"), "{fresh}");
    assert_eq!(
        read_file(&rotated),
        old,
        "nothing more went to the renamed file"
    );
}

#[test]
fn every_rotation_gets_a_fresh_file() {
    let server = Server::start("sighup-twice");
    let first = rotate(&server, "1");
    server.signal(Signal::SIGHUP);
    wait_for_line(&log_path(&server), "log file reopened");
    let second = rotate(&server, "2");
    server.signal(Signal::SIGHUP);
    let fresh = wait_for_line(&log_path(&server), "log file reopened");
    assert_eq!(fresh.matches("log file reopened").count(), 1, "{fresh}");
    assert_eq!(read_file(&second).matches("log file reopened").count(), 1);
    assert!(!read_file(&first).contains("log file reopened"));
    // The server goes on serving after its rotations.
    let mut c = server.login(7, "app");
    c.send_text("ping");
    assert_eq!(c.recv()["type"], "pong");
}

#[test]
fn sigusr2_reopens_the_log_file_too() {
    let server = Server::start("sigusr2");
    let rotated = rotate(&server, "1");
    server.signal(Signal::SIGUSR2);
    wait_for_line(&log_path(&server), "log file reopened");
    assert!(!read_file(&rotated).contains("log file reopened"));
}
