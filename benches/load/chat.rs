//! Chat frames from an agent's clients: each sender numbers its frames per receiver (so the
//! receiver can check their order) and keeps at most `window` of them un-acked.

use crate::client::Client;
use crate::control::now_ns;

/// What one client sends: `total` frames round robin over `receivers`.
pub struct ChatSender {
    pub receivers: Vec<u64>,
    pub next: u64,
    pub total: u64,
    pub in_flight: u32,
}

/// A `Chat` command under way, over all the agent's senders.
pub struct Chatting {
    pub window: u32,
    pub sent: u64,
    pub acked: u64,
    pub total: u64,
    pub deadline_ns: u64,
}

impl Chatting {
    /// Sends from `client` until its window is full or it has sent all its frames.
    pub fn fill_window(&mut self, client: &mut Client) -> Result<(), String> {
        let mut queued = false;
        while let Some(chat) = client.chat.as_mut() {
            if chat.in_flight >= self.window || chat.next >= chat.total {
                break;
            }
            let n = chat.receivers.len() as u64;
            let to = chat.receivers[(chat.next % n) as usize];
            let seq = chat.next / n;
            chat.next += 1;
            chat.in_flight += 1;
            self.sent += 1;
            let t = now_ns();
            client.queue_text(format!(
                "{{\"to_uid\":\"{to}\",\"type\":\"chat\",\"content\":{{\"seq\":{seq},\"t\":{t}}}}}"
            ))?;
            queued = true;
        }
        // One write for the frames queued together.
        if queued {
            client.flush()?;
        }
        Ok(())
    }

    /// An ack, or an error frame in its place, came back to `client`: a window slot is free.
    pub fn on_ack(&mut self, client: &mut Client) -> Result<(), String> {
        let Some(chat) = client.chat.as_mut() else {
            return Ok(());
        };
        chat.in_flight = chat.in_flight.saturating_sub(1);
        self.acked += 1;
        self.fill_window(client)
    }

    pub fn is_complete(&self) -> bool {
        self.acked >= self.total
    }
}
