//! Micro-benchmarks of the master's hot paths, each on realistic inputs:
//!
//! - `token`: decoding a client's `access_token` (both layouts);
//! - `client_frame`: parsing a chat frame and a `ping` from a client;
//! - `frame_encode`: writing one outgoing WebSocket text frame: a recipient's chat message
//!   (`frames::message`, straight into its framing) and a push's stamped `data`;
//! - `fanout_1000`: one message queued to 1,000 connections, encoded once and shared
//!   (`Bytes`) versus encoded again for every recipient;
//! - `ipc`: the master <-> worker task codec (encode, and decode through `FrameReader`), for a
//!   login and a batch of 100 messages to keep;
//! - `registry`: the uid -> connections table holding 20,000 users;
//! - `ids`: message id generation.
//!
//! Run: `cargo bench --bench micro` (a filter narrows it: `cargo bench --bench micro -- fanout`).
//! Every group takes 20 samples over 1 s after a 0.3 s warm-up, so the whole run is short.

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use std::hint::black_box;
use std::io::Cursor;
use std::time::{Duration, Instant};
use wspush::config::TokenLayout;
use wspush::ids::IdGenerator;
use wspush::ipc::{self, FrameReader, Task, TaskId, ToWorker};
use wspush::master::registry::Registry;
use wspush::master::ws::{OutQueue, Outgoing};
use wspush::model::{ConnId, Credentials, Delivery, MessageId, Source, StoredMessage, Uid};
use wspush::protocol::client::{parse_client_frame, ClientRequest};
use wspush::protocol::frames;
use wspush::protocol::{self, push::parse_push};

/// A benchmark group with the short sampling every group here uses.
fn short_group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    group
}

const CONTENT: &str = r#"{"type":"text","value":"hello"}"#;

/// A chat message as the master stamps it: 19-digit id, 6-digit uids, a text content.
fn chat_record(id: u64) -> StoredMessage<'static> {
    StoredMessage {
        id: MessageId(1_234_567_890_123_456_789 + id),
        from: Uid(123_456),
        to: Uid(654_321),
        kind: "chat",
        delivery: Delivery::Delivered,
        content: CONTENT,
        time: 1_700_000_000,
    }
}

fn chat_frame() -> bytes::Bytes {
    let r = chat_record(0);
    frames::message(r.id, r.kind, r.from, r.to, r.time, 1, r.content).0
}

fn bench_token(c: &mut Criterion) {
    let default_layout = protocol::encode_access_token("fe24NDU2341N", 123_456, "app");
    // `encode_access_token` only writes `token.uid.source`; the same claims in the original's
    // `uid.token.source` order, with the same `+/=` -> `-_,` mapping.
    let original_layout = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE
            .encode("123456.fe24NDU2341N.app")
            .replace('=', ",")
    };
    let expected = Credentials {
        uid: Uid(123_456),
        token: "fe24NDU2341N".into(),
        source: Source::new("app").expect("source"),
    };
    let cases = [
        (
            "token.uid.source",
            TokenLayout::TokenUidSource,
            default_layout,
        ),
        (
            "uid.token.source",
            TokenLayout::UidTokenSource,
            original_layout,
        ),
    ];

    let mut group = short_group(c, "token");
    for (name, layout, raw) in cases {
        assert_eq!(
            protocol::decode_access_token(&raw, layout).as_ref(),
            Ok(&expected)
        );
        group.bench_with_input(
            BenchmarkId::new("decode_access_token", name),
            &raw,
            |b, raw| b.iter(|| protocol::decode_access_token(black_box(raw), layout)),
        );
    }
    group.finish();
}

