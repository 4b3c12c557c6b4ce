//! Rows per second into the message store, in the batches the master sends (one multi-row
//! transaction per batch), with several writers as there are task workers.
//!
//! Run: `WSPUSH_BENCH_MYSQL=mysql://root@127.0.0.1:3306/test cargo bench --bench store_rows`
//! (ROWS=200000 BATCH=500 WRITERS=2). Without WSPUSH_BENCH_MYSQL it measures the embedded
//! SQLite store in a temporary directory.

use std::time::Instant;
use wspush::config::Config;
use wspush::protocol::MessageRecord;
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
    let (rows, batch, writers) = (
        env_or("ROWS", 200_000),
        env_or("BATCH", 500),
        env_or("WRITERS", 2),
    );
    let dir = std::env::temp_dir().join(format!("wspush-store-bench-{}", std::process::id()));
    let kind = if std::env::var("WSPUSH_BENCH_MYSQL").is_ok() {
        "mysql"
    } else {
        "sqlite"
    };
    // Distinct ids per run, so that repeated runs insert rather than hit duplicates.
    let base = wspush::ids::IdGenerator::new(1000).next_id();
    let content = r#"{"type":"text","value":"a message of ordinary length, some forty bytes"}"#;
    let started = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let mut store = open(&dir);
                let mine: Vec<u64> = (0..rows as u64)
                    .filter(|i| *i as usize % writers == w)
                    .collect();
                for chunk in mine.chunks(batch) {
                    let records: Vec<MessageRecord> = chunk
                        .iter()
                        .map(|i| MessageRecord {
                            id: base + i,
                            uid: 1 + i % 1000,
                            to_uid: 2 + i % 5000,
                            kind: "chat".into(),
                            state: (i % 2) as u8,
                            content: content.into(),
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
    println!(
        "store_rows ({kind}): {rows} rows in batches of {batch}, {writers} writers: {:.0} rows/s",
        rows as f64 / secs
    );
    let _ = std::fs::remove_dir_all(dir);
}
