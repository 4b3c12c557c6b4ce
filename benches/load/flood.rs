//! The `flood` scenario, memory under a push backlog: UDP pushes of `--size` bytes to ONE
//! client that has stopped reading, every message kept (`backup = true`); the server's RSS is
//! sampled before, at its peak and after. The client then reads, closes and logs in again for
//! what was kept: every accepted push must arrive once, in order, and no refused one; a
//! bystander gets every accepted push of its own meanwhile. Memory is printed, not judged.

use crate::common::{cpu_secs, rss_kib, BenchServer, SECRET};
use crate::control::now_ns;
use crate::store::Store;
use mio::net::UdpSocket as MioUdp;
use mio::{Events, Interest, Poll, Token};
use serde_json::Value;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

const FLOODED: u64 = 1;
const BYSTANDER: u64 = 2;
/// Replies come within milliseconds on loopback; a push the kernel dropped (the server's UDP
/// receive buffer full: a window of 256 x 60 KB is more than it holds) gets none.
const REPLY_TIMEOUT: Duration = Duration::from_secs(1);
/// Reading stops once nothing has come for this long.
const SILENCE: Duration = Duration::from_secs(1);
const BYSTANDER_EVERY: Duration = Duration::from_millis(10);
const SAMPLE_EVERY: Duration = Duration::from_millis(20);
const SETTLE: Duration = Duration::from_secs(2);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);
/// What the issue asks of the server (printed beside the figures, not enforced).
const GROWTH_LIMIT: f64 = 64.0;
const RETAINED_LIMIT: f64 = 48.0;

pub struct Options {
    pub users: u64,
    pub messages: u64,
    pub size: usize,
    pub window: usize,
}

/// What became of one push.
enum Outcome {
    /// Code 0: its message id and `delivered`.
    Accepted(String, u64),
    Busy,
    Failed(String),
    /// No reply within `REPLY_TIMEOUT` (or not sent yet).
    Unanswered,
}

