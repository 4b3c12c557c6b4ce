//! Messages to a group, from a pusher or a member: the frame written once and handed to every
//! connection of every member online here, as a broadcast is; kept once in the store, where
//! offline members find it at their next login; what a member online here cannot have now
//! (its queues are full, or older messages are on their way to it) is owed to it. In a
//! cluster the message is published once to the nodes where a member is online.

use super::group::group_key;
use super::push::PushOutcome;
use super::{Origin, Router};
use crate::ids::unix_now;
use crate::ipc::{ClusterMessage, MessageMeta, Reply, Task};
use crate::master::message::{GroupMessage, Kind};
use crate::master::ws::{Outgoing, Sessions};
use crate::model::{ConnId, GroupName, MessageId, Uid};
use crate::net::stream::Transport;
use crate::protocol::frames;
use crate::protocol::push::PushData;
use std::rc::Rc;
use std::time::Instant;

/// Group messages held for a member while takes of its messages are with a worker, and those
/// the takes answered so far brought.
#[derive(Debug, Default)]
pub struct Held {
    ids: Vec<MessageId>,
    brought: std::collections::HashSet<MessageId>,
}

/// A group message's failed write, waiting to be tried again.
#[derive(Debug)]
pub struct GroupRetry {
    key: u64,
    body: bytes::Bytes,
    group: GroupName,
    id: MessageId,
    at: Instant,
}

/// How long a failed group write waits before it is tried again.
const GROUP_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);
/// The most failed group writes kept for another try (past it the oldest is given up).
const MAX_GROUP_RETRIES: usize = 100_000;

impl Router {
    /// `to_group` from a pusher: delivered to every member connection but `exclude`'s.
    pub(super) fn push_to_group<S: Transport>(
        &mut self,
        ws: &mut Sessions<S>,
        group: GroupName,
        exclude: Option<Uid>,
        data: &PushData<'_>,
        now: Instant,
    ) -> PushOutcome {
        let id = self.ids.next_id();
        if self.groups.members(&group).is_none() {
            return PushOutcome::delivered(Some(id), 0);
        }
        if !self.admit() {
            return PushOutcome::busy();
        }
        let time_now = unix_now();
        let f = data.group_frame(id, time_now, &group);
        let message = Rc::new(GroupMessage {
            id,
            from: data.sender,
            group,
            time: data.time(time_now),
            frame: f.frame,
            kind: Kind::from_name(data.kind()),
            content: f.content,
            exclude,
        });
        let delivered = self.send_to_group(ws, &message, None, now);
        PushOutcome::delivered(Some(id), delivered)
    }

    /// A chat to a group from a logged-in member: to every other member and to the sender's
    /// other connections; the sender gets its ack. A non-member gets 403.
    #[allow(clippy::too_many_arguments)]
    pub fn group_chat<S: Transport>(
        &mut self,
        ws: &mut Sessions<S>,
        conn: ConnId,
        from: Uid,
        group: GroupName,
        kind: &'static str,
        text: &[u8],
        content: std::ops::Range<usize>,
        in_flight: usize,
        now: Instant,
    ) {
        self.in_flight = in_flight;
        if !self.groups.is_member(&group, from) {
            let frame = frames::error(403, &format!("not a member of {group}"));
            ws.send(conn, Outgoing::Frame(frame), now);
            return;
        }
        if !self.admit() {
            ws.send(
                conn,
                Outgoing::Frame(frames::error(503, "busy: try again later")),
                now,
            );
            return;
        }
        let content = std::str::from_utf8(&text[content]).unwrap_or("null");
        let id = self.ids.next_id();
        let time = unix_now();
        let (frame, layout) =
            frames::group_message(id, kind, from, group.as_str(), time, 1, content);
        let ack = frames::group_ack(id, group.as_str());
        let message = Rc::new(GroupMessage {
            id,
            from,
            group,
            time,
            frame,
            kind: Kind::Named(kind),
            content: Some(layout.content),
            exclude: None,
        });
        self.send_to_group(ws, &message, Some(conn), now);
        ws.send(conn, Outgoing::Frame(ack), now);
    }

