//! `--dashboard`: what an open admin dashboard asks of the server, to measure its cost. The
//! page polls `/api/admin/history` once a second (the whole ten minutes the first time, then
//! the samples since the last); drawing happens in the browser and costs the server nothing.
//! The server samples its history once a second whether or not a dashboard is open.

use crate::common::{http_exchange_over, SECRET};
use rustls::ClientConfig;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const EVERY: Duration = Duration::from_secs(1);

pub struct Dashboard {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl Dashboard {
    pub fn open(http_port: u16, tls: Option<Arc<ClientConfig>>) -> Dashboard {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let (mut since, mut polls) = (0u64, 0u64);
            let mut next = Instant::now();
            while !done.load(Ordering::SeqCst) {
                let request = format!(
                    "GET /api/admin/history?since={since} HTTP/1.1\r\nHost: x\r\n\
                     Authorization: Bearer {SECRET}\r\n\r\n"
                );
                let body = http_exchange_over(http_port, tls.as_ref(), &[request])
                    .and_then(|mut b| b.pop())
                    .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok());
                if let Some(last) = body
                    .as_ref()
                    .and_then(|b| b["t"].as_array()?.last()?.as_u64())
                {
                    since = last;
                }
                polls += u64::from(body.is_some_and(|b| b["code"] == 0));
                next += EVERY;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            polls
        });
        Dashboard {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops polling; how many polls were answered.
    pub fn close(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().map_or(0, |t| t.join().unwrap_or(0))
    }
}
