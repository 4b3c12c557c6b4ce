//! Micro-benchmarks of the master's hot paths, each on realistic inputs:
//!
//! - `token`: decoding a client's `access_token` (both layouts);
//! - `client_frame`: parsing a chat frame and a `ping` from a client;
//! - `frame_encode`: encoding one outgoing WebSocket text frame, building a recipient's chat
//!   JSON (`MessageRecord::to_frame_json`);
//! - `fanout_1000`: one message queued to 1,000 connections, encoded once and shared (`Rc`)
//!   versus encoded again for every recipient;
//! - `ipc`: the master <-> worker task codec (encode, and decode through `FrameReader`);
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
use wspush::ipc::{self, FrameReader, Task, ToWorker};
use wspush::master::outbuf::{text_frame, OutQueue};
use wspush::master::registry::Registry;
use wspush::protocol::{self, ClientRequest, Credentials, MessageRecord};

/// A benchmark group with the short sampling every group here uses.
fn short_group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    group
}

/// A chat message as the master stamps it: 19-digit id, 6-digit uids, a text content.
fn chat_record() -> MessageRecord {
    MessageRecord {
        id: 1_234_567_890_123_456_789,
        uid: 123_456,
        to_uid: 654_321,
        kind: "chat".into(),
        state: 1,
        content: r#"{"type":"text","value":"hello"}"#.into(),
        time: 1_700_000_000,
    }
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
        uid: 123_456,
        token: "fe24NDU2341N".into(),
        source: "app".into(),
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
        protocol::parse_client_frame(chat),
        Ok(ClientRequest::Chat {
            to_uid: 654_321,
            ..
        })
    ));
    assert!(matches!(
        protocol::parse_client_frame("ping"),
        Ok(ClientRequest::Ping)
    ));

    let mut group = short_group(c, "client_frame");
    for (name, text) in [("chat", chat), ("ping", "ping")] {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_with_input(BenchmarkId::new("parse", name), text, |b, text| {
            b.iter(|| {
                // The result borrows the input; take what the master would use from it.
                match protocol::parse_client_frame(black_box(text)) {
                    Ok(ClientRequest::Chat {
                        to_uid, content, ..
                    }) => to_uid ^ content.get().len() as u64,
                    Ok(ClientRequest::Ping) => 1,
                    Err(_) => 0,
                }
            })
        });
    }
    group.finish();
}

fn bench_frame_encode(c: &mut Criterion) {
    let record = chat_record();
    let json = record.to_frame_json(1);

    let mut group = short_group(c, "frame_encode");
    group.throughput(Throughput::Bytes(json.len() as u64));
    group.bench_function(BenchmarkId::new("text_frame", json.len()), |b| {
        b.iter(|| text_frame(black_box(&json)))
    });
    group.bench_function("to_frame_json", |b| {
        b.iter(|| black_box(&record).to_frame_json(black_box(1)))
    });
    group.finish();
}

/// One chat message for a uid with 1,000 connections (or a broadcast to 1,000 users): the
/// master encodes the frame once and queues the same `Rc` to each; the alternative encodes it
/// again per recipient. Each iteration also drops what it queued (as a completed write does),
/// keeping the queues' ring capacity.
fn bench_fanout(c: &mut Criterion) {
    const RECIPIENTS: usize = 1_000;
    let json = chat_record().to_frame_json(1);
    let mut queues: Vec<OutQueue> = (0..RECIPIENTS).map(|_| OutQueue::default()).collect();

    let mut group = short_group(c, "fanout_1000");
    group.throughput(Throughput::Elements(RECIPIENTS as u64));
    group.bench_function("encode_once_shared", |b| {
        b.iter(|| {
            let frame = text_frame(black_box(&json));
            for q in &mut queues {
                q.push(frame.clone());
            }
            for q in &mut queues {
                q.clear_unstarted();
            }
        })
    });
    group.bench_function("encode_per_recipient", |b| {
        b.iter(|| {
            for q in &mut queues {
                q.push(text_frame(black_box(&json)));
            }
            for q in &mut queues {
                q.clear_unstarted();
            }
        })
    });
    group.finish();
}

fn bench_ipc(c: &mut Criterion) {
    let login = ToWorker::Task {
        id: 42,
        task: Task::Login(Credentials {
            uid: 123_456,
            token: "fe24NDU2341N".into(),
            source: "app".into(),
        }),
    };
    let records: Vec<MessageRecord> = (0..100)
        .map(|i| MessageRecord {
            id: chat_record().id + i,
            ..chat_record()
        })
        .collect();
    let store = ToWorker::Task {
        id: 43,
        task: Task::Store(records),
    };

    let mut group = short_group(c, "ipc");
    for (name, msg) in [("login", &login), ("store_100", &store)] {
        let mut wire = Vec::new();
        ipc::encode(msg, &mut wire).expect("encodes");
        group.throughput(Throughput::Bytes(wire.len() as u64));

        // The master reuses one buffer per worker channel.
        let mut out = Vec::with_capacity(wire.len());
        group.bench_function(BenchmarkId::new("encode", name), |b| {
            b.iter(|| {
                out.clear();
                ipc::encode(black_box(msg), &mut out).expect("encodes");
                out.len()
            })
        });

        // As the worker's side of a non-blocking channel: one reader kept across reads,
        // drained until it has no whole frame left (which compacts its buffer).
        let mut reader = FrameReader::default();
        group.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter(|| {
                reader
                    .fill(&mut Cursor::new(black_box(&wire[..])))
                    .expect("fills");
                let frame = reader.next_frame::<ToWorker>().expect("decodes");
                assert!(matches!(frame, Some(ToWorker::Task { .. })));
                assert!(reader.next_frame::<ToWorker>().expect("ok").is_none());
                frame
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
    let mut registry = Registry::default();
    for uid in FIRST_UID..FIRST_UID + USERS {
        registry.register(uid, "app", uid * 2, None);
        if two_sources(uid) {
            registry.register(uid, "pc", uid * 2 + 1, None);
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
        b.iter(|| registry.connections_of(black_box(next_uid())).len())
    });
    group.bench_function("connections_of/miss", |b| {
        b.iter(|| registry.connections_of(black_box(next_uid() + USERS)).len())
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
                    black_box(registry.register(black_box(uid), "app", uid * 2, None));
                }
                total += start.elapsed();
                for uid in uids {
                    registry.unregister(uid, "app", uid * 2);
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
            registry.register(black_box(uid), "app", uid * 2, None)
        })
    });
    // A connection closing, then its user coming back.
    group.bench_function("unregister+register", |b| {
        b.iter(|| {
            let uid = next_uid();
            assert!(registry.unregister(black_box(uid), "app", uid * 2));
            registry.register(black_box(uid), "app", uid * 2, None)
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
