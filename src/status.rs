//! `wspush status`: is the server running, since when, and how many connections it holds.

use crate::config::Config;
use crate::daemon::running_pid;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// LSB status codes: 0 running, 3 not running.
pub const EXIT_RUNNING: i32 = 0;
pub const EXIT_NOT_RUNNING: i32 = 3;

pub fn status(config_file: &Path) -> i32 {
    let config = match Config::load(config_file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wspush: {e}");
            return crate::daemon::EXIT_CONFIG;
        }
    };
    let Some(pid) = running_pid(&config.server.pid_file) else {
        println!(
            "wspush is not running (pid file {})",
            config.server.pid_file.display()
        );
        return EXIT_NOT_RUNNING;
    };
    let uptime = std::fs::metadata(&config.server.pid_file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .map_or_else(|| "unknown".to_string(), |d| format!("{}s", d.as_secs()));
    let load = match fetch_stats(&config) {
        Ok(stats) => format!(
            "connections {}, online users {}",
            stats["connections"], stats["online_users"]
        ),
        Err(e) => format!("connections unknown ({e})"),
    };
    println!("wspush is running: pid {pid}, uptime {uptime}, {load}");
    EXIT_RUNNING
}

/// Prints the running server's pid, for scripts that signal it.
pub fn print_pid(config_file: &Path) -> i32 {
    let config = match Config::load(config_file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wspush: {e}");
            return crate::daemon::EXIT_CONFIG;
        }
    };
    match running_pid(&config.server.pid_file) {
        Some(pid) => {
            println!("{pid}");
            EXIT_RUNNING
        }
        None => EXIT_NOT_RUNNING,
    }
}

/// GET /api/stats over loopback, with the secret configured for 127.0.0.1.
fn fetch_stats(config: &Config) -> Result<serde_json::Value, String> {
    let host: IpAddr = config.server.host.parse().map_err(|_| "bad host")?;
    let target = if host.is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        host
    };
    let secret = config
        .push_secret(IpAddr::from([127, 0, 0, 1]))
        .ok_or("127.0.0.1 is not in udpsocket_group")?;
    let addr = SocketAddr::new(target, config.server.http_port);
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let req = format!("GET /api/stats HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {secret}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(req.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .ok_or("no HTTP body")?;
    serde_json::from_str(body).map_err(|e| e.to_string())
}
