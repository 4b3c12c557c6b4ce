//! The scenarios. Every one starts a server, writes the tokens and logs the users in through
//! the agents (`Bench::start`, the `connect` figures), then runs its measured phase: the
//! server's CPU time is read before and after it, and every agent is asked to answer once all
//! the messages meant for its users have arrived.

use crate::common::tls::BenchCert;
use crate::common::{cpu_secs, rss_kib, BenchServer};
use crate::control::{decode_hist, new_hist, now_ns, self_cpu_secs, Command, Counts, Reply};
use crate::fleet::Fleet;
use crate::pusher::Pusher;
use crate::report::{ConnectFigures, Figures};
use crate::store::Store;
use hdrhistogram::Histogram;
use std::time::{Duration, Instant};

const CONNECT_TIMEOUT_MS: u64 = 180_000;
const DELIVERY_TIMEOUT_MS: u64 = 60_000;
const CHAT_TIMEOUT_MS: u64 = 300_000;
/// What the coordinator allows beyond an agent's own deadline before it gives up on it.
const MARGIN: Duration = Duration::from_secs(15);
/// Shortest sleep of the paced sender.
const MIN_SLEEP: Duration = Duration::from_micros(200);
/// Receivers of each chat sender.
const CHAT_FANOUT: u64 = 4;

/// An agent's answer to `Expect`.
struct Reached {
    unique: u64,
    complete: bool,
    min_ns: u64,
    max_ns: u64,
    last_at_ns: u64,
}

/// A server with the users logged in.
pub struct Bench {
    // Dropped first: the agents close their connections before the server is killed.
    fleet: Fleet,
    server: BenchServer,
    /// Master and task workers, for CPU time.
    pids: Vec<u32>,
    users: u64,
    /// Logged-in connections of each agent.
    online: Vec<u64>,
    /// The agents' CPU time when they were connected, summed.
    agents_cpu_secs: f64,
    pub connect: ConnectFigures,
}

/// The load generator's own CPU time (coordinator and agents) over a measured phase.
struct GenCpu {
    coordinator: f64,
}

impl GenCpu {
    fn start() -> GenCpu {
        GenCpu {
            coordinator: self_cpu_secs(),
        }
    }

    /// (coordinator, agents) seconds used since `start`, given the agents' CPU time then and
    /// now.
    fn used(&self, agents_before: f64, agents_now: f64) -> (f64, f64) {
        (
            self_cpu_secs() - self.coordinator,
            agents_now - agents_before,
        )
    }
}

impl Bench {
    pub fn http_port(&self) -> u16 {
        self.server.http
    }

    /// The client configuration for https://, when the server speaks TLS.
    pub fn http_tls(&self) -> Option<std::sync::Arc<rustls::ClientConfig>> {
        self.server.tls.as_ref().map(|(_, c)| c.clone())
    }