    /// Queues `message` to every connection of every member online here (but its `exclude`'s,
    /// and the connection `skip`), owes it to members whose older messages are still on their way,
    /// keeps it once and, in a cluster, publishes it once to the other nodes. Returns how many
    /// connections took it here.
    fn send_to_group<S: Transport>(
        &mut self,
        ws: &mut Sessions<S>,
        message: &Rc<GroupMessage>,
        skip: Option<ConnId>,
        now: Instant,
    ) -> usize {
        let delivered = self.deliver_to_group(ws, message, skip, now);
        self.groups.sent(&message.group, message.id);
        let task = Task::GroupStore(message.stored());
        let origin = Origin::GroupStored {
            group: message.group.clone(),
            id: message.id,
            retry: false,
        };
        self.task(group_key(&message.group), &task, origin);
        if let Some(relay) = self.relay.as_ref() {
            let origin = relay.node.clone();
            let published = ClusterMessage::Group {
                origin: &origin,
                group: message.group.as_str(),
                exclude: message.exclude,
                meta: MessageMeta {
                    id: message.id,
                    from: message.from,
                    time: message.time,
                    kind: message.kind().into(),
                    content: message.content.clone().map(|r| {
                        let header = message.frame.len() - frames::payload(&message.frame).len();
                        ((r.start - header) as u32, r.len() as u32)
                    }),
                },
                frame: frames::payload(&message.frame),
            };
            let task = Task::GroupRoute {
                group: message.group.as_str(),
                message: published,
            };
            let origin = Origin::GroupRoute {
                group: message.group.clone(),
                id: message.id,
            };
            self.task(super::PRESENCE_KEY, &task, origin);
        }
        delivered
    }

    /// Cluster: tells Redis in which groups this node's members online came or went (once
    /// per loop turn), so that other nodes publish a group's messages only where they are
    /// read. Without a cluster the transitions are dropped.
    pub fn submit_group_nodes(&mut self) {
        let changes = self.groups.take_transitions();
        if changes.is_empty() || self.relay.is_none() {
            return;
        }
        let changes: Vec<(&str, bool)> = changes.iter().map(|(g, on)| (g.as_str(), *on)).collect();
        self.task(
            super::PRESENCE_KEY,
            &Task::GroupNodes(changes),
            Origin::Cluster,
        );
    }

    /// The local part of a group send.
    fn deliver_to_group<S: Transport>(
        &mut self,
        ws: &mut Sessions<S>,
        message: &Rc<GroupMessage>,
        skip: Option<ConnId>,
        now: Instant,
    ) -> usize {
        let exclude = message.exclude;
        let mut delivered = 0;
        // Members whose take of kept messages is with a worker: settled when it answers.
        let mut taking: Vec<Uid> = self.groups.arriving_members(&message.group).collect();
        // Members online here that cannot have it now: owed at once.
        let mut owed = Vec::new();
        for uid in self.groups.online_members(&message.group) {
            if Some(uid) == exclude {
                continue;
            }
            if self.backlogs.holds(uid) {
                // Older messages are on their way to it: this one comes behind them.
                if self.backlogs.taking(uid) {
                    taking.push(uid);
                } else {
                    owed.push(uid);
                }
                continue;
            }
            let mut took = 0;
            let mut others = 0;
            for e in self.registry.connections_of(uid) {
                if Some(e.conn) == skip {
                    continue;
                }
                others += 1;
                if ws.send_now(e.conn, Outgoing::Group(Rc::clone(message)), now) {
                    took += 1;
                }
            }
            // Connections that are all full: it comes when they have caught up, or at the
            // next login.
            if others > 0 && took == 0 {
                owed.push(uid);
            }
            delivered += took;
        }
        for uid in taking.into_iter().filter(|u| Some(*u) != exclude) {
            self.held_group.entry(uid).or_default().ids.push(message.id);
        }
        for uid in owed {
            self.owe(uid, vec![message.id]);
        }
        delivered
    }