/// Message ids are strings in frames and replies; any other form is compared as JSON.
fn id_of(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

fn outcome(reply: &[u8]) -> Outcome {
    let r: Value = serde_json::from_slice(reply).unwrap_or_default();
    match r["code"].as_i64() {
        Some(0) => Outcome::Accepted(id_of(&r["id"]), r["delivered"].as_u64().unwrap_or(0)),
        Some(503) => Outcome::Busy,
        _ => Outcome::Failed(String::from_utf8_lossy(reply).into_owned()),
    }
}

/// A `to_uid` push carrying `seq`, its send time and `filler`.
fn datagram(uid: u64, seq: u64, filler: &str) -> String {
    format!(
        "{{\"sk\":\"{SECRET}\",\"means\":\"to_uid\",\"data\":{{\"to_uid\":\"{uid}\",\"type\":\"chat\",\
         \"uid\":\"0\",\"content\":{{\"type\":\"text\",\"seq\":{seq},\"t\":{},\"value\":\"{filler}\"}}}}}}",
        now_ns()
    )
}

/// The flood: one UDP socket per window slot, so that each reply names its push whatever
/// order replies come in. Returns each push's outcome, the bytes sent and when the last reply
/// came.
fn flood(target: SocketAddr, o: &Options) -> (Vec<Outcome>, u64, Instant) {
    let mut poll = Poll::new().expect("a mio poll");
    let open = |poll: &Poll, i: usize| {
        let mut s = MioUdp::bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind a UDP socket");
        s.connect(target).expect("connect a UDP socket");
        let r = poll.registry();
        r.register(&mut s, Token(i), Interest::READABLE)
            .expect("register a UDP socket");
        s
    };
    let window = o.window.clamp(1, o.messages.max(1) as usize);
    let mut slots: Vec<(MioUdp, Option<(u64, Instant)>)> =
        (0..window).map(|i| (open(&poll, i), None)).collect();
    let mut free: Vec<usize> = (0..window).rev().collect();
    let mut outcomes: Vec<Outcome> = (0..o.messages).map(|_| Outcome::Unanswered).collect();
    let filler = "x".repeat(o.size);
    let (mut next, mut in_flight, mut bytes) = (0u64, 0usize, 0u64);
    let mut events = Events::with_capacity(window);
    let (mut reply, mut last_reply) = ([0u8; 2048], Instant::now());
    while next < o.messages || in_flight > 0 {
        while next < o.messages {
            let Some(i) = free.pop() else { break };
            let buf = datagram(FLOODED, next, &filler);
            slots[i].0.send(buf.as_bytes()).expect("send a flood push");
            bytes += buf.len() as u64;
            slots[i].1 = Some((next, Instant::now()));
            (next, in_flight) = (next + 1, in_flight + 1);
        }
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .expect("poll the flood sockets");
        for ev in events.iter() {
            let i = ev.token().0;
            loop {
                match slots[i].0.recv(&mut reply) {
                    Ok(n) => {
                        // A slot has one push in flight at most: a second reply is ignored.
                        let Some((seq, _)) = slots[i].1.take() else {
                            continue;
                        };
                        outcomes[seq as usize] = outcome(&reply[..n]);
                        (last_reply, in_flight) = (Instant::now(), in_flight - 1);
                        free.push(i);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("read a flood reply: {e}"),
                }
            }
        }
        // A slot whose reply is overdue gets a new socket: a late reply must not be taken for
        // the next push's.
        for (i, slot) in slots.iter_mut().enumerate() {
            if let Some((seq, at)) = slot.1 {
                if at.elapsed() > REPLY_TIMEOUT {
                    outcomes[seq as usize] = Outcome::Unanswered;
                    let _ = poll.registry().deregister(&mut slot.0);
                    *slot = (open(&poll, i), None);
                    free.push(i);
                    in_flight -= 1;
                }
            }
        }
    }
    (outcomes, bytes, last_reply)
}

/// Logs `uid` in and reads its login frame.
fn login(ws_port: u16, uid: u64) -> Ws {
    let token = wspush::protocol::encode_access_token(&format!("t{uid}"), uid, "app");
    let url = format!("ws://127.0.0.1:{ws_port}/?access_token={token}");
    let (mut ws, _) = tungstenite::connect(&url).expect("a WebSocket handshake");
    let MaybeTlsStream::Plain(tcp) = ws.get_ref() else {
        panic!("a plain TCP stream")
    };
    let tcp = tcp.try_clone().expect("a handle on the TCP stream");
    let timeout = |d: u64| tcp.set_read_timeout(Some(Duration::from_millis(d)));
    timeout(5_000).expect("a read timeout");
    let first = loop {
        if let Message::Text(t) = ws.read().expect("a login frame") {
            break t;
        }
    };
    let f: Value = serde_json::from_str(first.as_str()).unwrap_or_default();
    assert!(
        f["type"] == "login" && f["code"] == 200,
        "uid {uid}: the first frame is not a successful login: {first}"
    );
    timeout(200).expect("a read timeout");
    ws
}

/// What one connection received: (seq, id, state) of each message, their latencies, frames
/// that were not messages, and how it ended.
#[derive(Default)]
struct Received {
    msgs: Vec<(u64, String, Option<u64>)>,
    latencies_ns: Vec<u64>,
    bad: u64,
    ended: String,
}

/// Reads until nothing has come for `SILENCE` (once `stop` is set, if given), then closes
/// cleanly and reads on until the close is answered, unless the server closed first.
fn read_all(mut ws: Ws, stop: Option<&AtomicBool>) -> Received {
    let (mut got, mut last, mut closing) = (Received::default(), Instant::now(), false);
    loop {
        let end = match ws.read() {
            Ok(Message::Text(t)) => {
                let (now, f) = (now_ns(), serde_json::from_str(t.as_str()));
                let f: Value = f.unwrap_or_default();
                last = Instant::now();
                if let Some(seq) = f["content"]["seq"].as_u64() {
                    let sent = f["content"]["t"].as_u64().unwrap_or(now);
                    got.latencies_ns.push(now.saturating_sub(sent));
                    got.msgs.push((seq, id_of(&f["id"]), f["state"].as_u64()));
                } else {
                    got.bad += 1;
                    eprintln!("load: flood: not a pushed message: {:.200}", t.as_str());
                }
                None
            }
            Ok(Message::Close(f)) => Some(f.map_or("1005".into(), |f| f.code.to_string())),
            Ok(_) => None,
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                let stopped = stop.is_none_or(|s| s.load(Ordering::Relaxed));
                let silent = stopped && last.elapsed() >= SILENCE;
                let end = (silent && closing).then(|| "no answer".into());
                if silent && !closing {
                    let _ = ws.close(None);
                    (closing, last) = (true, Instant::now());
                }
                end
            }
            Err(e) => Some(format!("{e}")),
        };
        if let Some(how) = end {
            let by = if closing { "the client" } else { "the server" };
            got.ended = format!("closed by {by} ({how})");
            return got;
        }
    }
}

/// The bystander's sender: a push to `BYSTANDER` every 10 ms, each reply awaited, until `stop`.
fn bystander_pushes(target: SocketAddr, stop: Arc<AtomicBool>) -> JoinHandle<Vec<Outcome>> {
    std::thread::spawn(move || {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
        sock.connect(target).expect("connect a UDP socket");
        sock.set_read_timeout(Some(REPLY_TIMEOUT))
            .expect("a UDP read timeout");
        let (mut outcomes, mut reply) = (Vec::new(), [0u8; 2048]);
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let buf = datagram(BYSTANDER, outcomes.len() as u64, "small");
            sock.send(buf.as_bytes()).expect("send a bystander push");
            outcomes.push(match sock.recv(&mut reply) {
                Ok(n) => outcome(&reply[..n]),
                Err(_) => Outcome::Unanswered,
            });
            std::thread::sleep(BYSTANDER_EVERY.saturating_sub(started.elapsed()));
        }
        outcomes
    })
}