    /// `max_pending` handshakes under way at once in all: past the server's listen backlog a
    /// dropped SYN costs a 1 s retransmission. `store`: the server keeps every message there.
    /// `tls`: wss:// and https://.
    pub fn start(
        users: u64,
        agents: usize,
        max_pending: usize,
        store: Option<&Store>,
        tls: bool,
    ) -> Bench {
        let (storage, sections) = store.map_or_else(
            || ("backup = false".to_owned(), String::new()),
            Store::server_config,
        );
        let server = BenchServer::start_tls(
            "load",
            "heartbeat_idle_time = 3600\n",
            &storage,
            &sections,
            tls.then(BenchCert::new),
        );
        let tls_cert = server.tls.as_ref().map(|(cert, _)| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(&cert.der)
        });
        let t = Instant::now();
        server.register_tokens(1..=users as usize);
        eprintln!(
            "load: {users} tokens written in {:.2} s",
            t.elapsed().as_secs_f64()
        );
        let pids = server.pids();
        let mut fleet = Fleet::spawn(agents, users);
        eprintln!(
            "load: connecting {users} users through {} agents",
            fleet.len()
        );
        let rss_before_kib = rss_kib(&pids);
        let cpu0 = cpu_secs(&pids);
        let load_cpu = GenCpu::start();
        let per_agent_pending = (max_pending / fleet.len()).max(1);
        for i in 0..fleet.len() {
            let cmd = Command::Connect {
                ws_port: server.ws,
                // One source address per agent: each has about 28,000 ephemeral ports.
                source_ip: format!("127.0.0.{}", 2 + i),
                first_uid: fleet.agents[i].first_uid,
                last_uid: fleet.agents[i].last_uid,
                max_pending: per_agent_pending,
                timeout_ms: CONNECT_TIMEOUT_MS,
                tls_cert: tls_cert.clone(),
            };
            fleet.send(i, &cmd);
        }
        let replies = fleet.collect(Duration::from_millis(CONNECT_TIMEOUT_MS) + MARGIN);
        let cpu = cpu_secs(&pids) - cpu0;
        let rss_after_kib = rss_kib(&pids);
        let mut hist = new_hist();
        let (mut logins, mut failed, mut first, mut last) = (0, 0, u64::MAX, 0);
        let mut online = Vec::new();
        let mut agents_cpu_secs = 0.0;
        for r in replies {
            let Reply::Connected {
                ok,
                failed: f,
                first_ns,
                last_ns,
                hist: h,
                cpu_secs,
            } = r
            else {
                panic!("expected a Connected reply, got {r:?}");
            };
            logins += ok;
            failed += f;
            first = first.min(first_ns);
            last = last.max(last_ns);
            online.push(ok);
            agents_cpu_secs += cpu_secs;
            add_hist(&mut hist, &h);
        }
        let connect = ConnectFigures {
            logins,
            failed,
            agents: fleet.len(),
            secs: last.saturating_sub(first) as f64 / 1e9,
            cpu_us_per_login: cpu * 1e6 / logins.max(1) as f64,
            rss_before_kib,
            rss_after_kib,
            hist,
            gen_cpu_secs: load_cpu.used(0.0, agents_cpu_secs),
            tls,
        };
        Bench {
            fleet,
            server,
            pids,
            users,
            online,
            agents_cpu_secs,
            connect,
        }
    }

    fn cpu(&self) -> f64 {
        cpu_secs(&self.pids)
    }

    /// Messages meant for each agent when every uid `u` gets `per_uid(u)` of them.
    fn per_agent(&self, per_uid: impl Fn(u64) -> u64) -> Vec<u64> {
        let agents = &self.fleet.agents;
        agents
            .iter()
            .map(|a| (a.first_uid..=a.last_uid).map(&per_uid).sum())
            .collect()
    }

    fn agent_of(&self, uid: u64) -> usize {
        let agents = &self.fleet.agents;
        agents
            .iter()
            .position(|a| a.holds(uid))
            .expect("a uid held by no agent")
    }

    /// Waits until agent `i` has received `expected[i]` distinct messages (or its deadline).
    fn expect(&mut self, expected: &[u64]) -> Vec<Reached> {
        for (i, &total) in expected.iter().enumerate() {
            let cmd = Command::Expect {
                total,
                timeout_ms: DELIVERY_TIMEOUT_MS,
            };
            self.fleet.send(i, &cmd);
        }
        let replies = self
            .fleet
            .collect(Duration::from_millis(DELIVERY_TIMEOUT_MS) + MARGIN);
        replies
            .into_iter()
            .map(|r| match r {
                Reply::Reached {
                    unique,
                    complete,
                    min_ns,
                    max_ns,
                    last_at_ns,
                } => Reached {
                    unique,
                    complete,
                    min_ns,
                    max_ns,
                    last_at_ns,
                },
                other => panic!("expected a Reached reply, got {other:?}"),
            })
            .collect()
    }

    /// Every agent's counts and latencies, summed, and the generator's CPU time since `load_cpu`.
    fn report(&mut self, load_cpu: &GenCpu) -> (Counts, Histogram<u64>, (f64, f64)) {
        self.fleet.send_all(&Command::Report);
        let mut counts = Counts::default();
        let mut hist = new_hist();
        let mut agents_cpu = 0.0;
        for r in self.fleet.collect(MARGIN) {
            let Reply::Report {
                counts: c,
                hist: h,
                cpu_secs,
            } = r
            else {
                panic!("expected a Report reply, got {r:?}");
            };
            counts.add(&c);
            add_hist(&mut hist, &h);
            agents_cpu += cpu_secs;
        }
        (
            counts,
            hist,
            load_cpu.used(self.agents_cpu_secs, agents_cpu),
        )
    }
}

