//! Log lines with levels on standard error, which each process points at `log_file`; reopening
//! (SIGHUP, for logrotate) points it at a fresh file without losing a line. Under systemd, when
//! standard error is the journal (`JOURNAL_STREAM` names it), it stays there: lines then carry
//! a syslog `<N>` priority for journald and no timestamp (the journal has its own).

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

struct StderrLogger {
    role: &'static str,
    journal: bool,
}

/// Whether standard error is the journal stream systemd connected: `JOURNAL_STREAM` is
/// `device:inode` of that stream, so a standard error pointed elsewhere (a daemon's /dev/null,
/// the log file after a redirect) does not count.
pub fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// The syslog priority journald reads from a line's `<N>` prefix.
fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // One write per line, so that lines of several processes never interleave.
        let line = if self.journal {
            format!(
                "<{}>[{} {}] {}\n",
                priority(record.level()),
                self.role,
                std::process::id(),
                record.args()
            )
        } else {
            format!(
                "{} {:<5} [{} {}] {}\n",
                utc_timestamp(),
                record.level(),
                self.role,
                std::process::id(),
                record.args()
            )
        };
        let _ = io::stderr().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Installs the logger for this process; `role` is "master" or "worker".
pub fn init(role: &'static str, level: &str) {
    let level = level.parse().unwrap_or(LevelFilter::Info);
    let journal = stderr_is_journal();
    if log::set_boxed_logger(Box::new(StderrLogger { role, journal })).is_ok() {
        log::set_max_level(level);
    }
}

/// Points standard error at `path`, appending, creating its directory; nothing when standard
/// error is the journal. (Standard output is left alone: in a task worker it is the channel to
/// the master.)
pub fn redirect_to(path: &Path) -> io::Result<()> {
    if stderr_is_journal() {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    nix::unistd::dup2_stderr(&file).map_err(io::Error::from)?;
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, from the civil-from-days algorithm (H. Hinnant).
fn utc_timestamp() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_millis()
    )
}