fn bench_client_frame(c: &mut Criterion) {
    let chat = r#"{"to_uid":"654321","type":"chat","content":{"type":"text","value":"hello"}}"#;
    assert!(matches!(
        parse_client_frame(chat),
        Ok(ClientRequest::Chat {
            to: Uid(654_321),
            ..
        })
    ));
    assert!(matches!(
        parse_client_frame("ping"),
        Ok(ClientRequest::Ping)
    ));

    let mut group = short_group(c, "client_frame");
    for (name, text) in [("chat", chat), ("ping", "ping")] {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_with_input(BenchmarkId::new("parse", name), text, |b, text| {
            b.iter(|| {
                // The result borrows the input; take what the master would use from it.
                match parse_client_frame(black_box(text)) {
                    Ok(ClientRequest::Chat { to, content, .. }) => {
                        to.0 ^ content.get().len() as u64
                    }
                    Ok(ClientRequest::GroupChat { content, .. }) => content.get().len() as u64,
                    Ok(ClientRequest::Ping) => 1,
                    Err(_) => 0,
                }
            })
        });
    }
    group.finish();
}

fn bench_frame_encode(c: &mut Criterion) {
    let r = chat_record(0);
    let json_len = frames::payload(&chat_frame()).len();
    let push = br#"{"sk":"k","means":"to_uid","data":{"to_uid":"654321","type":"chat","uid":"0","content":{"type":"text","value":"hello"}}}"#;
    let request = parse_push(push, Some("k"), None).expect("a push");

    let mut group = short_group(c, "frame_encode");
    group.throughput(Throughput::Bytes(json_len as u64));
    group.bench_function(BenchmarkId::new("chat_message", json_len), |b| {
        b.iter(|| {
            frames::message(
                black_box(r.id),
                r.kind,
                r.from,
                r.to,
                r.time,
                1,
                black_box(r.content),
            )
        })
    });
    group.bench_function("push_data_stamped", |b| {
        b.iter(|| request.data.frame(black_box(MessageId(42)), 1_700_000_000))
    });
    group.bench_function("parse_push", |b| {
        b.iter(|| parse_push(black_box(push), Some("k"), None).map(|p| p.data.sender))
    });
    group.finish();
}

/// One chat message for a uid with 1,000 connections (or a broadcast to 1,000 users): the
/// master writes the frame once and queues the same buffer to each; the alternative writes it
/// again per recipient. Each iteration also drops what it queued (as a completed write does).
fn bench_fanout(c: &mut Criterion) {
    const RECIPIENTS: usize = 1_000;
    let mut queues: Vec<OutQueue> = (0..RECIPIENTS).map(|_| OutQueue::default()).collect();
    let r = chat_record(0);

    let mut group = short_group(c, "fanout_1000");
    group.throughput(Throughput::Elements(RECIPIENTS as u64));
    group.bench_function("encode_once_shared", |b| {
        b.iter(|| {
            let frame =
                frames::message(r.id, r.kind, r.from, r.to, r.time, 1, black_box(r.content)).0;
            for q in &mut queues {
                q.push(Outgoing::Frame(frame.clone()));
            }
            for q in &mut queues {
                q.take_unstarted();
            }
        })
    });
    group.bench_function("encode_per_recipient", |b| {
        b.iter(|| {
            for q in &mut queues {
                let frame =
                    frames::message(r.id, r.kind, r.from, r.to, r.time, 1, black_box(r.content)).0;
                q.push(Outgoing::Frame(frame));
            }
            for q in &mut queues {
                q.take_unstarted();
            }
        })
    });
    group.finish();
}

