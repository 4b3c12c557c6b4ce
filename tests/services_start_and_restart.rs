//! The throwaway Redis and MariaDB servers of `common::services` start on their own ports, serve,
//! die on `stop()` and come back on the same port on `restart()`: Redis empty (no persistence),
//! MariaDB with its data (same data directory).

mod common;

use common::services::{MariaDb, RedisReply, RedisServer};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn bulk(s: &str) -> RedisReply {
    RedisReply::Bulk(Some(s.as_bytes().to_vec()))
}

#[test]
fn redis_serves_loses_its_data_when_killed_and_restarts_on_the_same_port() {
    let t = Instant::now();
    let mut redis = RedisServer::start();
    eprintln!("redis-server ready in {:?}", t.elapsed());
    assert_ne!(redis.port, 6379, "never the machine's own Redis");
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}/0", redis.port));

    let ok = RedisReply::Status("OK".into());
    assert_eq!(redis.cmd(&["SET", "greeting", "hello\r\nworld"]), ok);
    assert_eq!(
        redis.cmd(&["GET", "greeting"]).as_string().as_deref(),
        Some("hello\r\nworld")
    );
    assert!(redis.cmd(&["GET", "missing"]).is_nil());
    assert_eq!(redis.cmd(&["INCRBY", "counter", "41"]).as_int(), Some(41));
    assert_eq!(
        redis.cmd(&["RPUSH", "list", "a", "", "c"]).as_int(),
        Some(3)
    );
    assert_eq!(
        redis.cmd(&["LRANGE", "list", "0", "-1"]).as_array(),
        Some(&[bulk("a"), bulk(""), bulk("c")][..])
    );
    assert!(
        matches!(redis.cmd(&["NO-SUCH-COMMAND"]), RedisReply::Error(e) if e.starts_with("ERR"))
    );
    assert_eq!(
        redis.cmd(&["CONFIG", "GET", "save"]),
        RedisReply::Array(vec![bulk("save"), bulk("")]),
        "no RDB snapshots"
    );

    let port = redis.port;
    redis.stop();
    assert!(redis.pid().is_none());
    assert!(redis.try_cmd(&["PING"]).is_err(), "a stopped Redis answers");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    redis.stop(); // idempotent

    let t = Instant::now();
    redis.restart();
    eprintln!("redis-server restarted in {:?}", t.elapsed());
    assert_eq!(redis.port, port, "same port");
    assert_eq!(redis.cmd(&["PING"]), RedisReply::Status("PONG".into()));
    assert!(redis.cmd(&["GET", "greeting"]).is_nil(), "data survived");
    assert_eq!(redis.cmd(&["DBSIZE"]).as_int(), Some(0));
    assert_eq!(redis.cmd(&["SET", "after", "restart"]), ok);
    assert_eq!(redis.cmd(&["GET", "after"]), bulk("restart"));

    // A restart of a running server replaces it.
    let pid = redis.pid();
    redis.restart();
    assert_ne!(redis.pid(), pid);
    assert!(redis.cmd(&["GET", "after"]).is_nil());
}

#[test]
fn mariadb_serves_and_keeps_its_data_across_a_kill_and_restart() {
    let t = Instant::now();
    let mut db = MariaDb::start();
    eprintln!("mariadbd ready in {:?}", t.elapsed());
    assert_ne!(db.port, 3306, "never the machine's own MariaDB");
    assert_eq!(db.url(), format!("mysql://root@127.0.0.1:{}/test", db.port));
    assert_eq!(db.query("SELECT DATABASE()"), vec![vec!["test"]]);

    db.query(
        "CREATE TABLE msg (id INT PRIMARY KEY AUTO_INCREMENT, body VARCHAR(100) NOT NULL, \
         note VARCHAR(10) NULL) ENGINE=InnoDB",
    );
    db.query(
        "INSERT INTO msg (body, note) VALUES ('hello', 'x'), ('tab\there\nnewline \\\\ end', NULL), \
         ('utf8mb4 😀 é', '')",
    );
    let expected = vec![
        vec!["1", "hello", "x"],
        vec!["2", "tab\there\nnewline \\ end", "NULL"],
        vec!["3", "utf8mb4 😀 é", ""],
    ];
    assert_eq!(
        db.query("SELECT id, body, note FROM msg ORDER BY id"),
        expected
    );
    assert!(db.query("DELETE FROM msg WHERE id = 99").is_empty());
    let err = db.try_query("SELECT * FROM no_such_table").unwrap_err();
    assert!(err.contains("doesn't exist"), "{err}");

    let port = db.port;
    db.stop();
    assert!(db.pid().is_none());
    assert!(
        db.try_query("SELECT 1").is_err(),
        "a stopped MariaDB answers"
    );
    db.stop(); // idempotent

    let t = Instant::now();
    db.restart();
    eprintln!("mariadbd restarted (crash recovery) in {:?}", t.elapsed());
    assert_eq!(db.port, port, "same port");
    assert_eq!(
        db.query("SELECT id, body, note FROM msg ORDER BY id"),
        expected
    );
    db.query("INSERT INTO msg (body) VALUES ('after restart')");
    assert_eq!(db.query("SELECT COUNT(*) FROM msg"), vec![vec!["4"]]);
}

#[test]
fn a_server_outlives_the_thread_that_started_it() {
    // The test harness gives each test a thread, and PR_SET_PDEATHSIG fires when the forking
    // thread ends: a server started on a thread that has ended must still be alive.
    let mut redis = std::thread::spawn(RedisServer::start).join().unwrap();
    assert_eq!(redis.cmd(&["PING"]), RedisReply::Status("PONG".into()));
    std::thread::scope(|s| {
        s.spawn(|| redis.restart());
    });
    assert_eq!(redis.cmd(&["PING"]), RedisReply::Status("PONG".into()));
}

#[test]
fn restart_retries_while_the_port_is_still_taken() {
    let mut redis = RedisServer::start();
    redis.stop();
    // Someone else holds the port for a while (as a lingering socket might): restart must retry
    // until it is free, not fail and not take the squatter for the server.
    let squatter = TcpListener::bind(("127.0.0.1", redis.port)).expect("take the port");
    let hold = Duration::from_millis(300);
    let t = Instant::now();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(hold); // holds the port; not waiting for anything
        drop(squatter);
    });
    redis.restart();
    releaser.join().unwrap();
    assert!(t.elapsed() >= hold, "restarted while the port was taken");
    assert_eq!(redis.cmd(&["PING"]), RedisReply::Status("PONG".into()));
}
