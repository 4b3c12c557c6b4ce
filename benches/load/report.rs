//! The figures of one run: a short table for people, then one `RESULT key=value ...` line for
//! scripts, and whether the run passes (nothing lost, duplicated or reordered).

use crate::control::Counts;
use hdrhistogram::Histogram;

/// The logins every scenario starts with.
pub struct ConnectFigures {
    pub logins: u64,
    pub failed: u64,
    pub agents: usize,
    /// From the first connect() to the last login frame.
    pub secs: f64,
    pub cpu_us_per_login: f64,
    /// Server RSS (master and workers) before the first connect and after the last login.
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    /// connect() to login frame.
    pub hist: Histogram<u64>,
    /// CPU time of the load generator (coordinator, agents) while connecting.
    pub gen_cpu_secs: (f64, f64),
    /// The clients spoke wss:// (and the coordinator https://).
    pub tls: bool,
}

impl ConnectFigures {
    pub fn rate(&self) -> f64 {
        self.logins as f64 / self.secs.max(1e-9)
    }

    pub fn gen_us_per_login(&self) -> f64 {
        (self.gen_cpu_secs.0 + self.gen_cpu_secs.1) * 1e6 / self.logins.max(1) as f64
    }

    /// RSS added per connection, and the whole RSS per connection.
    pub fn rss_per_conn(&self) -> (f64, f64) {
        let n = self.logins.max(1) as f64;
        (
            self.rss_after_kib.saturating_sub(self.rss_before_kib) as f64 / n,
            self.rss_after_kib as f64 / n,
        )
    }
}

/// The measured phase of a scenario.
pub struct Figures {
    pub scenario: &'static str,
    pub users: u64,
    /// Messages that should have arrived.
    pub expected: u64,
    /// From the first send to the last delivery.
    pub secs: f64,
    pub counts: Counts,
    pub hist: Histogram<u64>,
    pub server_cpu_secs: f64,
    /// CPU time of the load generator (coordinator, agents) in the measured phase.
    pub gen_cpu_secs: (f64, f64),
    /// Scenario-specific lines for the table.
    pub notes: Vec<String>,
    /// Scenario-specific `key=value` pairs for the RESULT line.
    pub extra: Vec<(&'static str, String)>,
    /// Problems on the sending side (unanswered pushes, un-acked chat frames).
    pub send_errors: u64,
}

impl Figures {
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.counts.unique)
    }

    pub fn rate(&self) -> f64 {
        self.counts.unique as f64 / self.secs.max(1e-9)
    }

    pub fn cpu_us_per_msg(&self) -> f64 {
        self.server_cpu_secs * 1e6 / self.counts.unique.max(1) as f64
    }

    pub fn gen_us_per_msg(&self) -> f64 {
        (self.gen_cpu_secs.0 + self.gen_cpu_secs.1) * 1e6 / self.counts.unique.max(1) as f64
    }
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    h.value_at_quantile(q) as f64 / 1000.0
}

fn max_us(h: &Histogram<u64>) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.max() as f64 / 1000.0
    }
}

/// Prints the table and the RESULT line; true when the run passes.
pub fn print(c: &ConnectFigures, f: &Figures) -> bool {
    let (delta, total) = c.rss_per_conn();
    println!(
        "\n== {}: {} users on {} agents{}",
        f.scenario,
        f.users,
        c.agents,
        if c.tls { ", wss://" } else { "" }
    );
    println!(
        "  logins     {} in {:.2} s = {:.0}/s (failed {}); connect to login p50 {:.0} us, p99 {:.0} us, max {:.0} us",
        c.logins,
        c.secs,
        c.rate(),
        c.failed,
        us(&c.hist, 0.5),
        us(&c.hist, 0.99),
        max_us(&c.hist)
    );
    println!(
        "  server     {:.1} us CPU per login; RSS {:.2} KiB per connection added ({} -> {} KiB, {:.2} KiB per connection in all)",
        c.cpu_us_per_login, delta, c.rss_before_kib, c.rss_after_kib, total
    );
    println!(
        "  load gen   {:.1} us CPU per login (coordinator {:.2} s, agents {:.2} s)",
        c.gen_us_per_login(),
        c.gen_cpu_secs.0,
        c.gen_cpu_secs.1
    );
    if f.scenario != "connect" {
        println!(
            "  delivered  {} of {} in {:.3} s = {:.0} msgs/s",
            f.counts.unique,
            f.expected,
            f.secs,
            f.rate()
        );
        println!(
            "  latency    p50 {:.0} us, p99 {:.0} us, max {:.0} us",
            us(&f.hist, 0.5),
            us(&f.hist, 0.99),
            max_us(&f.hist)
        );
        println!(
            "  server     {:.2} us CPU per delivered message",
            f.cpu_us_per_msg(),
        );
        println!(
            "  load gen   {:.2} us CPU per delivered message (coordinator {:.2} s, agents {:.2} s)",
            f.gen_us_per_msg(),
            f.gen_cpu_secs.0,
            f.gen_cpu_secs.1
        );
    }
    for note in &f.notes {
        println!("  {note}");
    }
    let k = &f.counts;
    println!(
        "  check      lost {}, duplicates {}, reordered {} (bad frames {}, error frames {}, closed {}, send errors {})",
        f.lost(),
        k.duplicates,
        k.reordered,
        k.bad,
        k.errors,
        k.closed,
        f.send_errors
    );
    // For `connect` the messages are the logins.
    let connect = f.scenario == "connect";
    let msgs = if connect { c.logins } else { f.expected };
    let rate = if connect { c.rate() } else { f.rate() };
    let hist = if connect { &c.hist } else { &f.hist };
    let cpu = if connect {
        c.cpu_us_per_login
    } else {
        f.cpu_us_per_msg()
    };
    let gen_us = if connect {
        c.gen_us_per_login()
    } else {
        f.gen_us_per_msg()
    };
    let (p50, p99, max) = (us(hist, 0.5), us(hist, 0.99), max_us(hist));
    let mut line = format!(
        "RESULT scenario={} users={} agents={} msgs={} rate={rate:.0} p50_us={p50:.0} p99_us={p99:.0} max_us={max:.0} \
         cpu_us_per_msg={cpu:.2} gen_cpu_us_per_msg={gen_us:.2} rss_kib_per_conn={delta:.2} logins_per_s={:.0} lost={} dup={} reordered={} \
         bad={} errors={} closed={} failed_logins={}",
        f.scenario,
        f.users,
        c.agents,
        msgs,
        c.rate(),
        f.lost(),
        k.duplicates,
        k.reordered,
        k.bad,
        k.errors,
        k.closed,
        c.failed
    );
    for (key, v) in &f.extra {
        line.push_str(&format!(" {key}={v}"));
    }
    if c.tls {
        line.push_str(" tls=1");
    }
    println!("{line}");
    f.lost() == 0
        && f.counts.unique <= f.expected
        && k.duplicates == 0
        && k.reordered == 0
        && k.bad == 0
        && k.errors == 0
        && k.closed == 0
        && c.failed == 0
        && f.send_errors == 0
}