fn add_hist(into: &mut Histogram<u64>, encoded: &str) {
    let h = decode_hist(encoded).expect("an agent's histogram");
    into.add(&h).expect("add histograms");
}

fn incomplete_note(reached: &[Reached]) -> Option<String> {
    let missing: Vec<String> = reached
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.complete)
        .map(|(i, r)| format!("agent {i} had {}", r.unique))
        .collect();
    (!missing.is_empty()).then(|| format!("timeout    gave up waiting: {}", missing.join(", ")))
}

/// Logins only: the figures are in `Bench::connect`.
pub fn connect(b: &mut Bench) -> Figures {
    let (counts, hist, _) = b.report(&GenCpu::start());
    Figures {
        scenario: "connect",
        users: b.users,
        expected: 0,
        secs: 0.0,
        counts,
        hist,
        server_cpu_secs: 0.0,
        gen_cpu_secs: (0.0, 0.0),
        notes: Vec::new(),
        extra: Vec::new(),
        send_errors: 0,
    }
}

/// `msgs` UDP `to_uid` pushes round robin over the users, at most `window` in flight; paced at
/// `rate` per second when given (latency at a fixed load), else as fast as the window allows.
pub fn push(
    b: &mut Bench,
    scenario: &'static str,
    msgs: u64,
    window: usize,
    rate: Option<u64>,
) -> Figures {
    let users = b.users;
    let expected = b.per_agent(|uid| msgs / users + u64::from(uid - 1 < msgs % users));
    let mut p = Pusher::new(b.server.udp);
    eprintln!("load: {scenario}: {msgs} pushes to {users} users, window {window}");
    let cpu0 = b.cpu();
    let load_cpu = GenCpu::start();
    let first = now_ns();
    let mut max_lag_ns = 0;
    for i in 0..msgs {
        if let Some(rate) = rate {
            let due = first + (u128::from(i) * 1_000_000_000 / u128::from(rate.max(1))) as u64;
            max_lag_ns = max_lag_ns.max(wait_until(&mut p, due));
        }
        // Push i goes to uid i % users + 1, its (i / users)-th message.
        p.push_to_uid(i % users + 1, i / users, window);
    }
    let send_secs = now_ns().saturating_sub(first) as f64 / 1e9;
    p.drain();
    let reached = b.expect(&expected);
    let cpu = b.cpu() - cpu0;
    let last = reached.iter().map(|r| r.last_at_ns).max().unwrap_or(first);
    let (counts, hist, gen_cpu_secs) = b.report(&load_cpu);
    let secs = last.saturating_sub(first) as f64 / 1e9;
    let mut notes = vec![format!(
        "sender     {} pushes in {send_secs:.3} s = {:.0}/s{}; replies ok {}, refused {}, unanswered {}",
        p.sent,
        p.sent as f64 / send_secs.max(1e-9),
        rate.map_or(String::new(), |r| format!(
            " (paced at {r}/s, at most {:.0} us behind)",
            max_lag_ns as f64 / 1000.0
        )),
        p.ok,
        p.refused,
        p.unanswered
    )];
    if scenario == "seed10k" {
        notes.push(format!(
            "seed       first send to last delivery: {:.1} ms",
            secs * 1000.0
        ));
    }
    notes.extend(incomplete_note(&reached));
    let mut extra = vec![("window", window.to_string())];
    if let Some(r) = rate {
        extra.push(("target_rate", r.to_string()));
    }
    extra.push(("last_delivery_ms", format!("{:.1}", secs * 1000.0)));
    Figures {
        scenario,
        users,
        expected: expected.iter().sum(),
        secs,
        counts,
        hist,
        server_cpu_secs: cpu,
        gen_cpu_secs,
        notes,
        extra,
        send_errors: p.refused + p.unanswered,
    }
}

