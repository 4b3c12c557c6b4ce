//! `sh/websocket restart` builds the new binary first: a failed build leaves the running
//! server untouched and exits 1; a good one is built while the old server still runs, then the
//! server is restarted. The script runs in a copy of the project whose `cargo` is a stand-in.
mod common;
use common::*;
use nix::sys::signal::Signal;
use std::path::Path;
use std::process::{Command, Output};

/// A stand-in for cargo: notes whether the server it was given was alive when it ran, and
/// fails while `fail` exists beside it.
const FAKE_CARGO: &str = r#"#!/bin/sh
here=$(dirname "$0")
if kill -0 "$RUNNING_PID" 2>/dev/null; then echo "build while $RUNNING_PID runs" >> "$here/log"; fi
if [ -e "$here/fail" ]; then echo "error: could not compile wspush" >&2; exit 101; fi
exit 0
"#;

/// Kills the daemon the script started, whatever happens to the test.
struct KillDaemon<'a>(&'a Server);

impl Drop for KillDaemon<'_> {
    fn drop(&mut self) {
        if let Some(pid) = daemon_pid(self.0) {
            send_signal(pid, Signal::SIGKILL);
        }
    }
}

fn daemon_pid(server: &Server) -> Option<u32> {
    std::fs::read_to_string(server.pid_file())
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `sh/websocket <cmd> -c <config>` in the copied project, told the running pid.
fn script(server: &Server, cmd: &str) -> Output {
    let fake = server.dir.join("fakebin");
    let path = format!(
        "{}:{}",
        fake.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let running = daemon_pid(server).map_or_else(|| "0".into(), |p| p.to_string());
    Command::new("bash")
        .arg(server.dir.join("sh/websocket"))
        .args([cmd, "-c"])
        .arg(&server.config)
        .env("PATH", path)
        .env("RUNNING_PID", running)
        .output()
        .expect("run sh/websocket")
}

fn write_executable(path: &Path, text: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn said(out: &Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_failed_build_leaves_the_server_running_and_a_good_one_restarts_it() {
    let server = ServerBuilder::new("restart-build").prepare();
    let project = &server.dir;
    for dir in ["sh", "src", "target/release", "fakebin"] {
        std::fs::create_dir_all(project.join(dir)).expect("project dir");
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(repo.join("sh/websocket"), project.join("sh/websocket")).expect("script");
    std::fs::write(project.join("Cargo.toml"), "# a project with sources\n").expect("toml");
    std::fs::copy(binary(), project.join("target/release/wspush")).expect("binary");
    write_executable(&project.join("fakebin/cargo"), FAKE_CARGO.as_bytes());
    let build_log = project.join("fakebin/log");

    let out = script(&server, "start");
    assert!(out.status.success(), "start: {}", said(&out));
    let _kill = KillDaemon(&server);
    let first = daemon_pid(&server).expect("a pid file");
    server.stats();

    std::fs::write(project.join("fakebin/fail"), "").expect("break the build");
    let out = script(&server, "restart");
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("build failed; the running server was not touched"),
        "{}",
        said(&out)
    );
    assert!(pid_alive(first), "the server still runs");
    assert_eq!(daemon_pid(&server), Some(first));
    assert_eq!(server.stats()["pid"], first, "and still serves");

    std::fs::remove_file(project.join("fakebin/fail")).expect("mend the build");
    std::fs::remove_file(&build_log).expect("forget the earlier builds");
    let out = script(&server, "restart");
    assert!(out.status.success(), "restart: {}", said(&out));
    assert_eq!(
        read_file(&build_log),
        format!("build while {first} runs\n"),
        "built once, before the old server was stopped"
    );
    wait_for_exit_of(first, "the old server to be gone");
    let second = daemon_pid(&server).expect("a new pid file");
    assert_ne!(second, first);
    assert_eq!(server.stats()["pid"], second);

    let out = script(&server, "stop");
    assert!(out.status.success(), "stop: {}", said(&out));
    wait_for_exit_of(second, "the server to stop");
}
