//! The coordinator's side of the agents: spawning copies of this executable, each with its own
//! share of the uids and its own loopback source address, sending them commands and collecting
//! one reply from each.

use crate::control::{Command, Reply, AGENT_ENV};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command as Process, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// One agent process and the uids it holds.
pub struct AgentProc {
    child: Child,
    stdin: ChildStdin,
    pub first_uid: u64,
    pub last_uid: u64,
}

impl AgentProc {
    pub fn holds(&self, uid: u64) -> bool {
        (self.first_uid..=self.last_uid).contains(&uid)
    }
}

pub struct Fleet {
    pub agents: Vec<AgentProc>,
    /// Every agent's replies, tagged with its index; `None` when its stdout ended.
    replies: Receiver<(usize, Option<Reply>)>,
}

impl Fleet {
    /// Starts `n` agents sharing uids 1..=users in contiguous ranges.
    pub fn spawn(n: usize, users: u64) -> Fleet {
        let exe = std::env::current_exe().expect("the bench's own executable");
        let (tx, replies) = channel();
        let n = n.clamp(1, users.max(1) as usize);
        let agents = (0..n)
            .map(|i| {
                let mut child = Process::new(&exe)
                    .env(AGENT_ENV, i.to_string())
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("spawn an agent");
                let stdin = child.stdin.take().expect("agent stdin");
                let stdout = child.stdout.take().expect("agent stdout");
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(stdout).lines() {
                        let Ok(line) = line else { break };
                        match serde_json::from_str::<Reply>(&line) {
                            Ok(r) => {
                                if tx.send((i, Some(r))).is_err() {
                                    return;
                                }
                            }
                            Err(e) => eprintln!("load: agent {i} said something odd ({e}): {line}"),
                        }
                    }
                    let _ = tx.send((i, None));
                });
                let per = users / n as u64;
                let extra = users % n as u64;
                // The first `extra` agents hold one uid more.
                let first_uid = 1 + i as u64 * per + (i as u64).min(extra);
                let last_uid = first_uid + per - 1 + u64::from((i as u64) < extra);
                AgentProc {
                    child,
                    stdin,
                    first_uid,
                    last_uid,
                }
            })
            .collect();
        Fleet { agents, replies }
    }

    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// Sends a command to agent `i`.
    pub fn send(&mut self, i: usize, cmd: &Command) {
        let mut line = serde_json::to_string(cmd).expect("encode a command");
        line.push('\n');
        self.agents[i]
            .stdin
            .write_all(line.as_bytes())
            .and_then(|()| self.agents[i].stdin.flush())
            .unwrap_or_else(|e| panic!("agent {i} is gone: {e}"));
    }

    /// Sends the same command to every agent.
    pub fn send_all(&mut self, cmd: &Command) {
        for i in 0..self.len() {
            self.send(i, cmd);
        }
    }

    /// One reply from each agent, in agent order; panics (the bench cannot go on) if an agent
    /// dies or `timeout` passes first.
    pub fn collect(&self, timeout: Duration) -> Vec<Reply> {
        let deadline = Instant::now() + timeout;
        let mut got: Vec<Option<Reply>> = (0..self.len()).map(|_| None).collect();
        while got.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.replies.recv_timeout(left) {
                Ok((i, Some(r))) => got[i] = Some(r),
                Ok((i, None)) => panic!("load agent {i} exited"),
                Err(RecvTimeoutError::Timeout) => {
                    panic!("the agents did not answer within {timeout:?}")
                }
                Err(RecvTimeoutError::Disconnected) => panic!("every agent exited"),
            }
        }
        got.into_iter().flatten().collect()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for a in &mut self.agents {
            let mut line = serde_json::to_string(&Command::Quit).unwrap_or_default();
            line.push('\n');
            let _ = a.stdin.write_all(line.as_bytes());
            let _ = a.stdin.flush();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for a in &mut self.agents {
            while matches!(a.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if matches!(a.child.try_wait(), Ok(None)) {
                let _ = a.child.kill();
                let _ = a.child.wait();
            }
        }
    }
}