/// Sleeps until `due` (CLOCK_MONOTONIC ns) if it is ahead of it, taking push replies first;
/// returns how late it is. Sleeps last at least `MIN_SLEEP`, so pushes go in small bursts:
/// one wake-up per push would cost the sender more CPU than the push costs the server.
fn wait_until(p: &mut Pusher, due: u64) -> u64 {
    let now = now_ns();
    if now >= due {
        return now - due;
    }
    p.take_replies();
    let ahead = Duration::from_nanos(due - now);
    std::thread::sleep(ahead.max(MIN_SLEEP));
    now_ns().saturating_sub(due)
}

/// `rounds` broadcasts, each to every connection; the next goes once the last has arrived.
/// With `group`: every user joins one group first, and each round is a push to that group.
pub fn broadcast(b: &mut Bench, rounds: u64, group: bool) -> Figures {
    let online = b.online.clone();
    let conns: u64 = online.iter().sum();
    let mut p = Pusher::new(b.server.udp);
    let scenario = if group { "group" } else { "broadcast" };
    if group {
        let t = Instant::now();
        p.join_group("everyone", 1..=b.users);
        eprintln!(
            "load: group: {} uids joined in {:.0} ms",
            b.users,
            t.elapsed().as_secs_f64() * 1000.0
        );
    }
    eprintln!("load: {scenario}: {rounds} rounds to {conns} connections");
    let cpu0 = b.cpu();
    let load_cpu = GenCpu::start();
    let (mut firsts, mut lasts) = (Vec::new(), Vec::new());
    let mut reached = Vec::new();
    for round in 0..rounds {
        if group {
            p.push_to_group("everyone", round, 1);
        } else {
            p.broadcast(round, 1);
        }
        p.drain();
        let expected: Vec<u64> = online.iter().map(|n| n * (round + 1)).collect();
        reached = b.expect(&expected);
        let got = reached.iter().filter(|r| r.max_ns > 0);
        firsts.push(got.clone().map(|r| r.min_ns).min().unwrap_or(0));
        lasts.push(got.map(|r| r.max_ns).max().unwrap_or(0));
        if reached.iter().any(|r| !r.complete) {
            break;
        }
    }
    let cpu = b.cpu() - cpu0;
    let (counts, hist, gen_cpu_secs) = b.report(&load_cpu);
    let us = |ns: u64| ns as f64 / 1000.0;
    let p50 = |v: &[u64]| {
        let mut s = v.to_vec();
        s.sort_unstable();
        s.get(s.len().saturating_sub(1) / 2).copied().unwrap_or(0)
    };
    let max = |v: &[u64]| v.iter().copied().max().unwrap_or(0);
    let mut notes = vec![format!(
        "rounds     {} of {rounds} to {conns} connections: first recipient p50 {:.0} us, max {:.0} us; \
         last recipient p50 {:.0} us, max {:.0} us",
        lasts.len(),
        us(p50(&firsts)),
        us(max(&firsts)),
        us(p50(&lasts)),
        us(max(&lasts))
    )];
    notes.extend(incomplete_note(&reached));
    let extra = vec![
        ("rounds", rounds.to_string()),
        ("first_p50_us", format!("{:.0}", us(p50(&firsts)))),
        ("first_max_us", format!("{:.0}", us(max(&firsts)))),
        ("last_p50_us", format!("{:.0}", us(p50(&lasts)))),
        ("last_max_us", format!("{:.0}", us(max(&lasts)))),
    ];
    Figures {
        scenario,
        users: b.users,
        expected: conns * rounds,
        // Fan-out rate: deliveries over the time the rounds took to reach everyone.
        secs: lasts.iter().sum::<u64>() as f64 / 1e9,
        counts,
        hist,
        server_cpu_secs: cpu,
        gen_cpu_secs,
        notes,
        extra,
        send_errors: p.refused + p.unanswered,
    }
}

