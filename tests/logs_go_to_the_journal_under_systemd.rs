//! Under systemd, standard error is the journal, which `JOURNAL_STREAM` names (device:inode):
//! the master and its workers then log there, each line with its syslog priority (`<N>`) and
//! no timestamp, write no log file, and SIGHUP reopens nothing.
mod common;
use common::*;
use nix::sys::signal::Signal;
use std::os::unix::fs::MetadataExt;

#[test]
fn with_journal_stream_set_every_process_logs_to_standard_error_with_priorities() {
    let server = ServerBuilder::new("journal").prepare();
    // The stream the server's standard error will be (launch_command truncates this file).
    let stderr = server.dir.join("stderr.log");
    std::fs::write(&stderr, b"").expect("create stderr.log");
    let meta = std::fs::metadata(&stderr).expect("stat stderr.log");
    let mut start = wspush_command(&["start", "--foreground"], &server.config);
    start.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
    let mut server = server.launch_command(start);
    server.wait_ready();
    let _alice = server.login(1, "app");
    server.signal(Signal::SIGHUP);
    let journal = wait_for(
        "master and worker lines, and the reopen, in the journal",
        || {
            let text = read_file(&stderr);
            (text.contains("<6>[master ")
                && text.contains("<7>[worker ")
                && text.contains("log file reopened"))
            .then_some(text)
        },
    );
    for line in journal.lines() {
        let priority = line
            .strip_prefix('<')
            .and_then(|l| l.split_once('>'))
            .map(|(n, rest)| (n.parse::<u8>(), rest.starts_with('[')));
        assert!(
            matches!(priority, Some((Ok(0..=7), true))),
            "`<N>[role pid]` first, no timestamp: {line}\n{journal}"
        );
    }
    assert!(
        !server.dir.join("logs").exists(),
        "no log file (nor its directory) is written"
    );
}
