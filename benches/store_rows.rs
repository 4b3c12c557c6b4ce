//! Rows per second into the message store, in the batches the master sends (one multi-row
//! transaction per batch), with several writers as there are task workers.
//!
//! Run: `WSPUSH_BENCH_MYSQL=mysql://root@127.0.0.1:3306/test cargo bench --bench store_rows`
//! (ROWS=200000 BATCH=500 WRITERS=2 UNDELIVERED_EVERY=2: every second row undelivered, the
//! rest backup copies). Without WSPUSH_BENCH_MYSQL it measures the embedded SQLite store in a
//! temporary directory. It prints rows per second and the CPU time per row of this process
//! (the store's own work, for SQLite; the client's share only, for MariaDB).

use std::time::Instant;
use wspush::config::Config;
use wspush::model::{Delivery, MessageId, StoredMessage, Uid};
use wspush::store::mysql::MysqlStore;
use wspush::store::sqlite::SqliteStore;
use wspush::store::MessageStore;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn open(dir: &std::path::Path) -> Box<dyn MessageStore> {
    match std::env::var("WSPUSH_BENCH_MYSQL") {
        Ok(url) => {
            let mut config = Config::default();
            config.mysql.url = url;
            Box::new(MysqlStore::open(&config).expect("mysql"))
        }
        Err(_) => Box::new(SqliteStore::open(dir).expect("sqlite")),
    }
}

fn main() {
    let (rows, batch, writers, every) = (
        env_or("ROWS", 200_000),
        env_or("BATCH", 500),
        env_or("WRITERS", 2),
        env_or("UNDELIVERED_EVERY", 2).max(1) as u64,
    );
    let dir = std::env::temp_dir().join(format!("wspush-store-bench-{}", std::process::id()));
    let kind = if std::env::var("WSPUSH_BENCH_MYSQL").is_ok() {
        "mysql"
    } else {
        "sqlite"
    };
    // Distinct ids per run, so that repeated runs insert rather than hit duplicates.
    let base = wspush::ids::IdGenerator::new(1000).next_id().0;
    let content = r#"{"type":"text","value":"a message of ordinary length, some forty bytes"}"#;
    let started = Instant::now();
    let cpu_before = cpu_secs();
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let mut store = open(&dir);
                let mine: Vec<u64> = (0..rows as u64)
                    .filter(|i| *i as usize % writers == w)
                    .collect();
                for chunk in mine.chunks(batch) {
                    let records: Vec<StoredMessage> = chunk
                        .iter()
                        .map(|i| StoredMessage {
                            id: MessageId(base + i),
                            from: Uid(1 + i % 1000),
                            to: Uid(2 + i % 5000),
                            kind: "chat",
                            delivery: if i % every == 0 {
                                Delivery::Undelivered
                            } else {
                                Delivery::Delivered
                            },
                            content,
                            time: 1_800_000_000,
                        })
                        .collect();
                    store.insert(&records).expect("insert");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("writer");
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu_before;
    println!(
        "store_rows ({kind}): {rows} rows in batches of {batch}, {writers} writers, 1 in {every} undelivered: {:.0} rows/s, {:.2} us CPU per row",
        rows as f64 / secs,
        cpu * 1e6 / rows as f64
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// User plus system CPU time of this process, in seconds.
fn cpu_secs() -> f64 {
    // SAFETY: getrusage only writes into the struct we hand it.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(usage.ru_utime) + t(usage.ru_stime)
}