    /// A take of `uid`'s messages was answered: the group messages sent to it meanwhile are
    /// owed to it, but those the take brought (a take may see a message stored in time).
    /// With two takes out (two devices logging in), it is settled when the last answers, so
    /// that what one brought is not owed again.
    pub(super) fn settle_held(&mut self, uid: Uid, reply: &Reply) {
        let last = self.backlogs.takes(uid) <= 1;
        let Some(held) = self.held_group.get_mut(&uid) else {
            return;
        };
        if let Reply::Pending { frames, .. } = reply {
            held.brought.extend(frames.iter().map(|f| f.id));
        }
        if !last {
            return;
        }
        let Some(held) = self.held_group.remove(&uid) else {
            return;
        };
        let owed: Vec<MessageId> = held
            .ids
            .into_iter()
            .filter(|id| !held.brought.contains(id))
            .collect();
        self.owe(uid, owed);
    }

    /// `uid` starts to have its new messages held (a take, or a wait for its queues to drain):
    /// if it is online here, the store learns that it had its groups' messages up to now, so
    /// that the take does not hand it again what it got live (what it did not get is owed).
    pub(super) fn begin_hold(&mut self, uid: Uid) {
        if self.backlogs.holds(uid) || !self.registry.is_online(uid) {
            return;
        }
        let standing = self.groups.standing(uid);
        if standing.is_empty() {
            return;
        }
        let seen: Vec<(&str, MessageId)> =
            standing.iter().map(|(g, id)| (g.as_str(), *id)).collect();
        self.task(uid.0, &Task::GroupSeen { uid, seen }, Origin::Store);
    }

    /// Group messages `ids` never reached `uid`: they come at its next take.
    pub(super) fn owe(&mut self, uid: Uid, ids: Vec<MessageId>) {
        if !ids.is_empty() {
            self.task(uid.0, &Task::GroupOwed { uid, ids }, Origin::Store);
            self.kept_undelivered(uid);
        }
    }

    /// A group message published by another node: delivered to the members online here.
    pub(super) fn group_relayed<S: Transport>(
        &mut self,
        ws: &mut Sessions<S>,
        group: GroupName,
        exclude: Option<Uid>,
        meta: &MessageMeta<'_>,
        frame: &[u8],
        now: Instant,
    ) {
        if self.groups.last(&group) > meta.id {
            // Newer messages came first: places recorded here since may have passed this one
            // for members who are gone now. It is owed to them (those online here have it).
            let except: Vec<Uid> = self.groups.online_members(&group).collect();
            let task = Task::GroupUndelivered {
                group: group.as_str(),
                id: meta.id,
                except,
                passed_only: true,
            };
            self.task(group_key(&group), &task, Origin::Store);
        }
        if self.groups.online_members(&group).next().is_none()
            && self.groups.arriving_members(&group).next().is_none()
        {
            return;
        }
        let wire = frames::text(frame);
        let header = wire.len() - frame.len();
        let message = Rc::new(GroupMessage {
            id: meta.id,
            from: meta.from,
            group,
            time: meta.time,
            kind: Kind::from_name(&meta.kind),
            content: meta
                .content
                .map(|(at, len)| header + at as usize..header + at as usize + len as usize),
            frame: wire,
            exclude,
        });
        self.deliver_to_group(ws, &message, None, now);
        self.groups.relayed(&message.group, message.id);
    }

    /// A group message's write was answered. A failed one is tried again later and counts as
    /// not written until it is (members' places stop before it); the others' logins go on.
    #[allow(clippy::too_many_arguments)]
    pub fn group_write_answered(
        &mut self,
        key: u64,
        body: bytes::Bytes,
        group: GroupName,
        id: MessageId,
        retry: bool,
        reply: Reply,
        now: Instant,
    ) {
        let again = match reply {
            Reply::Failed(crate::ipc::TaskFailure::StoreRefused) => {
                log::error!("the store refused group message {id} of {group}: it is not kept");
                self.stats.store_refused += 1;
                false
            }
            Reply::Failed(why) => {
                log::warn!("group message {id} of {group} not written ({why}): trying again");
                true
            }
            _ => false,
        };
        match (retry, again) {
            (false, false) => self.group_stored(&group, None, now),
            (false, true) => self.group_stored(&group, Some(id), now),
            (true, false) => self.groups.failed_written(&group, id),
            (true, true) => {}
        }
        if again {
            if self.group_retries.len() >= MAX_GROUP_RETRIES {
                if let Some(dropped) = self.group_retries.pop_front() {
                    log::error!(
                        "too many group messages wait to be written: {} of {} is lost",
                        dropped.id,
                        dropped.group
                    );
                    self.groups.failed_written(&dropped.group, dropped.id);
                }
            }
            // The store owes it to members whose place passed it meanwhile (`group_insert`).
            self.group_retries.push_back(GroupRetry {
                key,
                body,
                group,
                id,
                at: now + GROUP_RETRY_AFTER,
            });
        }
    }