/// Server RSS every 20 ms until `stop`: the peak (KiB) and when, in seconds after `t0`.
fn sampler(pids: Vec<u32>, t0: Instant, stop: Arc<AtomicBool>) -> JoinHandle<(u64, f64)> {
    std::thread::spawn(move || {
        let (mut peak, mut at) = (0, 0.0);
        while !stop.load(Ordering::Relaxed) {
            let kib = rss_kib(&pids);
            if kib > peak {
                (peak, at) = (kib, t0.elapsed().as_secs_f64());
            }
            std::thread::sleep(SAMPLE_EVERY);
        }
        (peak, at)
    })
}

/// What became of one sender's pushes, over the connections of their recipient.
#[derive(Default)]
struct Judged {
    accepted: u64,
    /// Accepted with `delivered` above 0.
    at_once: u64,
    busy: u64,
    failed: u64,
    unanswered: u64,
    /// Accepted and received on no connection.
    lost: u64,
    dup: u64,
    /// Received though not accepted, or under another id than the reply gave.
    wrong: u64,
    reordered: u64,
}

impl Judged {
    fn errors(&self) -> u64 {
        let j = self;
        j.failed + j.unanswered + j.lost + j.dup + j.wrong + j.reordered
    }

    /// The table's words and the RESULT line's `key=value` pairs (keys prefixed with `p`).
    fn figures(&self, p: &str) -> (String, String) {
        let j = self;
        let all = [
            ("accepted", "accepted", j.accepted),
            ("refused 503", "refused_busy", j.busy),
            ("other replies", "other_replies", j.failed),
            ("unanswered", "unanswered", j.unanswered),
            ("lost", "lost", j.lost),
            ("duplicated", "dup", j.dup),
            ("reordered", "reordered", j.reordered),
            ("wrong (not accepted, or another id)", "wrong", j.wrong),
        ];
        let table = all.map(|(label, _, v)| format!("{label} {v}")).join(", ");
        (table, all.map(|(_, k, v)| format!("{p}{k}={v}")).join(" "))
    }
}

