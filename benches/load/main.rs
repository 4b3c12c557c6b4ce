//! The load generator: many thousands of real WebSocket clients against the release binary,
//! spread over agent processes (copies of this executable, each with its own loopback source
//! address and a single-threaded mio loop), driven by a coordinator that also sends the UDP
//! pushes. Every scenario checks that nothing was lost, duplicated or reordered (per sender and
//! receiver), prints a table and a `RESULT key=value ...` line, and exits non-zero otherwise.
//! Latency runs from the sender's CLOCK_MONOTONIC stamp in the message to the receiving
//! client's read; the server's CPU time (master and task workers) comes from /proc. The load
//! generator's own CPU time is printed too: on a small machine it shares the cores.
//!
//! Run (`cargo bench` builds the server's release binary first):
//!
//! ```sh
//! cargo bench --bench load -- connect --users 19000     # logins/s, CPU per login, RSS per connection
//! cargo bench --bench load -- push --users 1000          # 200,000 UDP to_uid pushes, 256 in flight
//! cargo bench --bench load -- push --rate 20000          # paced: latency at a fixed rate (also `latency`)
//! cargo bench --bench load -- chat --users 1000 --senders 200   # WebSocket to WebSocket, window 8
//! cargo bench --bench load -- broadcast --users 19000    # 10 rounds, time to first and last recipient
//! cargo bench --bench load -- group --users 10000        # the same through a group of 10,000
//! cargo bench --bench load -- seed10k --users 10000      # one push per user: first send to last delivery
//! cargo bench --bench load -- store                       # push with every message kept: rows/s
//! cargo bench --bench load -- flood                       # 2,580 x 60 KB to one client not reading: RSS
//! WSPUSH_BENCH_MYSQL=mysql://root@127.0.0.1:3306/test cargo bench --bench load -- store   # into MariaDB
//! ```
//!
//! Options: `--users N`, `--messages N`, `--window N`, `--agents N` (default: at most 9,500
//! connections each, at least 2), `--rate N` (pushes per second), `--rounds N`, `--senders N`,
//! `--max-pending N` (handshakes under way at once, all agents together), `--keep` (every
//! message kept, as on the default configuration; otherwise only undelivered ones), `--tls`
//! (wss:// and https:// with a throwaway certificate; UDP pushes stay as they are),
//! `--dashboard` (an admin dashboard open throughout: its once-a-second poll, for its cost).

use clap::{Parser, ValueEnum};

mod agent;
mod chat;
mod client;
#[path = "../common/mod.rs"]
mod common;
mod control;
mod dashboard;
mod fleet;
mod flood;
mod link;
mod pusher;
mod report;
mod scenarios;
mod store;
mod tally;

/// Connections one agent holds at most by default (one process may open 20,000 files).
const CONNS_PER_AGENT: u64 = 9_500;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Connect,
    Push,
    /// `push` paced at `--rate` (default 10,000/s).
    Latency,
    Chat,
    Broadcast,
    #[value(name = "seed10k")]
    Seed10k,
    /// Every user joins one group, then `--rounds` pushes to it (as `broadcast`, default
    /// 10,000 users): time to the first and last member.
    Group,
    /// `push` with every message kept: rows per second into MariaDB (`WSPUSH_BENCH_MYSQL`)
    /// or the embedded store.
    Store,
    /// `--messages` pushes (default 2,580) of `--size` bytes to one client that has stopped
    /// reading, every message kept: the server's RSS before, at its peak and after.
    Flood,
}