fn bench_ipc(c: &mut Criterion) {
    let login = ipc::encode_task(&Task::Login(Credentials {
        uid: Uid(123_456),
        token: "fe24NDU2341N".into(),
        source: Source::new("app").expect("source"),
    }))
    .expect("encodes");
    let records: Vec<StoredMessage> = (0..100).map(chat_record).collect();

    let mut group = short_group(c, "ipc");
    group.bench_function("encode/store_100", |b| {
        b.iter(|| ipc::encode_task(&Task::Store(black_box(records.clone()))).expect("encodes"))
    });
    let store = ipc::encode_task(&Task::Store(records.clone())).expect("encodes");
    for (name, body) in [("login", &login), ("store_100", &store)] {
        let mut wire = Vec::new();
        let frame = ToWorker::Task {
            id: TaskId(42),
            body,
        };
        ipc::encode(&frame, &mut wire).expect("encodes");
        group.throughput(Throughput::Bytes(wire.len() as u64));
        // As the worker reads it: the frame, then the task inside, borrowed in place.
        let mut reader = FrameReader::default();
        group.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter(|| {
                reader
                    .fill(&mut Cursor::new(black_box(&wire[..])))
                    .expect("fills");
                let frame = reader.next_frame().expect("reads").expect("a frame");
                let Ok(ToWorker::Task { body, .. }) = ipc::decode::<ToWorker>(&frame) else {
                    panic!("a task frame")
                };
                match ipc::decode::<Task>(body).expect("decodes") {
                    Task::Store(batch) => batch.len(),
                    _ => 1,
                }
            })
        });
    }
    group.finish();
}

fn bench_registry(c: &mut Criterion) {
    const USERS: u64 = 20_000;
    const FIRST_UID: u64 = 100_000;
    // Every fourth user is also online from a second device (source "pc").
    let two_sources = |uid: u64| uid.is_multiple_of(4);
    let (app, pc) = (
        Source::new("app").expect("source"),
        Source::new("pc").expect("source"),
    );
    let mut registry = Registry::default();
    for uid in FIRST_UID..FIRST_UID + USERS {
        registry.register(Uid(uid), app, ConnId(uid * 2), None);
        if two_sources(uid) {
            registry.register(Uid(uid), pc, ConnId(uid * 2 + 1), None);
        }
    }
    assert_eq!(registry.online_users(), USERS as usize);
    // Walk the users in a scattered order, so that lookups are not all the same bucket.
    let mut next = 0;
    let mut next_uid = move || {
        next = (next + 7_919) % USERS;
        FIRST_UID + next
    };

    let mut group = short_group(c, "registry_20k");
    group.bench_function("connections_of/hit", |b| {
        b.iter(|| registry.connections_of(black_box(Uid(next_uid()))).len())
    });
    group.bench_function("connections_of/miss", |b| {
        b.iter(|| {
            registry
                .connections_of(black_box(Uid(next_uid() + USERS)))
                .len()
        })
    });
    // A new user logging in. Timed in chunks of 1,000, each removed again untimed, so that the
    // table stays at about 20,000 users whatever the iteration count.
    group.bench_function("register/new_user", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let chunk = (iters - done).min(1_000);
                let uids = FIRST_UID + USERS..FIRST_UID + USERS + chunk;
                let start = Instant::now();
                for uid in uids.clone() {
                    black_box(registry.register(black_box(Uid(uid)), app, ConnId(uid * 2), None));
                }
                total += start.elapsed();
                for uid in uids {
                    registry.unregister(Uid(uid), app, ConnId(uid * 2));
                }
                done += chunk;
            }
            total
        })
    });
    // The same (uid, source) logging in again: the old connection is displaced.
    group.bench_function("register/displace", |b| {
        b.iter(|| {
            let uid = next_uid();
            registry.register(black_box(Uid(uid)), app, ConnId(uid * 2), None)
        })
    });
    // A connection closing, then its user coming back.
    group.bench_function("unregister+register", |b| {
        b.iter(|| {
            let uid = next_uid();
            assert!(registry.unregister(black_box(Uid(uid)), app, ConnId(uid * 2)));
            registry.register(black_box(Uid(uid)), app, ConnId(uid * 2), None)
        })
    });
    group.finish();
    assert_eq!(registry.online_users(), USERS as usize);
}

fn bench_ids(c: &mut Criterion) {
    let mut ids = IdGenerator::new(1);
    let mut group = short_group(c, "ids");
    group.bench_function("next_id", |b| b.iter(|| ids.next_id()));
    group.finish();
}

criterion_group!(
    benches,
    bench_token,
    bench_client_frame,
    bench_frame_encode,
    bench_fanout,
    bench_ipc,
    bench_registry,
    bench_ids
);
criterion_main!(benches);
