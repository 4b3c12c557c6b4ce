//! A bad configuration stops `start` (foreground or daemon) and `check-config` with exit code 2
//! and one line on standard error naming the file, the `section.key` and, for syntax and type
//! errors, the line. Nothing is started, bound or written.
mod common;
use common::*;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;

const EXIT_CONFIG: i32 = 2;

/// Kills the child if it is still running when dropped (a config error that does not stop it).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Runs `wspush <args> -c <config>`; returns (exit code, stdout, stderr). Panics if it does not
/// exit within `WAIT`, after killing it.
fn run(args: &[&str], config: &Path) -> (i32, String, String) {
    let child = wspush_command(args, config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wspush");
    let mut child = KillOnDrop(child);
    let status = wait_for(&format!("`wspush {}` to exit", args.join(" ")), || {
        child.0.try_wait().expect("try_wait")
    });
    let read = |r: Option<&mut dyn std::io::Read>| {
        let mut s = String::new();
        if let Some(r) = r {
            r.read_to_string(&mut s).expect("read output");
        }
        s
    };
    let out = read(child.0.stdout.as_mut().map(|s| s as &mut dyn std::io::Read));
    let err = read(child.0.stderr.as_mut().map(|s| s as &mut dyn std::io::Read));
    (status.code().unwrap_or(-1), out, err)
}

/// A config with free ports and its own directories, edited by `edit`.
fn config_with(server: &Server, edit: impl FnOnce(String) -> String) -> PathBuf {
    let text = edit(std::fs::read_to_string(&server.config).expect("read config"));
    std::fs::write(&server.config, text).expect("write config");
    server.config.clone()
}

/// The 1-based line of `config` that starts with `start`.
fn line_of(config: &Path, start: &str) -> usize {
    let text = std::fs::read_to_string(config).expect("read config");
    text.lines()
        .position(|l| l.trim_start().starts_with(start))
        .unwrap_or_else(|| panic!("no {start:?} in\n{text}"))
        + 1
}

/// Every command that reads the config refuses it with exit 2 and an error naming the file,
/// the key, the line and `also` (each if given); nothing is started.
fn assert_refused(server: &Server, key: Option<&str>, line: Option<usize>, also: Option<&str>) {
    let config = &server.config;
    for args in [
        &["check-config"][..],
        &["start", "--foreground"],
        &["start", "-d"],
        &["status"],
    ] {
        let (code, _out, err) = run(args, config);
        let cmd = args.join(" ");
        assert_eq!(code, EXIT_CONFIG, "`{cmd}` exits 2; stderr: {err}");
        assert_eq!(err.lines().count(), 1, "`{cmd}`: one line: {err}");
        assert!(
            err.contains(&format!("config error in {}", config.display())),
            "`{cmd}` names the file: {err}"
        );
        if let Some(key) = key {
            assert!(
                err.contains(&format!("key `{key}`")),
                "`{cmd}` names the key {key}: {err}"
            );
        }
        if let Some(line) = line {
            assert!(
                err.contains(&format!("line {line}:")),
                "`{cmd}` names line {line}: {err}"
            );
        }
        if let Some(also) = also {
            assert!(err.contains(also), "`{cmd}` says {also:?}: {err}");
        }
    }
    assert!(!server.pid_file().exists(), "no pid file written");
    assert!(!server.dir.join("logs").exists(), "no log directory made");
    assert!(
        TcpStream::connect(local_addr(server.ws_port)).is_err(),
        "nothing listens on the WebSocket port"
    );
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let server = ServerBuilder::new("cfg-unknown")
        .set("bogus", "3")
        .prepare();
    let line = line_of(&server.config, "bogus");
    assert_refused(
        &server,
        Some("server.bogus"),
        Some(line),
        Some("unknown field `bogus`"),
    );
}

#[test]
fn a_wrong_type_is_named_with_its_line() {
    let server = ServerBuilder::new("cfg-type").prepare();
    let port = server.ws_port;
    config_with(&server, |t| {
        t.replace(&format!("ws_port = {port}\n"), "ws_port = \"x\"\n")
    });
    let line = line_of(&server.config, "ws_port");
    assert_refused(&server, Some("server.ws_port"), Some(line), Some("\"x\""));
}

#[test]
fn a_host_that_is_not_an_address_is_named() {
    let server = ServerBuilder::new("cfg-host").prepare();
    config_with(&server, |t| {
        t.replace("host = \"127.0.0.1\"", "host = \"nowhere\"")
    });
    assert_refused(&server, Some("server.host"), None, Some("`nowhere`"));
}

#[test]
fn a_message_size_out_of_bounds_is_named() {
    let server = ServerBuilder::new("cfg-size")
        .set("max_message_size", "1")
        .prepare();
    assert_refused(&server, Some("server.max_message_size"), None, Some("128"));
}

#[test]
fn a_task_timeout_not_below_the_handshake_timeout_is_named() {
    let server = ServerBuilder::new("cfg-deadlines")
        .set("handshake_timeout", "3")
        .set("task_timeout", "3")
        .prepare();
    assert_refused(
        &server,
        Some("server.task_timeout"),
        None,
        Some("less than server.handshake_timeout (3 s)"),
    );
}

#[test]
fn a_push_peer_ip_that_is_not_an_address_is_named() {
    let server = ServerBuilder::new("cfg-peer")
        .push_peers(&[("1.2.3", "k")])
        .prepare();
    assert_refused(
        &server,
        Some("udpsocket_group[0].ip"),
        None,
        Some("`1.2.3`"),
    );
}

#[test]
fn a_toml_syntax_error_is_named_with_its_line() {
    let server = ServerBuilder::new("cfg-syntax")
        .set("rate_limit", "= 5")
        .prepare();
    let line = line_of(&server.config, "rate_limit");
    assert_refused(&server, Some("server.rate_limit"), Some(line), None);
}

#[test]
fn an_unclosed_table_header_is_named_with_its_line() {
    let server = ServerBuilder::new("cfg-header")
        .extra("[storage\nbackup = true")
        .prepare();
    let line = line_of(&server.config, "[storage");
    assert_refused(&server, None, Some(line), Some("unclosed table"));
}

#[test]
fn an_unknown_section_is_named() {
    let server = ServerBuilder::new("cfg-section")
        .extra("[bogus_section]\nx = 1")
        .prepare();
    let line = line_of(&server.config, "[bogus_section]");
    assert_refused(
        &server,
        None,
        Some(line),
        Some("unknown field `bogus_section`"),
    );
}

#[test]
fn a_missing_file_is_named() {
    let dir = unique_dir("cfg-missing");
    let config = dir.join("nowhere.toml");
    for args in [
        &["check-config"][..],
        &["start", "--foreground"],
        &["start", "-d"],
        &["status"],
    ] {
        let (code, _out, err) = run(args, &config);
        assert_eq!(code, EXIT_CONFIG, "`{}`: {err}", args.join(" "));
        assert!(
            err.contains(&format!("config error in {}", config.display())),
            "{err}"
        );
        assert!(err.contains("cannot read"), "{err}");
    }
}

#[test]
fn check_config_accepts_a_good_file() {
    let server = ServerBuilder::new("cfg-good").prepare();
    let (code, out, err) = run(&["check-config"], &server.config);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("{}: ok", server.config.display())),
        "{out}"
    );
    assert!(err.is_empty(), "{err}");
    assert!(!server.pid_file().exists(), "check-config starts nothing");
}
