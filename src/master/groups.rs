//! The master's table of groups: who is a member (a copy of the store's membership, loaded at
//! start and changed as the store answers each change), which members have a connection on
//! this node, and where each group's messages stand. A group send then costs one lookup and
//! one queue per online member connection; offline members cost nothing here (their messages
//! wait in the store, see `store::groups`).

use crate::model::{GroupName, MessageId, Uid};
use std::collections::{HashMap, HashSet};

#[derive(Debug, Default)]
struct Group {
    members: HashSet<Uid>,
    /// Members with a connection on this node.
    online: HashSet<Uid>,
    /// Members logging in on this node: their take of kept messages is with a worker.
    arriving: HashSet<Uid>,
    /// The newest message this node sent to the group: online members had everything up to
    /// it (or are owed what they did not get).
    last: MessageId,
    /// Messages of this group sent to the store and not written yet, oldest first (one worker
    /// slot writes a group's messages, in order).
    unstored: std::collections::VecDeque<MessageId>,
    /// Messages whose write failed and waits to be tried again.
    failed: std::collections::BTreeSet<MessageId>,
    /// Cluster: the newest message heard before this node's subscription was lost; what other
    /// nodes published after it may not have been heard here.
    gap_floor: Option<MessageId>,
}

impl Group {
    /// How far a member online here has had this group's messages: up to the newest sent
    /// here, but before one whose write failed (a take may have missed it; if the member had
    /// it live, it comes again rather than never). One still with a worker does not count:
    /// takes wait for those.
    fn had_upto(&self) -> MessageId {
        let last = self
            .gap_floor
            .map_or(self.last, |floor| self.last.min(floor));
        match self.failed.first() {
            Some(id) => last.min(MessageId(id.0.saturating_sub(1))),
            None => last,
        }
    }
}

#[derive(Debug, Default)]
pub struct Groups {
    table: HashMap<GroupName, Group>,
    /// Each uid's groups (the uids of no group have no entry).
    of_uid: HashMap<Uid, Vec<GroupName>>,
    /// The table was read from the store.
    loaded: bool,
    /// Logins under way per uid (a uid is `arriving` in its groups while it has one).
    arrivals: HashMap<Uid, u32>,
    /// Groups whose members online here went from none to some (true) or back (false), for
    /// the cluster's record of which nodes to send a group's messages to.
    transitions: Vec<(GroupName, bool)>,
}

impl Groups {
    pub fn is_loaded(&self) -> bool {
        self.loaded
    }

    /// The store's groups, read at start (or again after the cluster's Redis was away, when
    /// changes may have been missed): the table becomes exactly that. `online` says who has a
    /// connection here now.
    pub fn load(&mut self, groups: Vec<(String, Vec<Uid>)>, online: impl Fn(Uid) -> bool) {
        let mut loaded: HashMap<GroupName, HashSet<Uid>> = HashMap::new();
        for (name, uids) in groups {
            // Names were checked when they were created; one that is not valid is skipped.
            if let Some(name) = GroupName::new(&name) {
                loaded.entry(name).or_default().extend(uids);
            }
        }
        let known: Vec<GroupName> = self.table.keys().cloned().collect();
        for name in known {
            let gone: Vec<Uid> = match (self.table.get(&name), loaded.get(&name)) {
                (Some(g), Some(now)) => g.members.difference(now).copied().collect(),
                (Some(g), None) => g.members.iter().copied().collect(),
                (None, _) => continue,
            };
            self.leave(&name, &gone);
        }
        for (name, uids) in loaded {
            let uids: Vec<Uid> = uids.into_iter().collect();
            self.join(&name, &uids, &online);
        }
        self.loaded = true;
    }

    pub fn members(&self, group: &GroupName) -> Option<&HashSet<Uid>> {
        self.table.get(group).map(|g| &g.members)
    }

    pub fn member_count(&self, group: &GroupName) -> usize {
        self.table.get(group).map_or(0, |g| g.members.len())
    }

