//! A reload onto a binary that cannot serve (missing, one that exits at once, one of another
//! build) keeps every old task worker: `wspush reload` exits 1 saying why, no slot is touched,
//! and the same workers go on checking logins and keeping pushes. With the good binary back,
//! the reload goes through and exits 0 with a one-line summary.
mod common;
use common::*;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The server runs from its own copy of the binary, which the test replaces as an upgrade
/// would (the master re-executes that path for every new worker).
fn start_from_copy(tag: &str) -> (Server, PathBuf) {
    let server = ServerBuilder::new(tag).prepare();
    let exe = server.dir.join("bin/wspush");
    std::fs::create_dir_all(server.dir.join("bin")).expect("bin dir");
    std::fs::copy(binary(), &exe).expect("copy the binary");
    let mut start = Command::new(&exe);
    start
        .args(["start", "--foreground", "-c"])
        .arg(&server.config)
        .stdin(std::process::Stdio::null());
    let mut server = server.launch_command(start);
    server.wait_ready();
    (server, exe)
}

/// A new file renamed over `exe`, as `install` does: the running processes keep theirs.
fn replace(exe: &Path, contents: &[u8]) {
    let tmp = exe.with_extension("new");
    std::fs::write(&tmp, contents).expect("write the new binary");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::rename(&tmp, exe).expect("rename over the binary");
}

/// A shell script that says hello as build `id`, then waits to be killed.
fn other_build(id: &str) -> Vec<u8> {
    let mut hello = Vec::new();
    wspush::ipc::hello::encode_id(id, &mut hello);
    let octal: String = hello.iter().map(|b| format!("\\{b:03o}")).collect();
    format!("#!/bin/sh\nprintf '{octal}'\nexec sleep 30\n").into_bytes()
}

/// `wspush reload` (the test's own build): exit code, standard output, standard error.
fn reload(server: &Server) -> (i32, String, String) {
    let out = wspush_command(&["reload"], &server.config)
        .output()
        .expect("run wspush reload");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Each slot's (pid, ready, restarts).
fn slots(server: &Server) -> Vec<Value> {
    workers(&server.stats())
        .iter()
        .map(|w| json!([w["pid"], w["ready"], w["restarts"]]))
        .collect()
}

/// Logins on both worker slots, a push delivered, a push kept and handed over at login.
fn assert_serving(server: &Server, round: u64) {
    let base = 100 * (round + 1);
    let (a, b, offline) = (base, base + 1, base + 2);
    let mut alice = server.login(a, "app");
    let _bob = server.login(b, "app");
    let reply = server.push(
        "to_uid",
        json!({"to_uid": a.to_string(), "content": "live"}),
    );
    assert_eq!(reply["delivered"], 1, "{reply}");
    assert_eq!(alice.recv()["content"], "live");
    let reply = server.push(
        "to_uid",
        json!({"to_uid": offline.to_string(), "content": "kept"}),
    );
    assert_eq!(
        (reply["code"].clone(), reply["delivered"].clone()),
        (json!(0), json!(0))
    );
    let mut later = server.login(offline, "app");
    assert_eq!(later.recv()["content"], "kept");
}

/// What is wrong, how the binary is broken that way, what the reload command says.
type Case<'a> = (&'a str, Box<dyn Fn() + 'a>, &'a str);

#[test]
fn a_reload_onto_a_broken_binary_fails_and_every_old_worker_keeps_serving() {
    let (server, exe) = start_from_copy("reload-broken");
    let good = std::fs::read(&exe).expect("read the binary");
    let before = slots(&server);
    assert_serving(&server, 0);

    let missing = exe.with_extension("away");
    std::fs::rename(&exe, &missing).expect("take the binary away");
    let exits: &[u8] = b"#!/bin/sh\necho 'this build is broken' >&2\nexit 1\n";
    let cases: [Case; 3] = [
        ("missing binary", Box::new(|| {}), "could not be started"),
        (
            "exits at once",
            Box::new(|| replace(&exe, exits)),
            "task worker 0",
        ),
        (
            "another build",
            Box::new(|| replace(&exe, &other_build("9.9.9/ipc9/0000000000000000"))),
            "is build 9.9.9/ipc9/0000000000000000",
        ),
    ];
    for (round, (what, break_it, says)) in cases.iter().enumerate() {
        break_it();
        let (code, out, err) = reload(&server);
        assert_eq!(code, 1, "{what}: exit code\n{out}{err}");
        assert!(err.contains("reload failed"), "{what}: {err}");
        assert!(err.contains(says), "{what}: `{says}` in {err}");
        assert!(
            err.contains("every old worker keeps serving"),
            "{what}: {err}"
        );
        assert_eq!(
            slots(&server),
            before,
            "{what}: the same workers, none restarted"
        );
        assert_serving(&server, round as u64 + 1);
    }
    assert!(
        server.log().contains("reload abandoned"),
        "{}",
        server.log()
    );

    replace(&exe, &good);
    let (code, out, err) = reload(&server);
    assert_eq!(code, 0, "the good binary back\n{out}{err}");
    assert!(out.contains("reloaded 2 of 2 task workers"), "{out}");
    assert_eq!(out.lines().count(), 1, "one line: {out}");
    let after = slots(&server);
    for (old, new) in before.iter().zip(&after) {
        assert_ne!(
            old[0], new[0],
            "every slot has a new worker: {before:?} -> {after:?}"
        );
        assert_eq!(new[1], true);
    }
    assert_serving(&server, 9);
}
