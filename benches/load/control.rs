//! The coordinator <-> agent protocol: one JSON object per line, commands on the agent's stdin
//! and replies on its stdout; plus the clock and the latency histograms both sides share.

use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Set in an agent's environment (to its index): the bench binary then runs as that agent.
pub const AGENT_ENV: &str = "WSPUSH_LOAD_AGENT";

/// Highest latency a histogram holds: 60 s in nanoseconds (longer ones saturate).
const HIST_MAX_NS: u64 = 60_000_000_000;

#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Connect and log in uids `first_uid..=last_uid` from `source_ip`, at most `max_pending`
    /// handshakes at once (TLS ones with `tls_cert`); answered with `Reply::Connected`.
    Connect {
        ws_port: u16,
        source_ip: String,
        first_uid: u64,
        last_uid: u64,
        max_pending: usize,
        timeout_ms: u64,
        /// wss://: the server's certificate (DER, base64), the one the clients trust.
        #[serde(default)]
        tls_cert: Option<String>,
    },
    /// Each listed sender sends `messages` chat frames round robin over its receivers, with at
    /// most `window` un-acked; answered with `Reply::ChatDone` once all are acked.
    Chat {
        window: u32,
        messages: u64,
        senders: Vec<(u64, Vec<u64>)>,
        timeout_ms: u64,
    },
    /// Answered with `Reply::Reached` once `total` distinct messages have arrived (since the
    /// start), or when `timeout_ms` has passed.
    Expect {
        total: u64,
        timeout_ms: u64,
    },
    /// Answered with `Reply::Report`.
    Report,
    Quit,
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Reply {
    Connected {
        ok: u64,
        failed: u64,
        /// CLOCK_MONOTONIC of the first connect() and of the last login frame.
        first_ns: u64,
        last_ns: u64,
        /// Connect-to-login-frame times (`encode_hist`).
        hist: String,
        /// The agent's own CPU time so far.
        cpu_secs: f64,
    },
    ChatDone {
        sent: u64,
        acked: u64,
        complete: bool,
    },
    Reached {
        unique: u64,
        complete: bool,
        /// Lowest and highest latency since the previous `Reached` (0 if none arrived).
        min_ns: u64,
        max_ns: u64,
        /// When the latest new message arrived.
        last_at_ns: u64,
    },
    Report {
        counts: Counts,
        hist: String,
        cpu_secs: f64,
    },
}

/// What an agent's clients received, summed over them.
#[derive(Serialize, Deserialize, Debug, Default, Clone, Copy)]
pub struct Counts {
    /// Distinct messages (sender, receiver, sequence number).
    pub unique: u64,
    pub duplicates: u64,
    /// Arrived after a later message of the same sender to the same receiver.
    pub reordered: u64,
    /// Frames that are not what the bench sends (unparseable, no sequence number).
    pub bad: u64,
    /// `{"type":"error"}` frames from the server (for example 429).
    pub errors: u64,
    /// Connections the server closed while the bench was running.
    pub closed: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.unique += o.unique;
        self.duplicates += o.duplicates;
        self.reordered += o.reordered;
        self.bad += o.bad;
        self.errors += o.errors;
        self.closed += o.closed;
    }
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process on the machine, so a
/// timestamp taken by the sender can be compared with the receiver's.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to; CLOCK_MONOTONIC exists on every Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// User + system CPU time of this process (all its threads), in seconds.
pub fn self_cpu_secs() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |u| {
        let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        secs(u.user_time()) + secs(u.system_time())
    })
}

/// A latency histogram in nanoseconds, 3 significant digits.
pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_NS, 3).expect("histogram bounds")
}

/// Base64 of the histogram's V2 serialization, to travel in a JSON line.
pub fn encode_hist(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut bytes)
        .expect("serialize a histogram");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn decode_hist(s: &str) -> Option<Histogram<u64>> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
    Deserializer::new().deserialize(&mut bytes.as_slice()).ok()
}
