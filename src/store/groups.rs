//! Group messages in the message store, kept once each. A member's row (`group_member`) holds
//! `seen`: the id of the last message of that group it has, sent live or taken. What a member
//! is owed is every message of its groups after `seen`, and the rows of `group_owed`: messages
//! that a member did not get although it was online (its queue was cut, its login was taking
//! older messages), or that it had not had when it left the group. A take merges these with the
//! member's one-to-one messages by id, so that everything comes oldest first and once.

use super::{StoreError, TakeLimit};
use crate::model::{MessageId, PendingMessage, StoredGroupMessage, Uid};
use std::collections::HashMap;

/// What the message stores keep of groups (SQLite on one node, MySQL when configured).
pub trait GroupMessages {
    /// Keeps group messages (an id already kept is left as it is). A message written after a
    /// member's place passed it (its write failed and came later, or another node's took
    /// longer) is owed to that member, if it was a member when the message was sent.
    fn group_insert(&mut self, messages: &[StoredGroupMessage<'_>]) -> Result<(), StoreError>;
    /// A message some members may not have had: owed to every member who joined before it
    /// (with `passed_only`, whose place is already past it), but `except`.
    fn group_undelivered(
        &mut self,
        group: &str,
        id: MessageId,
        except: &[Uid],
        passed_only: bool,
    ) -> Result<(), StoreError>;
    /// `uids` are members of `group` from `at` on (a member already is stays as it was);
    /// answers the number of members after.
    fn group_join(&mut self, group: &str, uids: &[Uid], at: MessageId) -> Result<u64, StoreError>;
    /// `leaving` are members no more. What was sent to one while a member and not delivered
    /// stays owed; `Some(seen)`: the member is online and had everything up to `seen`.
    /// Answers the number of members after.
    fn group_leave(
        &mut self,
        group: &str,
        leaving: &[(Uid, Option<MessageId>)],
    ) -> Result<u64, StoreError>;
    /// `uid` went offline having had its groups' messages up to these ids.
    fn group_seen(&mut self, uid: Uid, seen: &[(&str, MessageId)]) -> Result<(), StoreError>;
    /// Group messages sent to `uid` that never reached it.
    fn group_owed(&mut self, uid: Uid, ids: &[MessageId]) -> Result<(), StoreError>;
    /// Every group with its members (the master's table at start).
    fn group_all(&mut self) -> Result<Vec<(String, Vec<Uid>)>, StoreError>;
    /// Forgets group messages older than `before` (an id: ids are time-ordered), and what was
    /// owed of them. Answers how many messages went.
    fn group_purge(&mut self, before: MessageId) -> Result<u64, StoreError>;
}

/// The messages a take hands out: one-to-one (`chats`) and group ones (`groups`), each sorted
/// by id, merged oldest first within `limit` (at least one, as `TakeLimit` says).
pub fn merge_take(
    chats: Vec<PendingMessage>,
    groups: Vec<PendingMessage>,
    limit: TakeLimit,
) -> Vec<PendingMessage> {
    let mut out = Vec::with_capacity((chats.len() + groups.len()).min(limit.rows));
    let (mut chats, mut groups) = (chats.into_iter().peekable(), groups.into_iter().peekable());
    let mut bytes = 0;
    while out.len() < limit.rows && bytes < limit.bytes {
        let next = match (chats.peek(), groups.peek()) {
            (Some(c), Some(g)) if c.id <= g.id => chats.next(),
            (_, Some(_)) => groups.next(),
            (Some(_), None) => chats.next(),
            (None, None) => None,
        };
        let Some(m) = next else { break };
        bytes += m.content.len();
        out.push(m);
    }
    out
}

/// For each group a take handed out messages of, the newest of them: the member has
/// everything of that group up to it (a take is a prefix of the merged, id-ordered list).
pub fn seen_after_take(taken: &[PendingMessage]) -> Vec<(&str, MessageId)> {
    let mut seen: HashMap<&str, MessageId> = HashMap::new();
    for m in taken {
        if let Some(g) = m.group.as_deref() {
            let e = seen.entry(g).or_insert(m.id);
            *e = (*e).max(m.id);
        }
    }
    seen.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: u64, group: Option<&str>, len: usize) -> PendingMessage {
        PendingMessage {
            id: MessageId(id),
            from: Uid(1),
            to: Uid(2),
            group: group.map(str::to_owned),
            kind: "chat".into(),
            content: "x".repeat(len),
            time: 0,
        }
    }

    #[test]
    fn a_take_merges_by_id_within_its_limit() {
        let chats = vec![m(1, None, 1), m(4, None, 1), m(6, None, 1)];
        let groups = vec![m(2, Some("a"), 1), m(3, Some("b"), 1), m(5, Some("a"), 1)];
        let limit = TakeLimit {
            rows: 5,
            bytes: 1000,
        };
        let taken = merge_take(chats.clone(), groups.clone(), limit);
        let ids: Vec<u64> = taken.iter().map(|m| m.id.0).collect();
        assert_eq!(ids, [1, 2, 3, 4, 5]);
        let mut seen = seen_after_take(&taken);
        seen.sort();
        assert_eq!(seen, [("a", MessageId(5)), ("b", MessageId(3))]);
        // The byte limit stops after the message that reaches it.
        let limit = TakeLimit { rows: 10, bytes: 2 };
        let big = vec![m(2, Some("a"), 5), m(3, Some("a"), 1)];
        let ids: Vec<u64> = merge_take(chats, big, limit)
            .iter()
            .map(|m| m.id.0)
            .collect();
        assert_eq!(ids, [1, 2]);
    }
}
