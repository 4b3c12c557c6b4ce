//! Throwaway Redis and MariaDB servers for integration tests.
//!
//! Each server is a child of the test process, on a free loopback port, with all its files in a
//! fresh temporary directory: the machine's own servers (6379, 3306) are never used, and none need
//! be running. Nothing sleeps for a fixed time: start-up polls with a deadline, and a failure
//! panics with the tail of the server's logs. A missing binary panics with a pointer to `sh/test`,
//! which installs the Debian packages (as root); tests are never skipped.
//!
//! Children never outlive the test process: `Drop` kills them, and each is started with
//! `PR_SET_PDEATHSIG = SIGKILL` in case the test process dies without unwinding. Linux sends that
//! signal when the *thread* that forked the child ends, not the process, and the test harness runs
//! each test on its own thread; so every child is forked by one spawner thread that lives as long
//! as the process. A server may therefore be started on one thread and used, restarted or dropped
//! on another (e.g. shared by several tests through a `OnceLock`).

use nix::errno::Errno;
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::Signal;
use nix::unistd::{getpid, getppid};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

/// How long a server may take to start (MariaDB after a SIGKILL runs crash recovery first).
const START_WAIT: Duration = Duration::from_secs(60);
/// How long one Redis command or one `mariadb` client run may take.
const COMMAND_WAIT: Duration = Duration::from_secs(30);
/// How long one readiness probe may take: short, since whatever answers on the port before the
/// server has bound it (another process) may never reply, and the probe is repeated anyway.
const PROBE_WAIT: Duration = Duration::from_secs(2);
/// Fresh ports tried by `start()` when the one picked was taken before the server bound it.
const START_ATTEMPTS: usize = 5;
/// What both servers log when they cannot bind their port.
const PORT_TAKEN: &str = "Address already in use";

// ---------------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------------

/// A `redis-server` of its own: no persistence (`--save "" --appendonly no`), so a restart after
/// [`RedisServer::stop`] comes back empty.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    daemon: Daemon,
}

/// A RESP2 reply. A nil array (`*-1`) is reported as `Bulk(None)`, like a nil bulk string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisReply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<RedisReply>),
}

