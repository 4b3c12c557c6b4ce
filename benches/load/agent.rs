//! An agent process: holds a share of the users' connections on one single-threaded mio loop,
//! from its own loopback source address, does what the coordinator's commands (stdin) say and
//! answers on stdout. Everything it measures is counted in its `Tally`.

use crate::chat::{ChatSender, Chatting};
use crate::client::{Client, Status};
use crate::control::{encode_hist, new_hist, now_ns, self_cpu_secs, Command, Reply};
use crate::tally::Tally;
use hdrhistogram::Histogram;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use rustls::ClientConfig;
use serde::Deserialize;
use std::io::{ErrorKind, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;
use tungstenite::Utf8Bytes;

const STDIN: Token = Token(usize::MAX);
/// The loop wakes at least this often to check deadlines.
const TICK: Duration = Duration::from_millis(20);
/// Errors of one kind printed to stderr; the rest are only counted.
const MAX_LOGGED: u32 = 5;
/// Kinds of logged errors.
const LOG_CONNECT: usize = 0;
const LOG_CLOSED: usize = 1;
const LOG_FRAME: usize = 2;

/// The fields of a received frame the bench looks at; the rest is skipped unparsed.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<&'a str>,
    #[serde(borrow, default)]
    uid: Option<&'a str>,
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    content: Option<Content>,
}

/// What the bench puts in every message it sends.
#[derive(Deserialize)]
struct Content {
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    t: Option<u64>,
}

/// A `Connect` command under way.
struct Connecting {
    next_uid: u64,
    last_uid: u64,
    pending: usize,
    max_pending: usize,
    source: Ipv4Addr,
    server: SocketAddrV4,
    ok: u64,
    failed: u64,
    first_ns: u64,
    last_ns: u64,
    deadline_ns: u64,
    hist: Histogram<u64>,
    /// wss://: one configuration for every client of this agent.
    tls: Option<Arc<ClientConfig>>,
}

struct Expecting {
    total: u64,
    deadline_ns: u64,
}

struct Agent {
    index: usize,
    poll: Poll,
    first_uid: u64,
    /// Indexed by uid - first_uid, which is also the mio token.
    clients: Vec<Option<Client>>,
    tally: Tally,
    connecting: Option<Connecting>,
    chatting: Option<Chatting>,
    expecting: Option<Expecting>,
    stdin_buf: Vec<u8>,
    /// Text frames of one readiness event; reused.
    texts: Vec<Utf8Bytes>,
    /// Errors printed so far, per kind.
    logged: [u32; 3],
    quit: bool,
}

/// Runs agent `index` until the coordinator says quit or goes away.
pub fn run(index: usize) {
    // Each connection is a file: take the whole hard limit.
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
    let stdin = std::io::stdin();
    fcntl(&stdin, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).expect("non-blocking stdin");
    let poll = Poll::new().expect("poll");
    poll.registry()
        .register(&mut SourceFd(&0), STDIN, Interest::READABLE)
        .expect("register stdin");
    let mut agent = Agent {
        index,
        poll,
        first_uid: 0,
        clients: Vec::new(),
        tally: Tally::new(),
        connecting: None,
        chatting: None,
        expecting: None,
        stdin_buf: Vec::new(),
        texts: Vec::new(),
        logged: [0; 3],
        quit: false,
    };
    let mut events = Events::with_capacity(4096);
    while !agent.quit {
        if let Err(e) = agent.poll.poll(&mut events, Some(TICK)) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            panic!("agent {index}: poll: {e}");
        }
        for ev in events.iter() {
            match ev.token() {
                STDIN => agent.read_commands(),
                Token(i) => agent.on_client(i),
            }
        }
        agent.check_deadlines(now_ns());
    }
}

fn reply(r: &Reply) {
    let mut line = serde_json::to_string(r).expect("encode a reply");
    line.push('\n');
    let mut out = std::io::stdout().lock();
    if out
        .write_all(line.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        // The coordinator is gone: nobody to measure for.
        std::process::exit(1);
    }
}

/// Prints the first few errors of each kind.
fn log(logged: &mut [u32; 3], agent: usize, kind: usize, what: std::fmt::Arguments) {
    if logged[kind] < MAX_LOGGED {
        logged[kind] += 1;
        eprintln!("load agent {agent}: {what}");
    }
}

impl Agent {
    fn log(&mut self, kind: usize, what: std::fmt::Arguments) {
        log(&mut self.logged, self.index, kind, what);
    }

