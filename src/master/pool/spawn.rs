//! The pool's real spawner: task workers are our own binary (`wspush task-worker --slot N`),
//! their channels registered with the master's poll.

use super::Spawner;
use crate::master::child::ChildLink;
use crate::master::token::{Generation, Token};
use std::io;
use std::path::PathBuf;

pub struct ProcessSpawner {
    exe: PathBuf,
    registry: mio::Registry,
}

impl ProcessSpawner {
    pub fn new(exe: PathBuf, registry: mio::Registry) -> ProcessSpawner {
        ProcessSpawner { exe, registry }
    }
}

impl Spawner for ProcessSpawner {
    type Link = ChildLink;

    fn spawn(&mut self, slot: usize, generation: Generation) -> io::Result<ChildLink> {
        ChildLink::spawn(
            &self.exe,
            &["task-worker", "--slot", &slot.to_string()],
            &self.registry,
            Token::Worker(generation).into(),
        )
    }
}
