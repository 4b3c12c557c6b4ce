//! The uid -> connections table of this node. No I/O: the master asks, it answers.

use crate::protocol::Uid;
use std::collections::HashMap;

/// A connection id: never reused while the node runs.
pub type ConnId = u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub source: Box<str>,
    pub conn: ConnId,
    pub device: Option<Box<str>>,
}

/// The connection a new login pushed out, and whether it was the same device reconnecting.
#[derive(Debug, PartialEq, Eq)]
pub struct Displaced {
    pub conn: ConnId,
    pub same_device: bool,
}

#[derive(Default)]
pub struct Registry {
    users: HashMap<Uid, Vec<Entry>>,
    connections: usize,
}

impl Registry {
    /// Registers `conn` as (uid, source); a connection already there for that pair is displaced.
    pub fn register(
        &mut self,
        uid: Uid,
        source: &str,
        conn: ConnId,
        device: Option<&str>,
    ) -> Option<Displaced> {
        let entries = self.users.entry(uid).or_default();
        let new = Entry {
            source: source.into(),
            conn,
            device: device.map(Into::into),
        };
        match entries.iter_mut().find(|e| &*e.source == source) {
            Some(old) => {
                let same_device = old.device.is_some() && old.device.as_deref() == device;
                let displaced = Displaced {
                    conn: old.conn,
                    same_device,
                };
                *old = new;
                Some(displaced)
            }
            None => {
                entries.push(new);
                self.connections += 1;
                None
            }
        }
    }

    /// Removes (uid, source) only if it still names `conn`: a late close of a displaced
    /// connection never unregisters its successor. True if something was removed.
    pub fn unregister(&mut self, uid: Uid, source: &str, conn: ConnId) -> bool {
        let Some(entries) = self.users.get_mut(&uid) else {
            return false;
        };
        let Some(pos) = entries
            .iter()
            .position(|e| &*e.source == source && e.conn == conn)
        else {
            return false;
        };
        entries.swap_remove(pos);
        self.connections -= 1;
        if entries.is_empty() {
            self.users.remove(&uid);
        }
        true
    }

    /// Gives back the room of a table that held far more users than it does now.
    pub fn shrink(&mut self) {
        super::memory::shrink_map(&mut self.users);
    }

    pub fn connections_of(&self, uid: Uid) -> &[Entry] {
        self.users.get(&uid).map_or(&[], Vec::as_slice)
    }

    /// The connection ids of `uid`, owned: the caller may change the registry while using them.
    pub fn conn_ids(&self, uid: Uid) -> Vec<ConnId> {
        self.connections_of(uid).iter().map(|e| e.conn).collect()
    }

    pub fn is_online(&self, uid: Uid) -> bool {
        self.users.contains_key(&uid)
    }

    pub fn online_users(&self) -> usize {
        self.users.len()
    }

    pub fn registered_connections(&self) -> usize {
        self.connections
    }

    pub fn users(&self) -> impl Iterator<Item = (Uid, &[Entry])> {
        self.users.iter().map(|(u, e)| (*u, e.as_slice()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_coexist_and_same_source_displaces() {
        let mut r = Registry::default();
        assert_eq!(r.register(1, "app", 10, None), None);
        assert_eq!(r.register(1, "pc", 11, None), None);
        assert_eq!(r.connections_of(1).len(), 2);
        assert_eq!(
            r.register(1, "app", 12, None),
            Some(Displaced {
                conn: 10,
                same_device: false
            })
        );
        assert_eq!(r.registered_connections(), 2);
        let conns: Vec<_> = r.connections_of(1).iter().map(|e| e.conn).collect();
        assert!(conns.contains(&12) && conns.contains(&11));
    }

    #[test]
    fn same_device_is_recognised() {
        let mut r = Registry::default();
        r.register(1, "app", 10, Some("d1"));
        assert_eq!(
            r.register(1, "app", 11, Some("d1")),
            Some(Displaced {
                conn: 10,
                same_device: true
            })
        );
        assert_eq!(
            r.register(1, "app", 12, Some("d2")),
            Some(Displaced {
                conn: 11,
                same_device: false
            })
        );
        assert_eq!(
            r.register(1, "app", 13, None),
            Some(Displaced {
                conn: 12,
                same_device: false
            })
        );
    }

    #[test]
    fn late_close_of_displaced_connection_keeps_successor() {
        let mut r = Registry::default();
        r.register(1, "app", 10, None);
        r.register(1, "app", 11, None);
        assert!(!r.unregister(1, "app", 10));
        assert_eq!(r.connections_of(1)[0].conn, 11);
        assert!(r.unregister(1, "app", 11));
        assert!(!r.is_online(1));
        assert_eq!((r.online_users(), r.registered_connections()), (0, 0));
    }
}