/// Accepted ones must be received exactly once under their id, others never, each connection
/// in increasing order.
fn judge(outcomes: &[Outcome], conns: &[&Received]) -> Judged {
    let mut j = Judged::default();
    let mut seen = vec![0u64; outcomes.len()];
    for c in conns {
        let mut prev = None;
        for (seq, id, _) in &c.msgs {
            j.reordered += u64::from(prev.is_some_and(|p| p >= *seq));
            prev = Some(*seq);
            match outcomes.get(*seq as usize) {
                Some(Outcome::Accepted(want, _)) if want == id => seen[*seq as usize] += 1,
                _ => j.wrong += 1,
            }
        }
    }
    for (o, n) in outcomes.iter().zip(seen) {
        match o {
            Outcome::Accepted(_, delivered) => {
                j.accepted += 1;
                j.at_once += u64::from(*delivered > 0);
                j.lost += u64::from(n == 0);
                j.dup += n.saturating_sub(1);
            }
            Outcome::Busy => j.busy += 1,
            Outcome::Failed(r) => {
                j.failed += 1;
                if j.failed <= 3 {
                    eprintln!("load: flood: a push answered neither ok nor 503: {r}");
                }
            }
            Outcome::Unanswered => j.unanswered += 1,
        }
    }
    j
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Runs the scenario and prints its figures; true when nothing accepted was lost, duplicated
/// or reordered, every push had an ok or 503 reply and the bystander lost nothing accepted.
pub fn run(store: &Store, o: &Options) -> bool {
    assert!(o.users >= 2, "flood needs at least 2 users");
    let (storage, sections) = store.server_config();
    let server =
        BenchServer::start_with("flood", "heartbeat_idle_time = 3600\n", &storage, &sections);
    server.register_tokens(1..=o.users as usize);
    let (pids, target) = (
        server.pids(),
        SocketAddr::from(([127, 0, 0, 1], server.udp)),
    );
    let (flooded, bystander) = (login(server.ws, FLOODED), login(server.ws, BYSTANDER));
    let (n, size, window, store_name) = (o.messages, o.size, o.window, store.name());
    eprintln!("load: flood: {n} x {size} bytes to uid {FLOODED}, not reading; window {window}");
    let (stop_sampler, stop_pushes) = (Arc::new(AtomicBool::new(false)), Arc::default());
    let t0 = Instant::now();
    let (rss_before, cpu0) = (rss_kib(&pids), cpu_secs(&pids));
    let samples = sampler(pids.clone(), t0, Arc::clone(&stop_sampler));
    let reader_stop = Arc::clone(&stop_pushes);
    let reader = std::thread::spawn(move || read_all(bystander, Some(&reader_stop)));
    let by_pushes = bystander_pushes(target, Arc::clone(&stop_pushes));

    let (outcomes, bytes, last_reply) = flood(target, o);
    let (done_secs, last_secs) = (t0.elapsed().as_secs_f64(), (last_reply - t0).as_secs_f64());
    let first = read_all(flooded, None);
    let again = read_all(login(server.ws, FLOODED), None);
    stop_pushes.store(true, Ordering::Relaxed);
    let by_outcomes = by_pushes.join().expect("the bystander's sender");
    let by_got = reader.join().expect("the bystander's reader");

    let t_drain = Instant::now();
    let drained = |s: &Value| s["store_backlog_bytes"] == 0 && s["store_retry_queue"] == 0;
    let stats = loop {
        let stats = server.stats().unwrap_or_default();
        if drained(&stats) || t_drain.elapsed() > DRAIN_TIMEOUT {
            break stats;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (drain_secs, cpu) = (t_drain.elapsed().as_secs_f64(), cpu_secs(&pids) - cpu0);
    std::thread::sleep(SETTLE);
    let rss_after = rss_kib(&pids);
    stop_sampler.store(true, Ordering::Relaxed);
    let (peak, peak_at) = samples.join().expect("the RSS sampler");

    let f = judge(&outcomes, &[&first, &again]);
    let b = judge(&by_outcomes, &[&by_got]);
    let at_once = f.at_once;
    let not_state0 = again.msgs.iter().filter(|m| m.2 != Some(0)).count();
    let by_max = by_got.latencies_ns.iter().max().copied().unwrap_or(0) as f64 / 1e6;
    let (before, after) = (mib(rss_before), mib(rss_after));
    let peak = mib(peak.max(rss_before).max(rss_after));
    let (growth, retained) = (peak - before, after - before);
    let verdict = |v: f64, limit: f64| if v < limit { "within" } else { "OVER" };
    let (grown, kept) = (
        verdict(growth, GROWTH_LIMIT),
        verdict(retained, RETAINED_LIMIT),
    );
    let (bad, mib_pushed) = (first.bad + again.bad + by_got.bad, mib(bytes / 1024));
    let (n1, n2, by_sent) = (first.msgs.len(), again.msgs.len(), by_outcomes.len());
    let (end1, end2, slow) = (&first.ended, &again.ended, &stats["slow_consumers"]);
    let ((ft, fr), (bt, br)) = (f.figures(""), b.figures("bystander_"));

    let users = o.users;
    println!(
        "\n== flood: {n} pushes of {size} bytes to one client that stopped reading, window \
         {window}, {store_name}\n  \
         pushes     {n} = {mib_pushed:.1} MiB, the last reply {last_secs:.3} s after the first \
         push (over at {done_secs:.3} s), {at_once} delivered at once\n  \
         flooded    {ft}\n  \
         memory     server RSS before {before:.1} MiB, peak {peak:.1} MiB ({peak_at:.2} s in), \
         after {after:.1} MiB\n  \
         memory     growth {growth:.1} MiB ({grown} the {GROWTH_LIMIT} MiB asked), retained \
         {retained:.1} MiB ({kept} the {RETAINED_LIMIT} MiB asked)\n  \
         reader     first connection {n1} messages, {end1}; next login {n2} kept ({not_state0} \
         not state 0), {end2}; bad frames {bad}\n  \
         bystander  {by_sent} pushes, {bt}; latency max {by_max:.2} ms\n  \
         server     {cpu:.2} s CPU from the flood until the store had drained ({drain_secs:.2} \
         s after the reading); slow consumers cut off {slow}\n\
         RESULT scenario=flood users={users} msgs={n} size={size} window={window} \
         mib_pushed={mib_pushed:.1} last_reply_secs={last_secs:.3} {fr} \
         rss_before_mib={before:.1} rss_peak_mib={peak:.1} rss_after_mib={after:.1} \
         growth_mib={growth:.1} retained_mib={retained:.1} first_conn={n1} kept={n2} bad={bad} \
         bystander_sent={by_sent} {br} bystander_max_ms={by_max:.2} drain_secs={drain_secs:.2} \
         cpu_secs={cpu:.2}"
    );
    f.errors() + b.errors() + bad == 0
}