    /// Members logging in here (their take is with a worker) and not online here yet.
    pub fn arriving_members(&self, group: &GroupName) -> impl Iterator<Item = Uid> + '_ {
        self.table
            .get(group)
            .into_iter()
            .flat_map(|g| g.arriving.iter().copied().filter(|u| !g.online.contains(u)))
    }

    /// A login of `uid` asked for its messages: what its groups send meanwhile is owed to it.
    pub fn arriving(&mut self, uid: Uid) {
        let n = self.arrivals.entry(uid).or_default();
        *n += 1;
        if *n > 1 {
            return;
        }
        for name in self.of_uid.get(&uid).into_iter().flatten() {
            if let Some(g) = self.table.get_mut(name) {
                g.arriving.insert(uid);
            }
        }
    }

    /// The login of `uid` was answered, whatever the answer.
    pub fn arrived(&mut self, uid: Uid) {
        match self.arrivals.get_mut(&uid) {
            Some(n) if *n > 1 => {
                *n -= 1;
                return;
            }
            Some(_) => {
                self.arrivals.remove(&uid);
            }
            None => return,
        }
        for name in self.of_uid.get(&uid).into_iter().flatten() {
            if let Some(g) = self.table.get_mut(name) {
                g.arriving.remove(&uid);
            }
        }
    }

    /// Where `uid` stands in each of its groups now (the newest message of each sent here).
    pub fn standing(&self, uid: Uid) -> Vec<(GroupName, MessageId)> {
        self.of_uid
            .get(&uid)
            .into_iter()
            .flatten()
            .filter_map(|n| self.table.get(n).map(|g| (n.clone(), g.had_upto())))
            .filter(|(_, last)| *last != MessageId::default())
            .collect()
    }

    /// Members with a connection on this node.
    pub fn online_members(&self, group: &GroupName) -> impl Iterator<Item = Uid> + '_ {
        self.table
            .get(group)
            .into_iter()
            .flat_map(|g| g.online.iter().copied())
    }

    pub fn is_member(&self, group: &GroupName, uid: Uid) -> bool {
        self.table
            .get(group)
            .is_some_and(|g| g.members.contains(&uid))
    }

    /// How many of `uids` are not members yet.
    pub fn newcomers(&self, group: &GroupName, uids: &[Uid]) -> usize {
        match self.table.get(group) {
            None => uids.len(),
            Some(g) => uids.iter().filter(|u| !g.members.contains(u)).count(),
        }
    }

    pub fn join(&mut self, group: &GroupName, uids: &[Uid], online: impl Fn(Uid) -> bool) {
        if uids.is_empty() {
            return;
        }
        let g = self.table.entry(group.clone()).or_default();
        let before = g.online.is_empty();
        for &uid in uids {
            if g.members.insert(uid) {
                self.of_uid.entry(uid).or_default().push(group.clone());
                if online(uid) {
                    g.online.insert(uid);
                }
                // Logging in now: what the group sends meanwhile is held for its take.
                if self.arrivals.contains_key(&uid) {
                    g.arriving.insert(uid);
                }
            }
        }
        if before && !g.online.is_empty() {
            self.transitions.push((group.clone(), true));
        }
    }

    /// The groups whose members online here went from none to some (true) or back (false)
    /// since the last call.
    pub fn take_transitions(&mut self) -> Vec<(GroupName, bool)> {
        std::mem::take(&mut self.transitions)
    }

    /// Every group with a member online here (to rewrite the cluster's record of it).
    pub fn with_members_online(&self) -> Vec<GroupName> {
        self.table
            .iter()
            .filter(|(_, g)| !g.online.is_empty())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Removes members; a group without members is forgotten.
    pub fn leave(&mut self, group: &GroupName, uids: &[Uid]) {
        let Some(g) = self.table.get_mut(group) else {
            return;
        };
        let before = g.online.is_empty();
        for uid in uids {
            if g.members.remove(uid) {
                g.online.remove(uid);
                g.arriving.remove(uid);
                if let Some(groups) = self.of_uid.get_mut(uid) {
                    groups.retain(|n| n != group);
                    if groups.is_empty() {
                        self.of_uid.remove(uid);
                    }
                }
            }
        }
        if !before && g.online.is_empty() {
            self.transitions.push((group.clone(), false));
        }
        if g.members.is_empty() && g.unstored.is_empty() && g.failed.is_empty() {
            self.table.remove(group);
        }
    }

    /// For a member leaving: `Some(last)` when it is online here (it had everything sent from
    /// here up to `last`).
    pub fn seen_if_online(&self, group: &GroupName, uid: Uid) -> Option<MessageId> {
        self.table
            .get(group)
            .filter(|g| g.online.contains(&uid))
            .map(Group::had_upto)
    }

    /// `uid` has its first connection on this node.
    pub fn came_online(&mut self, uid: Uid) {
        for name in self.of_uid.get(&uid).into_iter().flatten() {
            if let Some(g) = self.table.get_mut(name) {
                if g.online.insert(uid) && g.online.len() == 1 {
                    self.transitions.push((name.clone(), true));
                }
            }
        }
    }

    /// `uid`'s last connection on this node went: where each of its groups stands, as far as
    /// it has had them (empty when it is in no group).
    pub fn went_offline(&mut self, uid: Uid) -> Vec<(GroupName, MessageId)> {
        let mut seen = Vec::new();
        for name in self.of_uid.get(&uid).into_iter().flatten() {
            if let Some(g) = self.table.get_mut(name) {
                if !g.online.remove(&uid) {
                    continue;
                }
                if g.online.is_empty() {
                    self.transitions.push((name.clone(), false));
                }
                if g.had_upto() != MessageId::default() {
                    seen.push((name.clone(), g.had_upto()));
                }
            }
        }
        seen
    }

    /// A message `id` was sent to `group` from this node; it goes to the store.
    pub fn sent(&mut self, group: &GroupName, id: MessageId) {
        if let Some(g) = self.table.get_mut(group) {
            g.last = g.last.max(id);
            g.unstored.push_back(id);
        }
    }

    /// The newest message this node sent or heard for `group`.
    pub fn last(&self, group: &GroupName) -> MessageId {
        self.table
            .get(group)
            .map_or(MessageId::default(), |g| g.last)
    }

    /// Another node sent `id` to `group` (and keeps it): members online here have had it.
    pub fn relayed(&mut self, group: &GroupName, id: MessageId) {
        if let Some(g) = self.table.get_mut(group) {
            g.last = g.last.max(id);
        }
    }

    /// The store has answered for the oldest of `group`'s messages with a worker: written
    /// (`failed` None), or not, to be tried again (then it stays unwritten until
    /// `failed_written`).
    pub fn stored(&mut self, group: &GroupName, failed: Option<MessageId>) {
        if let Some(g) = self.table.get_mut(group) {
            g.unstored.pop_front();
            if let Some(id) = failed {
                g.failed.insert(id);
            }
            if g.members.is_empty() && g.unstored.is_empty() && g.failed.is_empty() {
                self.table.remove(group);
            }
        }
    }

    /// A write that had failed went in (or was given up).
    pub fn failed_written(&mut self, group: &GroupName, id: MessageId) {
        if let Some(g) = self.table.get_mut(group) {
            g.failed.remove(&id);
            if g.members.is_empty() && g.unstored.is_empty() && g.failed.is_empty() {
                self.table.remove(group);
            }
        }
    }

    /// Whether a group of `uid` has a message on its way to the store: a take of `uid`'s
    /// messages now could miss it, and it would not come later either (`uid` is online when
    /// it is written), so the take waits for it.
    /// The newest such message: a take after it is written sees every message sent before.
    pub fn unstored_newest(&self, uid: Uid) -> Option<MessageId> {
        self.of_uid
            .get(&uid)
            .into_iter()
            .flatten()
            .filter_map(|n| self.table.get(n).and_then(|g| g.unstored.back().copied()))
            .max()
    }

    /// Whether a group of `uid` still has a message up to `upto` on its way to the store.
    pub fn has_unstored_upto(&self, uid: Uid, upto: MessageId) -> bool {
        self.of_uid.get(&uid).into_iter().flatten().any(|n| {
            self.table
                .get(n)
                .and_then(|g| g.unstored.front())
                .is_some_and(|oldest| *oldest <= upto)
        })
    }

    /// Cluster: the subscription was lost. Until members online here have been taken their
    /// messages again (`gap_closed`), their places stop at what was heard before.
    pub fn gap_opened(&mut self) {
        for g in self.table.values_mut() {
            g.gap_floor.get_or_insert(g.last);
        }
    }

    /// The members online here were asked to take what they may have missed.
    pub fn gap_closed(&mut self) {
        for g in self.table.values_mut() {
            g.gap_floor = None;
        }
    }

    /// Gives back the room of tables that held far more than they do now.
    pub fn shrink(&mut self) {
        if self.of_uid.capacity() > 64 && self.of_uid.len() < self.of_uid.capacity() / 4 {
            self.of_uid.shrink_to_fit();
        }
        if self.table.capacity() > 64 && self.table.len() < self.table.capacity() / 4 {
            self.table.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(name: &str) -> GroupName {
        GroupName::new(name).expect("name")
    }

    #[test]
    fn membership_and_who_is_online() {
        let mut t = Groups::default();
        let online = |u: Uid| u.0.is_multiple_of(2);
        t.load(vec![("a".into(), vec![Uid(1), Uid(2)])], online);
        assert!(t.is_loaded());
        t.join(&g("a"), &[Uid(2), Uid(4)], online);
        assert_eq!(t.member_count(&g("a")), 3);
        let mut on: Vec<u64> = t.online_members(&g("a")).map(|u| u.0).collect();
        on.sort();
        assert_eq!(on, [2, 4]);
        assert_eq!(t.newcomers(&g("a"), &[Uid(1), Uid(9)]), 1);
        t.came_online(Uid(1));
        assert_eq!(t.online_members(&g("a")).count(), 3);
        assert_eq!(t.take_transitions(), [(g("a"), true)], "once, at the first");
        t.leave(&g("a"), &[Uid(1), Uid(2), Uid(4)]);
        assert_eq!(t.take_transitions(), [(g("a"), false)]);
        assert!(
            t.members(&g("a")).is_none(),
            "the last member took the group with it"
        );
        assert!(t.went_offline(Uid(1)).is_empty());
        // Read again (a cluster after Redis was away): the table becomes what was read.
        t.join(&g("a"), &[Uid(5)], online);
        t.join(&g("b"), &[Uid(6)], online);
        t.load(vec![("a".into(), vec![Uid(7)])], online);
        let members: Vec<u64> = t
            .members(&g("a"))
            .into_iter()
            .flatten()
            .map(|u| u.0)
            .collect();
        assert_eq!(members, [7]);
        assert!(t.members(&g("b")).is_none());
    }

    #[test]
    fn where_an_offline_member_stands_and_unstored_messages() {
        let mut t = Groups::default();
        t.join(&g("a"), &[Uid(1), Uid(2)], |u| u == Uid(1));
        assert!(t.went_offline(Uid(1)).is_empty(), "nothing was sent yet");
        t.came_online(Uid(1));
        t.sent(&g("a"), MessageId(10));
        assert_eq!(t.unstored_newest(Uid(2)), Some(MessageId(10)));
        assert_eq!(t.seen_if_online(&g("a"), Uid(1)), Some(MessageId(10)));
        assert_eq!(t.seen_if_online(&g("a"), Uid(2)), None);
        t.stored(&g("a"), None);
        assert!(!t.has_unstored_upto(Uid(2), MessageId(10)));
        assert_eq!(t.unstored_newest(Uid(2)), None);
        assert_eq!(t.went_offline(Uid(1)), [(g("a"), MessageId(10))]);
        assert!(t.went_offline(Uid(1)).is_empty(), "once");
        // A group emptied while a message is on its way stays until it is written.
        t.sent(&g("a"), MessageId(11));
        t.leave(&g("a"), &[Uid(1), Uid(2)]);
        assert_eq!(t.member_count(&g("a")), 0);
        t.stored(&g("a"), None);
        assert!(t.members(&g("a")).is_none());
    }
}