#[derive(Parser)]
#[command(about = "wspush load generator")]
struct Args {
    #[arg(value_enum)]
    scenario: Scenario,
    /// Users logged in (default: connect 19,000, broadcast 19,000, seed10k 10,000, flood 2,
    /// else 1,000).
    #[arg(long)]
    users: Option<u64>,
    /// Messages sent (default: push 200,000, chat 100,000, latency rate x 10 s).
    #[arg(long)]
    messages: Option<u64>,
    /// Messages in flight (default: push 256, seed10k 1,000, chat 8 un-acked per sender).
    #[arg(long)]
    window: Option<usize>,
    /// Agent processes (default: enough for at most 9,500 connections each, at least 2).
    #[arg(long)]
    agents: Option<usize>,
    /// Pushes per second, paced (push and latency).
    #[arg(long)]
    rate: Option<u64>,
    /// Broadcast rounds.
    #[arg(long, default_value_t = 10)]
    rounds: u64,
    /// Chat senders.
    #[arg(long, default_value_t = 200)]
    senders: u64,
    /// Handshakes under way at once, over all agents. More (512) gave no more logins per
    /// second here, only a later p99: the two cores are the limit, not the backlog.
    #[arg(long, default_value_t = 128)]
    max_pending: usize,
    /// Keep every message as the default configuration does (`backup = true`, the embedded
    /// store, or MariaDB with `WSPUSH_BENCH_MYSQL`), instead of keeping only undelivered ones.
    /// The `store` scenario always does.
    #[arg(long)]
    keep: bool,
    /// wss:// and https://: the server gets a throwaway self-signed certificate, the agents
    /// connect through TLS (a full handshake each) and the coordinator's HTTP calls use it.
    /// UDP pushes are unchanged. Not for `flood`.
    #[arg(long)]
    tls: bool,
    /// An admin dashboard open during the run: `/api/admin/history` polled once a second, as
    /// the page does (the server's CPU with and without it is the dashboard's cost).
    #[arg(long)]
    dashboard: bool,
    /// Content bytes of each flood push.
    #[arg(long, default_value_t = 60_000)]
    size: usize,
    /// Added by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    if let Ok(index) = std::env::var(control::AGENT_ENV) {
        agent::run(index.parse().expect("agent index"));
        return;
    }
    let args = Args::parse();
    if args.scenario == Scenario::Flood {
        assert!(!args.tls, "flood has no TLS mode");
        let options = flood::Options {
            users: args.users.unwrap_or(2),
            messages: args.messages.unwrap_or(2_580),
            size: args.size,
            // 48 x 60 KB in flight fits the server's 4 MiB UDP receive buffer; more and the
            // kernel drops datagrams before the server sees them.
            window: args.window.unwrap_or(48),
        };
        if !flood::run(&store::Store::from_env(), &options) {
            eprintln!("load: FAILED: something accepted was lost, duplicated or reordered, or a push had no ok or 503 reply");
            std::process::exit(1);
        }
        return;
    }
    let users = args.users.unwrap_or(match args.scenario {
        Scenario::Connect | Scenario::Broadcast => 19_000,
        Scenario::Group => 10_000,
        Scenario::Seed10k => 10_000,
        _ => 1_000,
    });
    assert!(users >= 1, "--users must be at least 1");
    let agents = args
        .agents
        .unwrap_or_else(|| users.div_ceil(CONNS_PER_AGENT).max(2) as usize);
    let store = (args.scenario == Scenario::Store || args.keep).then(store::Store::from_env);
    let mut bench = scenarios::Bench::start(
        users,
        agents,
        args.max_pending.max(1),
        store.as_ref(),
        args.tls,
    );
    let dashboard = args
        .dashboard
        .then(|| dashboard::Dashboard::open(bench.http_port(), bench.http_tls()));
    let figures = match args.scenario {
        Scenario::Connect => scenarios::connect(&mut bench),
        Scenario::Push | Scenario::Latency => {
            let rate = match args.scenario {
                Scenario::Latency => Some(args.rate.unwrap_or(10_000)),
                _ => args.rate,
            };
            let messages = args
                .messages
                .unwrap_or_else(|| rate.map_or(200_000, |r| (r * 10).max(1_000)));
            let name = if rate.is_some() { "latency" } else { "push" };
            scenarios::push(&mut bench, name, messages, args.window.unwrap_or(256), rate)
        }
        Scenario::Seed10k => {
            let messages = args.messages.unwrap_or(users);
            let window = args.window.unwrap_or(1_000);
            scenarios::push(&mut bench, "seed10k", messages, window, None)
        }
        Scenario::Chat => scenarios::chat(
            &mut bench,
            args.senders,
            args.messages.unwrap_or(100_000),
            args.window.unwrap_or(8) as u32,
        ),
        Scenario::Broadcast => scenarios::broadcast(&mut bench, args.rounds, false),
        Scenario::Group => scenarios::broadcast(&mut bench, args.rounds, true),
        Scenario::Store => scenarios::store(
            &mut bench,
            store.as_ref().expect("a store for the store scenario"),
            args.messages.unwrap_or(200_000),
            args.window.unwrap_or(256),
        ),
        Scenario::Flood => unreachable!("flood runs on its own, above"),
    };
    if let Some(d) = dashboard {
        eprintln!(
            "load: dashboard open throughout: {} polls answered",
            d.close()
        );
    }
    let pass = report::print(&bench.connect, &figures);
    // Agents and server go before the exit code is set: exit() would skip their destructors.
    drop(bench);
    if !pass {
        eprintln!("load: FAILED: something was lost, duplicated, reordered or refused");
        std::process::exit(1);
    }
}