    fn read_commands(&mut self) {
        let mut chunk = [0u8; 65536];
        loop {
            match nix::unistd::read(std::io::stdin(), &mut chunk) {
                Ok(0) => {
                    self.quit = true;
                    return;
                }
                Ok(n) => self.stdin_buf.extend_from_slice(&chunk[..n]),
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => panic!("agent {}: reading commands: {e}", self.index),
            }
        }
        while let Some(end) = self.stdin_buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.stdin_buf.drain(..=end).collect();
            let cmd: Command =
                serde_json::from_slice(&line).expect("a command from the coordinator");
            self.command(cmd);
        }
    }

    fn command(&mut self, cmd: Command) {
        let now = now_ns();
        match cmd {
            Command::Connect {
                ws_port,
                source_ip,
                first_uid,
                last_uid,
                max_pending,
                timeout_ms,
                tls_cert,
            } => {
                let tls = tls_cert.map(|b64| {
                    use base64::Engine;
                    let der = base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .expect("the server's certificate");
                    crate::common::tls::client_config(&der)
                });
                self.first_uid = first_uid;
                self.clients = (first_uid..=last_uid).map(|_| None).collect();
                self.connecting = Some(Connecting {
                    next_uid: first_uid,
                    last_uid,
                    pending: 0,
                    max_pending,
                    source: source_ip.parse().expect("source address"),
                    server: SocketAddrV4::new(Ipv4Addr::LOCALHOST, ws_port),
                    ok: 0,
                    failed: 0,
                    first_ns: now,
                    last_ns: now,
                    deadline_ns: now + timeout_ms * 1_000_000,
                    hist: new_hist(),
                    tls,
                });
                self.pump_connects();
            }
            Command::Chat {
                window,
                messages,
                senders,
                timeout_ms,
            } => {
                self.chatting = Some(Chatting {
                    window,
                    sent: 0,
                    acked: 0,
                    total: 0,
                    deadline_ns: now + timeout_ms * 1_000_000,
                });
                let mut started = Vec::new();
                for (uid, receivers) in senders {
                    let i = uid.wrapping_sub(self.first_uid) as usize;
                    match self.clients.get_mut(i).and_then(Option::as_mut) {
                        Some(c) if c.logged_in && !receivers.is_empty() => {
                            c.chat = Some(ChatSender {
                                receivers,
                                next: 0,
                                total: messages,
                                in_flight: 0,
                            });
                            started.push(i);
                        }
                        _ => self.log(
                            LOG_FRAME,
                            format_args!("sender {uid} is not connected here"),
                        ),
                    }
                }
                if let Some(ch) = self.chatting.as_mut() {
                    ch.total = messages * started.len() as u64;
                }
                for i in started {
                    self.send_chat(i, Chatting::fill_window);
                }
                self.check_chat_done(now);
            }
            Command::Expect { total, timeout_ms } => {
                self.expecting = Some(Expecting {
                    total,
                    deadline_ns: now + timeout_ms * 1_000_000,
                });
                self.check_expect(now);
            }
            Command::Report => reply(&Reply::Report {
                counts: self.tally.counts,
                hist: encode_hist(&self.tally.hist),
                cpu_secs: self_cpu_secs(),
            }),
            Command::Quit => self.quit = true,
        }
    }

    /// Starts connects until `max_pending` handshakes are under way or every uid is started.
    fn pump_connects(&mut self) {
        let Some(c) = self.connecting.as_mut() else {
            return;
        };
        while c.pending < c.max_pending && c.next_uid <= c.last_uid {
            let uid = c.next_uid;
            c.next_uid += 1;
            let i = (uid - self.first_uid) as usize;
            let token = wspush::protocol::encode_access_token(&format!("t{uid}"), uid, "app");
            let tls = c.tls.as_ref();
            let started = Client::connect(uid, c.source, c.server, &token, now_ns(), tls).and_then(
                |mut client| {
                    client.register(self.poll.registry(), Token(i))?;
                    Ok(client)
                },
            );
            match started {
                Ok(client) => {
                    self.clients[i] = Some(client);
                    c.pending += 1;
                }
                Err(e) => {
                    c.failed += 1;
                    let what = format_args!("connect uid {uid}: {e}");
                    log(&mut self.logged, self.index, LOG_CONNECT, what);
                }
            }
        }
        self.check_connected(false);
    }

    /// Answers the `Connect` command once every uid has logged in or failed (or on `timeout`).
    fn check_connected(&mut self, timeout: bool) {
        let Some(c) = self.connecting.as_mut() else {
            return;
        };
        if !(timeout || (c.next_uid > c.last_uid && c.pending == 0)) {
            return;
        }
        if timeout {
            // Whoever has not logged in by now counts as failed.
            for slot in &mut self.clients {
                if slot.as_ref().is_some_and(|cl| !cl.logged_in) {
                    *slot = None;
                    c.failed += 1;
                }
            }
            c.failed += c.last_uid + 1 - c.next_uid;
        }
        reply(&Reply::Connected {
            ok: c.ok,
            failed: c.failed,
            first_ns: c.first_ns,
            last_ns: c.last_ns,
            hist: encode_hist(&c.hist),
            cpu_secs: self_cpu_secs(),
        });
        self.connecting = None;
    }

    fn on_client(&mut self, i: usize) {
        let Some(client) = self.clients.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let status = client.on_ready(&mut self.texts);
        let uid = client.uid;
        let mut texts = std::mem::take(&mut self.texts);
        let now = now_ns();
        for t in texts.drain(..) {
            self.on_text(i, &t, now);
        }
        self.texts = texts;
        match status {
            Status::Alive => {}
            Status::Failed(e) => {
                self.log(LOG_CONNECT, format_args!("uid {uid}: connect: {e}"));
                self.drop_client(i);
            }
            Status::Closed(e) => {
                self.log(
                    LOG_CLOSED,
                    format_args!("uid {uid}: connection closed: {e}"),
                );
                self.drop_client(i);
            }
        }
    }

    /// Forgets a client that failed or was closed, counting it where it belongs.
    fn drop_client(&mut self, i: usize) {
        let Some(client) = self.clients.get_mut(i).and_then(Option::take) else {
            return;
        };
        if client.logged_in {
            self.tally.counts.closed += 1;
        } else if let Some(c) = self.connecting.as_mut() {
            c.failed += 1;
            c.pending -= 1;
            self.pump_connects();
        }
    }

    fn on_text(&mut self, i: usize, text: &str, now: u64) {
        let Ok(msg) = serde_json::from_str::<Incoming>(text) else {
            self.tally.counts.bad += 1;
            return;
        };
        match msg.kind {
            Some("login") => self.on_login(i, msg.code == Some(200), now, text),
            Some("ack") => self.on_ack(i, now),
            Some("error") => {
                self.tally.counts.errors += 1;
                self.log(LOG_FRAME, format_args!("error frame: {text}"));
                // A refused chat frame gets an error instead of an ack: free its window slot.
                self.on_ack(i, now);
            }
            Some("pong") => {}
            _ => match (
                msg.content,
                self.clients.get_mut(i).and_then(Option::as_mut),
            ) {
                (
                    Some(Content {
                        seq: Some(seq),
                        t: Some(t),
                    }),
                    Some(client),
                ) => {
                    // Pushes and broadcasts come from the coordinator: sender 0.
                    let sender = msg.uid.and_then(|u| u.parse().ok()).unwrap_or(0);
                    self.tally
                        .delivery(&mut client.streams, sender, seq, t, now);
                    self.check_expect(now);
                }
                _ => {
                    self.tally.counts.bad += 1;
                    self.log(LOG_FRAME, format_args!("unexpected frame: {text}"));
                }
            },
        }
    }

    fn on_login(&mut self, i: usize, ok: bool, now: u64, text: &str) {
        let Some(client) = self.clients.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let Some(c) = self.connecting.as_mut().filter(|_| !client.logged_in) else {
            // A second login frame: this connection was replaced (441).
            self.tally.counts.errors += 1;
            self.log(LOG_FRAME, format_args!("late login frame: {text}"));
            return;
        };
        if ok {
            if c.ok == 0 && self.index == 0 {
                if let Some(tls) = client.tls_summary() {
                    eprintln!("load: TLS: {tls}");
                }
            }
            client.logged_in = true;
            c.ok += 1;
            c.last_ns = now;
            c.hist
                .saturating_record(now.saturating_sub(client.started_ns).max(1));
            c.pending -= 1;
            self.pump_connects();
        } else {
            self.log(LOG_CONNECT, format_args!("login refused: {text}"));
            // drop_client counts the failure and starts the next connect.
            self.drop_client(i);
        }
    }

    fn on_ack(&mut self, i: usize, now: u64) {
        self.send_chat(i, Chatting::on_ack);
        self.check_chat_done(now);
    }

    /// Runs a step of the chat command on client `i`; a client that cannot send is dropped.
    fn send_chat(&mut self, i: usize, step: fn(&mut Chatting, &mut Client) -> Result<(), String>) {
        let (Some(client), Some(ch)) = (
            self.clients.get_mut(i).and_then(Option::as_mut),
            self.chatting.as_mut(),
        ) else {
            return;
        };
        if let Err(e) = step(ch, client) {
            self.log(LOG_CLOSED, format_args!("sending a chat frame: {e}"));
            self.drop_client(i);
        }
    }

    fn check_chat_done(&mut self, now: u64) {
        let Some(ch) = self.chatting.as_ref() else {
            return;
        };
        let complete = ch.is_complete();
        if complete || now >= ch.deadline_ns {
            reply(&Reply::ChatDone {
                sent: ch.sent,
                acked: ch.acked,
                complete,
            });
            self.chatting = None;
        }
    }

    fn check_expect(&mut self, now: u64) {
        let Some(e) = self.expecting.as_ref() else {
            return;
        };
        let unique = self.tally.counts.unique;
        if unique >= e.total || now >= e.deadline_ns {
            let (min_ns, max_ns) = self.tally.take_window();
            reply(&Reply::Reached {
                unique,
                complete: unique >= e.total,
                min_ns,
                max_ns,
                last_at_ns: self.tally.last_at_ns,
            });
            self.expecting = None;
        }
    }

    fn check_deadlines(&mut self, now: u64) {
        if self
            .connecting
            .as_ref()
            .is_some_and(|c| now >= c.deadline_ns)
        {
            self.check_connected(true);
        }
        self.check_chat_done(now);
        self.check_expect(now);
    }
}