    /// Cluster: a group message could not be published to the other nodes (Redis was away):
    /// every member who did not have it here gets it at its next take.
    pub fn group_route_answered(&mut self, group: GroupName, id: MessageId, reply: &Reply) {
        let Reply::Failed(why) = reply else {
            return;
        };
        log::warn!("group message {id} of {group} not published to the other nodes ({why})");
        let except: Vec<Uid> = self.groups.online_members(&group).collect();
        let task = Task::GroupUndelivered {
            group: group.as_str(),
            id,
            except,
            passed_only: false,
        };
        // On the group's slot, after the message's own write.
        self.task(group_key(&group), &task, Origin::Store);
    }

    /// Group messages whose failed write waits to be tried again.
    pub fn group_writes_waiting(&self) -> usize {
        self.group_retries.len()
    }

    /// Group writes that failed, tried again once their time has come (a sweep's work).
    pub fn retry_group_writes(&mut self, now: Instant) {
        while self.group_retries.front().is_some_and(|r| r.at <= now) {
            let Some(r) = self.group_retries.pop_front() else {
                break;
            };
            let origin = Origin::GroupStored {
                group: r.group,
                id: r.id,
                retry: true,
            };
            self.actions.push(super::Action::Task {
                key: r.key,
                body: r.body,
                origin,
            });
        }
    }

    /// The oldest write with a worker for `group` was answered: logins that waited for it go
    /// on.
    fn group_stored(&mut self, group: &GroupName, failed: Option<MessageId>, now: Instant) {
        self.groups.stored(group, failed);
        let waiting = std::mem::take(&mut self.waiting_logins);
        for (conn, login, upto) in waiting {
            if self.groups.has_unstored_upto(login.uid, upto) {
                self.waiting_logins.push((conn, login, upto));
            } else {
                self.submit_login(conn, login, now);
            }
        }
        let waiting = std::mem::take(&mut self.waiting_fetches);
        for (uid, upto) in waiting {
            if self.groups.has_unstored_upto(uid, upto) {
                self.waiting_fetches.push((uid, upto));
            } else {
                self.submit_fetch_now(uid);
            }
        }
    }

    /// Logins waiting for a group message whose client has gone (or whose handshake deadline
    /// passed): what was held for them is owed, and they are forgotten.
    pub fn prune_waiting_logins<S: Transport>(&mut self, ws: &Sessions<S>) {
        if self.waiting_logins.is_empty() {
            return;
        }
        let waiting = std::mem::take(&mut self.waiting_logins);
        for (conn, login, upto) in waiting {
            if ws.is_logging_in(conn) {
                self.waiting_logins.push((conn, login, upto));
                continue;
            }
            let uid = login.uid;
            self.groups.arrived(uid);
            self.settle_held(uid, &Reply::Ok);
            self.take_done(uid, true, false);
        }
    }

    /// `uid`'s first connection here: it gets its groups' messages live from now on.
    pub(super) fn groups_online(&mut self, uid: Uid) {
        self.groups.came_online(uid);
    }

    /// `uid`'s last connection here went: the store learns where it stands in its groups.
    pub(super) fn groups_offline(&mut self, uid: Uid) {
        let seen = self.groups.went_offline(uid);
        if seen.is_empty() {
            return;
        }
        let seen: Vec<(&str, MessageId)> = seen.iter().map(|(g, id)| (g.as_str(), *id)).collect();
        let task = Task::GroupSeen { uid, seen };
        self.task(uid.0, &task, Origin::Store);
    }
}
