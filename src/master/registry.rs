//! The uid -> connections table of this node. No I/O: the master asks, it answers. A user with
//! one connection (the common case) takes no allocation of its own.

use crate::model::{ConnId, Source, Uid};
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub source: Source,
    pub conn: ConnId,
    pub device: Option<Box<str>>,
}

/// The connection a new login pushed out, and whether it was the same device reconnecting.
#[derive(Debug, PartialEq, Eq)]
pub struct Displaced {
    pub conn: ConnId,
    pub same_device: bool,
}

/// One user's connections, one per source.
#[derive(Debug)]
enum Entries {
    One(Entry),
    Many(Vec<Entry>),
}

impl Entries {
    fn as_slice(&self) -> &[Entry] {
        match self {
            Entries::One(e) => std::slice::from_ref(e),
            Entries::Many(v) => v,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [Entry] {
        match self {
            Entries::One(e) => std::slice::from_mut(e),
            Entries::Many(v) => v,
        }
    }

    fn push(&mut self, entry: Entry) {
        match self {
            Entries::Many(v) => v.push(entry),
            Entries::One(_) => {
                let Entries::One(first) = std::mem::replace(self, Entries::Many(Vec::new())) else {
                    return;
                };
                *self = Entries::Many(vec![first, entry]);
            }
        }
    }

    /// Removes the entry at `pos`; true if none is left. `Many` holds two or more, so it
    /// always keeps one.
    fn remove(&mut self, pos: usize) -> bool {
        match self {
            Entries::One(_) => true,
            Entries::Many(v) => {
                v.swap_remove(pos);
                if v.len() == 1 {
                    if let Some(last) = v.pop() {
                        *self = Entries::One(last);
                    }
                }
                false
            }
        }
    }
}

#[derive(Default)]
pub struct Registry {
    users: HashMap<Uid, Entries>,
    connections: usize,
}

impl Registry {
    /// Registers `conn` as (uid, source); a connection already there for that pair is displaced.
    pub fn register(
        &mut self,
        uid: Uid,
        source: Source,
        conn: ConnId,
        device: Option<&str>,
    ) -> Option<Displaced> {
        let new = Entry {
            source,
            conn,
            device: device.map(Into::into),
        };
        let Some(entries) = self.users.get_mut(&uid) else {
            self.users.insert(uid, Entries::One(new));
            self.connections += 1;
            return None;
        };
        match entries
            .as_mut_slice()
            .iter_mut()
            .find(|e| e.source == source)
        {
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
    pub fn unregister(&mut self, uid: Uid, source: Source, conn: ConnId) -> bool {
        let Some(entries) = self.users.get_mut(&uid) else {
            return false;
        };
        let Some(pos) = entries
            .as_slice()
            .iter()
            .position(|e| e.source == source && e.conn == conn)
        else {
            return false;
        };
        if entries.remove(pos) {
            self.users.remove(&uid);
        }
        self.connections -= 1;
        true
    }

    /// Gives back the room of a table that held far more users than it does now.
    pub fn shrink(&mut self) {
        super::memory::shrink_map(&mut self.users);
    }

    pub fn connections_of(&self, uid: Uid) -> &[Entry] {
        self.users.get(&uid).map_or(&[], Entries::as_slice)
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

    fn src(s: &str) -> Source {
        Source::new(s).expect("a source")
    }

    fn conns(r: &Registry, uid: u64) -> Vec<u64> {
        let mut c: Vec<u64> = r
            .connections_of(Uid(uid))
            .iter()
            .map(|e| e.conn.0)
            .collect();
        c.sort_unstable();
        c
    }

    #[test]
    fn sources_coexist_and_same_source_displaces() {
        let mut r = Registry::default();
        assert_eq!(r.register(Uid(1), src("app"), ConnId(10), None), None);
        assert_eq!(r.register(Uid(1), src("pc"), ConnId(11), None), None);
        assert_eq!(conns(&r, 1), vec![10, 11]);
        assert_eq!(
            r.register(Uid(1), src("app"), ConnId(12), None),
            Some(Displaced {
                conn: ConnId(10),
                same_device: false
            })
        );
        assert_eq!(r.registered_connections(), 2);
        assert_eq!(conns(&r, 1), vec![11, 12]);
        assert!(r.unregister(Uid(1), src("pc"), ConnId(11)));
        assert_eq!(conns(&r, 1), vec![12]);
        assert!(r.unregister(Uid(1), src("app"), ConnId(12)));
        assert!(!r.is_online(Uid(1)));
    }

    #[test]
    fn same_device_is_recognised() {
        let mut r = Registry::default();
        r.register(Uid(1), src("app"), ConnId(10), Some("d1"));
        let displaced = |r: &mut Registry, conn, device| {
            r.register(Uid(1), src("app"), ConnId(conn), device)
                .map(|d| (d.conn.0, d.same_device))
        };
        assert_eq!(displaced(&mut r, 11, Some("d1")), Some((10, true)));
        assert_eq!(displaced(&mut r, 12, Some("d2")), Some((11, false)));
        assert_eq!(displaced(&mut r, 13, None), Some((12, false)));
    }

    #[test]
    fn late_close_of_displaced_connection_keeps_successor() {
        let mut r = Registry::default();
        r.register(Uid(1), src("app"), ConnId(10), None);
        r.register(Uid(1), src("app"), ConnId(11), None);
        assert!(!r.unregister(Uid(1), src("app"), ConnId(10)));
        assert_eq!(conns(&r, 1), vec![11]);
        assert!(r.unregister(Uid(1), src("app"), ConnId(11)));
        assert!(!r.is_online(Uid(1)));
        assert_eq!((r.online_users(), r.registered_connections()), (0, 0));
    }

    #[test]
    fn many_sources_shrink_back_to_one() {
        let mut r = Registry::default();
        for (i, s) in ["a", "b", "c"].iter().enumerate() {
            r.register(Uid(5), src(s), ConnId(i as u64), None);
        }
        assert!(r.unregister(Uid(5), src("a"), ConnId(0)));
        assert!(r.unregister(Uid(5), src("c"), ConnId(2)));
        assert_eq!(conns(&r, 5), vec![1]);
        assert!(matches!(r.users.get(&Uid(5)), Some(Entries::One(_))));
        assert_eq!(r.registered_connections(), 1);
    }
}