impl RedisReply {
    /// The text of a status reply or of a UTF-8 bulk string; None for anything else (nil too).
    pub fn as_string(&self) -> Option<String> {
        match self {
            RedisReply::Status(s) => Some(s.clone()),
            RedisReply::Bulk(Some(b)) => String::from_utf8(b.clone()).ok(),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            RedisReply::Int(n) => Some(*n),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[RedisReply]> {
        match self {
            RedisReply::Array(items) => Some(items),
            _ => None,
        }
    }

    pub fn is_nil(&self) -> bool {
        matches!(self, RedisReply::Bulk(None))
    }
}

impl RedisServer {
    /// Starts `redis-server` on a free loopback port and waits until it answers PING.
    pub fn start() -> RedisServer {
        let bin = find_binary(&["redis-server"], "redis-server");
        let dir = temp_dir("redis");
        let daemon = Daemon::new("redis-server", &dir, &["redis.log", "stdout.log"]);
        let mut server = RedisServer {
            port: 0,
            dir,
            bin,
            daemon,
        };
        start_on_free_port(|port| {
            server.port = port;
            server.launch(Instant::now() + START_WAIT)
        });
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    /// Kills the server with SIGKILL and reaps it, as if Redis had died. Idempotent.
    pub fn stop(&mut self) {
        self.daemon.kill();
    }

    /// Starts the server again on the same port (killing it first if it still runs), retrying
    /// while the port is still taken, and waits until it answers PING. The data is gone.
    pub fn restart(&mut self) {
        self.daemon.kill();
        restart_on_same_port(self.port, |deadline| self.launch(deadline));
    }

    /// Sends one command on a fresh connection and returns the reply (an error reply included);
    /// panics if the server cannot be reached.
    pub fn cmd(&self, args: &[&str]) -> RedisReply {
        self.try_cmd(args).unwrap_or_else(|e| {
            panic!(
                "redis-server on port {}: {args:?} failed: {e}\n{}",
                self.port,
                self.daemon.tail()
            )
        })
    }

    /// Like [`RedisServer::cmd`], but an I/O failure (e.g. the server is stopped) is an `Err`.
    pub fn try_cmd(&self, args: &[&str]) -> io::Result<RedisReply> {
        resp_command(self.port, args, COMMAND_WAIT)
    }

    fn launch(&mut self, deadline: Instant) -> Result<(), Failure> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--protected-mode", "no"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .current_dir(&self.dir);
        let port = self.port;
        self.daemon.launch(cmd, deadline, || {
            resp_command(port, &["PING"], PROBE_WAIT)
                .is_ok_and(|r| r == RedisReply::Status("PONG".into()))
        })
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.daemon.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// One command as an array of bulk strings on a new connection; reads one reply. `limit` bounds
/// the connect and each read and write.
fn resp_command(port: u16, args: &[&str], limit: Duration) -> io::Result<RedisReply> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, limit)?;
    stream.set_read_timeout(Some(limit))?;
    stream.set_write_timeout(Some(limit))?;
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    stream.write_all(&request)?;
    read_reply(&mut BufReader::new(stream))
}

fn read_reply(r: &mut impl BufRead) -> io::Result<RedisReply> {
    let line = read_line(r)?;
    let (kind, rest) = match line.split_first() {
        Some((kind, rest)) => (*kind, String::from_utf8_lossy(rest).into_owned()),
        None => return Err(bad_reply("an empty line")),
    };
    let number = |s: &str| {
        s.parse::<i64>()
            .map_err(|_| bad_reply(&format!("bad number {s:?}")))
    };
    Ok(match kind {
        b'+' => RedisReply::Status(rest),
        b'-' => RedisReply::Error(rest),
        b':' => RedisReply::Int(number(&rest)?),
        b'$' => match usize::try_from(number(&rest)?) {
            Err(_) => RedisReply::Bulk(None),
            Ok(len) => {
                let mut data = vec![0; len + 2];
                r.read_exact(&mut data)?;
                if !data.ends_with(b"\r\n") {
                    return Err(bad_reply("a bulk string not ended by CRLF"));
                }
                data.truncate(len);
                RedisReply::Bulk(Some(data))
            }
        },
        b'*' => match usize::try_from(number(&rest)?) {
            Err(_) => RedisReply::Bulk(None),
            Ok(len) => {
                RedisReply::Array((0..len).map(|_| read_reply(r)).collect::<Result<_, _>>()?)
            }
        },
        other => return Err(bad_reply(&format!("type byte {:?}", other as char))),
    })
}

/// One CRLF-terminated line, without the CRLF.
fn read_line(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if !line.ends_with(b"\r\n") {
        return Err(bad_reply("a line not ended by CRLF"));
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

fn bad_reply(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("bad RESP reply: {what}"),
    )
}

// ---------------------------------------------------------------------------------------------
// MariaDB
// ---------------------------------------------------------------------------------------------

/// A `mariadbd` of its own, with its own data directory: root@127.0.0.1 has no password, and the
/// database `test` exists. The data survives [`MariaDb::stop`] + [`MariaDb::restart`].
pub struct MariaDb {
    pub port: u16,
    dir: PathBuf,
    server_bin: PathBuf,
    client_bin: PathBuf,
    daemon: Daemon,
}

/// Server options given both to `mariadb-install-db` and to `mariadbd`: small and quick to set up,
/// yet crash-safe against a SIGKILL of the server (the log is written at each commit, the
/// doublewrite buffer stays on). Native AIO (io_uring) is off: some containers forbid it.
const MARIADB_OPTIONS: &[&str] = &[
    "--skip-name-resolve",
    "--innodb-buffer-pool-size=16M",
    "--innodb-log-file-size=8M",
    "--innodb-flush-log-at-trx-commit=2",
    "--innodb-use-native-aio=0",
    "--innodb-temp-data-file-path=ibtmp1:1M:autoextend",
    "--innodb-buffer-pool-load-at-startup=0",
    "--innodb-buffer-pool-dump-at-shutdown=0",
    // What Debian's /etc/mysql configures, which --no-defaults leaves out.
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_general_ci",
];

impl MariaDb {
    /// Creates a data directory with `mariadb-install-db`, starts `mariadbd` on a free loopback
    /// port, waits until it answers queries and creates the database `test`.
    pub fn start() -> MariaDb {
        let server_bin = find_binary(&["mariadbd", "mysqld"], "mariadb-server");
        let install_bin = find_binary(
            &["mariadb-install-db", "mysql_install_db"],
            "mariadb-server",
        );
        let client_bin = find_binary(&["mariadb", "mysql"], "mariadb-client");
        let dir = temp_dir("mariadb");
        fs::create_dir_all(dir.join("tmp")).expect("create the MariaDB tmpdir");
        let daemon = Daemon::new("mariadbd", &dir, &["error.log", "stdout.log"]);
        let mut db = MariaDb {
            port: 0,
            dir,
            server_bin,
            client_bin,
            daemon,
        };
        db.install(&install_bin);
        start_on_free_port(|port| {
            db.port = port;
            db.launch(Instant::now() + START_WAIT)
        });
        db.client(None, "CREATE DATABASE IF NOT EXISTS test")
            .unwrap_or_else(|e| panic!("{e}"));
        db
    }

    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/test", self.port)
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    /// Runs `sql` (one or more `;`-separated statements) in the database `test` with the
    /// `mariadb` client; returns the rows, each split into its tab-separated fields (the client's
    /// escapes `\t`, `\n`, `\\` and `\0` are undone; SQL NULL comes back as "NULL"). Panics with
    /// the client's stderr on failure.
    pub fn query(&self, sql: &str) -> Vec<Vec<String>> {
        self.try_query(sql).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`MariaDb::query`], but a failure (SQL error, server down) is an `Err` with the
    /// client's stderr.
    pub fn try_query(&self, sql: &str) -> Result<Vec<Vec<String>>, String> {
        self.client(Some("test"), sql)
    }

    /// Kills the server with SIGKILL and reaps it, as if the database had died. Idempotent.
    pub fn stop(&mut self) {
        self.daemon.kill();
    }

    /// Starts `mariadbd` again on the same port and data directory (killing it first if it still
    /// runs), retrying while the port is still taken; waits until it answers queries.
    pub fn restart(&mut self) {
        self.daemon.kill();
        restart_on_same_port(self.port, |deadline| self.launch(deadline));
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("mariadbd.sock")
    }

    fn install(&self, install_bin: &Path) {
        let log_path = self.dir.join("install.log");
        let log = File::create(&log_path).expect("create install.log");
        let mut cmd = Command::new(install_bin);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", self.data_dir().display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            // Its own tmpdir: parallel installs sharing /tmp remove each other's work tables.
            .arg(format!("--tmpdir={}", self.dir.join("tmp").display()))
            .env("TMPDIR", self.dir.join("tmp"))
            .args(user_option())
            .args(MARIADB_OPTIONS)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup install.log"))
            .stderr(log);
        let child = spawn(cmd).unwrap_or_else(|e| panic!("cannot run {install_bin:?}: {e}"));
        match wait_with_deadline(child, START_WAIT) {
            Some(status) if status.success() => {}
            outcome => panic!(
                "{install_bin:?} failed ({}) for {:?}\n{}",
                outcome.map_or("timed out".to_string(), |s| s.to_string()),
                self.data_dir(),
                tail(&log_path, 40)
            ),
        }
    }

    fn launch(&mut self, deadline: Instant) -> Result<(), Failure> {
        let mut cmd = Command::new(&self.server_bin);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", self.data_dir().display()))
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--port={}", self.port))
            .args(["--bind-address=127.0.0.1", "--skip-networking=0"])
            .args(user_option())
            .arg("--skip-log-bin")
            .arg(format!(
                "--log-error={}",
                self.dir.join("error.log").display()
            ))
            .arg(format!(
                "--pid-file={}",
                self.dir.join("mariadbd.pid").display()
            ))
            .arg(format!("--tmpdir={}", self.dir.join("tmp").display()))
            .args(MARIADB_OPTIONS)
            .current_dir(&self.dir);
        let (port, socket) = (self.port, self.socket().display().to_string());
        let (client_bin, dir) = (self.client_bin.clone(), self.dir.clone());
        self.daemon.launch(cmd, deadline, || {
            // Cheap check first; then a query, which must reach this server and no other.
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
                && run_client(&client_bin, &dir, port, None, "SELECT @@socket", PROBE_WAIT)
                    == Ok(vec![vec![socket.clone()]])
        })
    }

    fn client(&self, db: Option<&str>, sql: &str) -> Result<Vec<Vec<String>>, String> {
        run_client(
            &self.client_bin,
            &self.dir,
            self.port,
            db,
            sql,
            COMMAND_WAIT,
        )
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.daemon.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// One run of the `mariadb` client against 127.0.0.1:`port`, in database `db` if given, killed
/// after `limit`; its output goes through files in `dir`.
fn run_client(
    client_bin: &Path,
    dir: &Path,
    port: u16,
    db: Option<&str>,
    sql: &str,
    limit: Duration,
) -> Result<Vec<Vec<String>>, String> {
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let n = RUNS.fetch_add(1, Ordering::SeqCst);
    let (out_path, err_path) = (
        dir.join(format!("client-{n}.out")),
        dir.join(format!("client-{n}.err")),
    );
    let mut cmd = Command::new(client_bin);
    cmd.arg("--no-defaults")
        .args(["--protocol=TCP", "-h127.0.0.1"])
        .arg(format!("-P{port}"))
        .args(["-uroot", "--batch", "--skip-column-names"])
        .arg(format!(
            "--connect-timeout={}",
            limit.as_secs().clamp(1, 10)
        ))
        .arg("--default-character-set=utf8mb4")
        .arg("-e")
        .arg(sql)
        .args(db)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("create client output file"))
        .stderr(File::create(&err_path).expect("create client error file"));
    let child = spawn(cmd).unwrap_or_else(|e| panic!("cannot run {client_bin:?}: {e}"));
    let status = wait_with_deadline(child, limit);
    let out = fs::read(&out_path).unwrap_or_default();
    let err = fs::read(&err_path).unwrap_or_default();
    let _ = fs::remove_file(&out_path);
    let _ = fs::remove_file(&err_path);
    match status {
        Some(status) if status.success() => Ok(parse_batch(&String::from_utf8_lossy(&out))),
        outcome => Err(format!(
            "mariadb client on port {port} ({}) for `{sql}`: {}",
            outcome.map_or(format!("killed after {limit:?}"), |s| s.to_string()),
            String::from_utf8_lossy(&err).trim_end()
        )),
    }
}

/// `--user=root` when running as root: mariadbd refuses to run as root without it.
fn user_option() -> Option<&'static str> {
    // The "Uid:" line holds the real, effective, saved and filesystem uids.
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1));
    (euid == Some("0")).then_some("--user=root")
}

/// Rows of `mariadb --batch` output: one per line, fields split on tabs, escapes undone.
fn parse_batch(out: &str) -> Vec<Vec<String>> {
    let Some(out) = out.strip_suffix('\n') else {
        return Vec::new();
    };
    out.split('\n')
        .map(|line| line.split('\t').map(unescape_batch).collect())
        .collect()
}

fn unescape_batch(field: &str) -> String {
    let mut s = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            s.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => s.push('\t'),
            Some('n') => s.push('\n'),
            Some('0') => s.push('\0'),
            Some('\\') => s.push('\\'),
            Some(other) => {
                s.push('\\');
                s.push(other);
            }
            None => s.push('\\'),
        }
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Shared: a child server process, start-up with retries, spawning, polling, files
// ---------------------------------------------------------------------------------------------

/// Why a launch did not end with a ready server.
struct Failure {
    port_taken: bool,
    message: String,
}

/// A server child process and the log files that explain its failures.
struct Daemon {
    name: &'static str,
    dir: PathBuf,
    logs: Vec<PathBuf>,
    child: Option<Child>,
}

impl Daemon {
    /// `logs` are file names in `dir`; one of them must be "stdout.log", where the child's
    /// stdout and stderr go.
    fn new(name: &'static str, dir: &Path, logs: &[&str]) -> Daemon {
        Daemon {
            name,
            dir: dir.to_path_buf(),
            logs: logs.iter().map(|l| dir.join(l)).collect(),
            child: None,
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Spawns `cmd` and polls `ready` until it holds, the child exits, or `deadline` passes (the
    /// child is then killed).
    fn launch(
        &mut self,
        mut cmd: Command,
        deadline: Instant,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), Failure> {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let offsets: Vec<u64> = self.logs.iter().map(|p| file_len(p)).collect();
        let out = File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("stdout.log"))
            .expect("open stdout.log");
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup stdout.log"))
            .stderr(out);
        let child = spawn(cmd).unwrap_or_else(|e| panic!("cannot run {}: {e}", self.name));
        self.child = Some(child);
        let mut pause = Duration::from_millis(1);
        loop {
            let child = self.child.as_mut().expect("child");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                let new_output: String = self
                    .logs
                    .iter()
                    .zip(&offsets)
                    .map(|(p, &offset)| read_from(p, offset))
                    .collect();
                return Err(Failure {
                    port_taken: new_output.contains(PORT_TAKEN),
                    message: format!(
                        "{} exited during start-up ({status})\n{}",
                        self.name,
                        self.tail()
                    ),
                });
            }
            if ready() {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                self.kill();
                return Err(Failure {
                    port_taken: false,
                    message: format!("{} was not ready in time\n{}", self.name, self.tail()),
                });
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// SIGKILL and reap; nothing if not running.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last lines of each log, for panic messages.
    fn tail(&self) -> String {
        self.logs.iter().map(|p| tail(p, 30)).collect()
    }
}

/// Runs `launch` on fresh free ports until one works; panics on any other failure.
fn start_on_free_port(mut launch: impl FnMut(u16) -> Result<(), Failure>) {
    for attempt in 1..=START_ATTEMPTS {
        match launch(free_port()) {
            Ok(()) => return,
            Err(f) if f.port_taken && attempt < START_ATTEMPTS => continue,
            Err(f) => panic!("{}", f.message),
        }
    }
    unreachable!()
}

/// Runs `launch` until the server binds `port` again (the port may stay taken for a moment after
/// the old server died), within `START_WAIT`; panics on any other failure.
fn restart_on_same_port(port: u16, mut launch: impl FnMut(Instant) -> Result<(), Failure>) {
    let deadline = Instant::now() + START_WAIT;
    let mut pause = Duration::from_millis(5);
    let mut taken = 0;
    loop {
        match launch(deadline) {
            Ok(()) => return,
            Err(f) if f.port_taken && Instant::now() < deadline => {
                taken += 1;
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            Err(f) => panic!(
                "restart on port {port} (it was still taken at {taken} earlier attempts, within \
                 {START_WAIT:?}): {}",
                f.message
            ),
        }
    }
}

/// Spawns `cmd` with `PR_SET_PDEATHSIG = SIGKILL`, from a thread that lives as long as the process
/// (see the module documentation).
fn spawn(mut cmd: Command) -> io::Result<Child> {
    type Request = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("test-services-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("start the spawner thread");
        tx
    });
    let parent = getpid();
    // SAFETY: the closure runs in the forked child, before exec, where only async-signal-safe
    // calls are allowed. It makes only the prctl(2) and getppid(2) system calls, neither of which
    // allocates or takes a lock, and builds its error from a raw errno (no allocation either).
    unsafe {
        cmd.pre_exec(move || {
            set_pdeathsig(Signal::SIGKILL)?;
            // The test process may have died between fork and prctl: then nobody will kill us.
            if getppid() != parent {
                return Err(Errno::ESRCH.into());
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner
        .send((cmd, tx))
        .expect("the spawner thread is alive");
    rx.recv().expect("the spawner thread answers")
}

/// Waits for `child` until `limit`; kills it then and returns None.
fn wait_with_deadline(mut child: Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        let now = Instant::now();
        if now >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// A free loopback TCP port (bound then released: the server binds it right after).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0 for a free port")
}

/// A new empty directory in the system temp dir, unique to this process and call. Directories
/// left with the same tag by test processes that are gone (killed before `Drop` ran) are removed.
fn temp_dir(tag: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    remove_dirs_of_dead_processes(tag);
    let dir = std::env::temp_dir().join(format!("wspush-{tag}-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {dir:?}: {e}"));
    dir
}

/// Removes `wspush-{tag}-{pid}-{n}` directories whose process no longer exists.
fn remove_dirs_of_dead_processes(tag: &str) {
    let prefix = format!("wspush-{tag}-");
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, n)| n.parse::<u32>().ok().and(pid.parse::<u32>().ok()));
        if let Some(pid) = pid {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// The first of `names` found on PATH or in the sbin directories (not on every user's PATH);
/// panics with how to install `package` otherwise.
fn find_binary(names: &[&str], package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from));
    for name in names {
        for dir in &dirs {
            let candidate = dir.join(name);
            let executable = fs::metadata(&candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
            if executable {
                return candidate;
            }
        }
    }
    panic!(
        "none of {names:?} is installed (looked on PATH and in /usr/sbin): run sh/test, which \
         installs the Debian package '{package}' when run as root (or: apt-get install {package})"
    )
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}

/// The file's content from byte `offset` on.
fn read_from(path: &Path, offset: u64) -> String {
    let mut text = Vec::new();
    if let Ok(mut f) = File::open(path) {
        if f.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = f.read_to_end(&mut text);
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// The last `lines` lines of a file, under a header naming it; nothing if it is missing or empty.
fn tail(path: &Path, lines: usize) -> String {
    let text = read_from(path, 0);
    if text.trim().is_empty() {
        return String::new();
    }
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    format!(
        "--- {} (last {} lines) ---\n{}\n",
        path.display(),
        all.len() - start,
        all[start..].join("\n")
    )
}
