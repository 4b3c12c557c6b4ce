//! The master's life around its loop: opening the doors once every worker is ready (and telling
//! the `start` command or systemd), the graceful stop, and the last words before exit.

use super::*;

impl Master {
    pub(super) fn begin_stop(&mut self, now: Instant) {
        info!("stopping: closing {} connections", self.ws.len());
        crate::systemd::stopping();
        self.pool.cancel_reload();
        self.stopping = Some(now + Duration::from_secs(self.config.server.shutdown_timeout));
        let reg = self.poll.registry();
        if let Some(mut l) = self.ws_listener.take() {
            let _ = reg.deregister(l.listener_mut());
        }
        if let Some(mut udp) = self.udp.take() {
            let _ = reg.deregister(udp.socket_mut());
        }
        self.udp_backlog = false;
        self.ws.close_all(now);
        self.api.stop(reg);
    }

    pub(super) fn ready_to_exit(&self, now: Instant) -> bool {
        match self.stopping {
            None => false,
            Some(deadline) => {
                now >= deadline
                    || (self.ws.is_empty()
                        && self.api.is_empty()
                        && self.pool.is_idle()
                        && self.router.store().is_idle()
                        && self.router.group_writes_waiting() == 0
                        && self.cluster.as_ref().is_none_or(Cluster::idle))
            }
        }
    }

    pub(super) fn finish(&mut self) {
        if !self.pool.is_idle() {
            warn!("stopping with task(s) still in flight after the shutdown timeout");
        }
        let waiting = self.router.store().pending_writes() + self.router.group_writes_waiting();
        if waiting > 0 {
            error!("stopping with {waiting} message(s) the store never accepted: they are lost");
        }
        self.pool.shutdown(Duration::from_secs(2));
        if let Some(c) = self.cluster.as_mut() {
            c.stop();
        }
        if let Some(pid_file) = &self.pid_file {
            let _ = std::fs::remove_file(pid_file);
        }
        info!("stopped");
    }

    /// Tells the `start` command (waiting in the parent) that every worker is up, or why not.
    pub(super) fn report_readiness(&mut self) -> Result<(), MasterError> {
        if self.doors_open {
            if let Some(message) = self.pool.take_fatal() {
                error!("a task worker cannot serve: {message}");
            }
            return Ok(());
        }
        if let Some(message) = self.pool.take_fatal() {
            if let Some(mut notifier) = self.ready_notifier.take() {
                let _ = writeln!(notifier, "error: a task worker cannot start: {message}");
            }
            self.pool.shutdown(Duration::from_secs(1));
            if let Some(c) = self.cluster.as_mut() {
                c.stop();
            }
            return Err(MasterError::WorkerCannotStart(message));
        }
        if !self.pool.all_ready() || !self.cluster.as_ref().is_none_or(Cluster::ready) {
            return Ok(());
        }
        // A group send needs the table of groups: it is read before anyone can send.
        if !self.router.groups_loaded() {
            self.router.ask_for_groups(Instant::now());
            self.settle(Instant::now());
            self.pool.flush();
            return Ok(());
        }
        self.open_doors().map_err(MasterError::OpenDoors)?;
        let s = &self.config.server;
        info!(
            "ready: ws {} udp {} http {} on {}, {} task workers, up to {} connections{}",
            s.ws_port,
            s.udp_port,
            s.http_port,
            s.host,
            self.config.task_workers(),
            self.ws_listener
                .as_ref()
                .map_or(0, WsListener::max_connections),
            if self.cluster.is_some() {
                ", cluster mode (Redis)"
            } else {
                ""
            }
        );
        if let Some(mut notifier) = self.ready_notifier.take() {
            let _ = writeln!(notifier, "ready {}", std::process::id());
        }
        crate::systemd::ready("ready");
        Ok(())
    }

    pub(super) fn open_doors(&mut self) -> io::Result<()> {
        let reg = self.poll.registry();
        if let Some(l) = self.ws_listener.as_mut() {
            reg.register(
                l.listener_mut(),
                Token::WsListener.into(),
                Interest::READABLE,
            )?;
        }
        if let Some(l) = self.api.listener_mut() {
            reg.register(l, Token::ApiListener.into(), Interest::READABLE)?;
        }
        if let Some(udp) = self.udp.as_mut() {
            reg.register(udp.socket_mut(), Token::Udp.into(), Interest::READABLE)?;
        }
        self.doors_open = true;
        Ok(())
    }
}