/// `senders` users each send `messages / senders` chat frames round robin over a few receivers
/// spread over the uid range (so over every agent), with at most `window` un-acked.
pub fn chat(b: &mut Bench, senders: u64, messages: u64, window: u32) -> Figures {
    let users = b.users;
    assert!(users >= 2, "chat needs at least 2 users");
    let senders = senders.clamp(1, users);
    let per_sender = (messages / senders).max(1);
    let fanout = CHAT_FANOUT.min(users - 1);
    let mut expected = vec![0; b.fleet.len()];
    let mut plans: Vec<Vec<(u64, Vec<u64>)>> = vec![Vec::new(); b.fleet.len()];
    for j in 0..senders {
        let s = 1 + j * users / senders;
        // Offsets k * users / (fanout + 1) are distinct and never 0 mod users: no self-chat.
        let receivers: Vec<u64> = (1..=fanout)
            .map(|k| 1 + (s - 1 + k * (users / (fanout + 1))) % users)
            .collect();
        for (k, &r) in receivers.iter().enumerate() {
            expected[b.agent_of(r)] +=
                per_sender / fanout + u64::from((k as u64) < per_sender % fanout);
        }
        plans[b.agent_of(s)].push((s, receivers));
    }
    eprintln!(
        "load: chat: {senders} senders x {per_sender} frames to {fanout} receivers each, window {window}"
    );
    let cpu0 = b.cpu();
    let load_cpu = GenCpu::start();
    let first = now_ns();
    for (i, senders) in plans.into_iter().enumerate() {
        let cmd = Command::Chat {
            window,
            messages: per_sender,
            senders,
            timeout_ms: CHAT_TIMEOUT_MS,
        };
        b.fleet.send(i, &cmd);
    }
    let (mut sent, mut acked) = (0, 0);
    for r in b
        .fleet
        .collect(Duration::from_millis(CHAT_TIMEOUT_MS) + MARGIN)
    {
        let Reply::ChatDone {
            sent: s, acked: a, ..
        } = r
        else {
            panic!("expected a ChatDone reply, got {r:?}");
        };
        sent += s;
        acked += a;
    }
    let reached = b.expect(&expected);
    let cpu = b.cpu() - cpu0;
    let last = reached.iter().map(|r| r.last_at_ns).max().unwrap_or(first);
    let (counts, hist, gen_cpu_secs) = b.report(&load_cpu);
    let total = senders * per_sender;
    let mut notes = vec![format!(
        "senders    {senders} x {per_sender} frames to {fanout} receivers each, window {window}: sent {sent}, acked {acked}"
    )];
    notes.extend(incomplete_note(&reached));
    Figures {
        scenario: "chat",
        users,
        expected: expected.iter().sum(),
        secs: last.saturating_sub(first) as f64 / 1e9,
        counts,
        hist,
        server_cpu_secs: cpu,
        gen_cpu_secs,
        notes,
        extra: vec![
            ("senders", senders.to_string()),
            ("window", window.to_string()),
        ],
        // Frames never sent or never acked.
        send_errors: (total - sent.min(total)) + (sent - acked.min(sent)),
    }
}

/// `push` with every message kept (`backup = true`): rows per second into the store, from the
/// first push until the last row is there, beside the delivery figures.
pub fn store(b: &mut Bench, store: &Store, msgs: u64, window: usize) -> Figures {
    let dir = b.server.dir.clone();
    let before = store.max_id(&dir);
    let first = now_ns();
    let mut figures = push(b, "store", msgs, window, None);
    let deadline = Instant::now() + Duration::from_millis(DELIVERY_TIMEOUT_MS);
    let rows = loop {
        let rows = store.rows_after(&dir, before).unwrap_or(0);
        if rows >= msgs || Instant::now() >= deadline {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let secs = now_ns().saturating_sub(first) as f64 / 1e9;
    figures.notes.push(format!(
        "store      {rows} of {msgs} rows kept in {} in {secs:.3} s = {:.0} rows/s (first push to last row)",
        store.name(),
        rows as f64 / secs.max(1e-9)
    ));
    figures
        .extra
        .push(("rows_per_s", format!("{:.0}", rows as f64 / secs.max(1e-9))));
    figures.extra.push(("rows", rows.to_string()));
    // A row not kept fails the run like a message not delivered.
    figures.send_errors += msgs.saturating_sub(rows);
    figures
}
