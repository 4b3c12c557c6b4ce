//! Groups: membership changes (carried out by a worker, then applied to the master's table),
//! and messages to a group, from a pusher or a member. A group message's frame is written once
//! and queued to every connection of every member online here; it is kept once in the store,
//! where offline members find it at their next login. In a cluster it is published once to
//! the nodes where a member is online (Redis keeps which), and each delivers it to its own.

use super::push::PushOutcome;
use super::{Origin, ReplyTo, Router};
use crate::ids::unix_now;
use crate::ipc::{ClusterMessage, MessageMeta, Reply, Task};
use crate::master::http::error_body;
use crate::master::message::{GroupMessage, Kind};
use crate::master::ws::{Outgoing, Sessions};
use crate::model::{ConnId, GroupName, MessageId, Uid};
use crate::net::stream::Transport;
use crate::protocol::frames;
use crate::protocol::push::PushData;
use std::hash::{Hash, Hasher};
use std::rc::Rc;
use std::time::Instant;

/// A membership change waiting for the store's answer.
#[derive(Debug, Clone)]
pub enum GroupChange {
    Join(GroupName, Vec<Uid>),
    Leave(GroupName, Vec<Uid>),
}

/// The worker slot of a group's tasks: one slot per group keeps its writes in order.
fn group_key(group: &GroupName) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    group.hash(&mut h);
    h.finish()
}

/// `{"code":0,"msg":"ok","members":N}`
fn members_body(n: u64) -> String {
    format!("{{\"code\":0,\"msg\":\"ok\",\"members\":{n}}}")
}

impl Router {
    /// Sets the most members a group may have (`server.max_group_members`).
    pub fn set_max_group_members(&mut self, max: usize) {
        self.max_group_members = max;
    }

    /// At start: the groups are read from the store before the doors open (asked once; asked
    /// again if the read fails).
    pub fn ask_for_groups(&mut self) {
        if !self.groups_asked {
            self.groups_asked = true;
            self.load_groups();
        }
    }

    fn load_groups(&mut self) {
        self.task(0, &Task::GroupLoad, Origin::GroupLoad);
    }

    pub fn groups_loaded(&self) -> bool {
        self.groups.is_loaded()
    }

    /// The store's groups arrived (or could not be read: the start waits and asks again).
    pub fn groups_answered(&mut self, reply: Reply) {
        match reply {
            Reply::Groups(groups) => {
                let n = groups.len();
                let registry = &self.registry;
                self.groups.load(groups, |u| registry.is_online(u));
                log::info!("{n} group(s) loaded");
            }
            other => {
                log::warn!("groups could not be read ({other:?}); asking again");
                self.load_groups();
            }
        }
    }

    /// `join_group`: refused (413) past `max_group_members`, else written by a worker and
    /// answered once it is.
    pub(super) fn join_group(
        &mut self,
        group: GroupName,
        uids: Vec<Uid>,
        to: ReplyTo,
    ) -> PushOutcome {
        let after = self.groups.member_count(&group) + self.groups.newcomers(&group, &uids);
        if after > self.max_group_members {
            return PushOutcome::Now {
                status: 413,
                body: error_body(
                    413,
                    &format!(
                        "a group has at most {} members (server.max_group_members)",
                        self.max_group_members
                    ),
                ),
            };
        }
        // Members get what is sent after they join, nothing before.
        let at = self.ids.next_id();
        let task = Task::GroupJoin {
            group: group.as_str(),
            uids: uids.clone(),
            at,
        };
        let origin = Origin::Group {
            to,
            change: GroupChange::Join(group.clone(), uids),
        };
        self.task(group_key(&group), &task, origin);
        PushOutcome::Later
    }

    /// The demo page's join (`/demo/join`): `uid` into `group`, answered as `join_group` is.
    pub fn demo_join(&mut self, group: GroupName, uid: Uid, to: ReplyTo) -> PushOutcome {
        self.join_group(group, vec![uid], to)
    }

    /// `leave_group` (and `ungroup`: every member leaves). What was sent to a member while it
    /// was one still reaches it.
    pub(super) fn leave_group(
        &mut self,
        group: GroupName,
        uids: Vec<Uid>,
        to: ReplyTo,
    ) -> PushOutcome {
        let leaving: Vec<(Uid, Option<MessageId>)> = uids
            .iter()
            .map(|&u| (u, self.groups.seen_if_online(&group, u)))
            .collect();
        let task = Task::GroupLeave {
            group: group.as_str(),
            leaving,
        };
        let origin = Origin::Group {
            to,
            change: GroupChange::Leave(group.clone(), uids),
        };
        self.task(group_key(&group), &task, origin);
        PushOutcome::Later
    }

    pub(super) fn ungroup(&mut self, group: GroupName, to: ReplyTo) -> PushOutcome {
        let members: Vec<Uid> = self
            .groups
            .members(&group)
            .map(|m| m.iter().copied().collect())
            .unwrap_or_default();
        self.leave_group(group, members, to)
    }

    /// `group_members`: every member, and those online (here; in a cluster, on any node).
    pub(super) fn group_members(&mut self, group: &GroupName, to: ReplyTo) -> PushOutcome {
        let mut uids: Vec<Uid> = self
            .groups
            .members(group)
            .map(|m| m.iter().copied().collect())
            .unwrap_or_default();
        uids.sort();
        if self.relay.is_some() {
            self.task(
                group_key(group),
                &Task::GroupOnline(uids.clone()),
                Origin::GroupOnline { to, uids },
            );
            return PushOutcome::Later;
        }
        let online: Vec<Uid> = uids
            .iter()
            .copied()
            .filter(|u| self.registry.is_online(*u))
            .collect();
        PushOutcome::Now {
            status: 200,
            body: members_list_body(&uids, &online),
        }
    }

    /// A cluster's answer to `group_members`: which members are online on some node.
    pub fn group_online_answered(&mut self, to: ReplyTo, uids: Vec<Uid>, reply: Reply) {
        let (status, body) = match reply {
            Reply::Online(online) => (200, members_list_body(&uids, &online)),
            Reply::Failed(why) => {
                let status = crate::master::apply::failure_status(&why);
                (status, error_body(status, &why.to_string()))
            }
            _ => (500, error_body(500, "unexpected answer")),
        };
        self.actions.push(super::Action::Reply { to, status, body });
    }

    /// A membership change was written (or not): the table follows, the pusher hears.
    pub fn group_answered(&mut self, to: ReplyTo, change: GroupChange, reply: Reply) {
        let (status, body) = match reply {
            Reply::Members(n) => {
                self.apply_group_change(&change);
                (200, members_body(n))
            }
            Reply::Failed(why) => {
                let status = crate::master::apply::failure_status(&why);
                (status, error_body(status, &why.to_string()))
            }
            _ => (500, error_body(500, "unexpected answer")),
        };
        self.actions.push(super::Action::Reply { to, status, body });
    }

    fn apply_group_change(&mut self, change: &GroupChange) {
        let registry = &self.registry;
        match change {
            GroupChange::Join(group, uids) => {
                self.groups.join(group, uids, |u| registry.is_online(u))
            }
            GroupChange::Leave(group, uids) => self.groups.leave(group, uids),
        }
    }

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
        });
        let delivered = self.send_to_group(ws, &message, exclude, None, now);
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
        });
        self.send_to_group(ws, &message, None, Some(conn), now);
        ws.send(conn, Outgoing::Frame(ack), now);
    }

    /// Queues `message` to every connection of every member online here (but `exclude`'s, and
    /// the connection `skip`), owes it to members whose older messages are still on their way,
    /// keeps it once and, in a cluster, publishes it once to the other nodes. Returns how many
    /// connections took it here.
    fn send_to_group<S: Transport>(
        &mut self,
        ws: &mut Sessions<S>,
        message: &Rc<GroupMessage>,
        exclude: Option<Uid>,
        skip: Option<ConnId>,
        now: Instant,
    ) -> usize {
        let delivered = self.deliver_to_group(ws, message, exclude, skip, now);
        self.groups.sent(&message.group, message.id);
        let task = Task::GroupStore(message.stored());
        let origin = Origin::GroupStored {
            group: message.group.clone(),
        };
        self.task(group_key(&message.group), &task, origin);
        if let Some(relay) = self.relay.as_ref() {
            let origin = relay.node.clone();
            let published = ClusterMessage::Group {
                origin: &origin,
                group: message.group.as_str(),
                exclude,
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
            self.task(super::PRESENCE_KEY, &task, Origin::Cluster);
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
        exclude: Option<Uid>,
        skip: Option<ConnId>,
        now: Instant,
    ) -> usize {
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
            self.held_group.entry(uid).or_default().push(message.id);
        }
        for uid in owed {
            self.owe(uid, vec![message.id]);
        }
        delivered
    }

    /// A take of `uid`'s messages was answered: the group messages sent to it meanwhile are
    /// owed to it, but those the take brought (a take may see a message stored in time).
    pub(super) fn settle_held(&mut self, uid: Uid, reply: &Reply) {
        let Some(mut held) = self.held_group.remove(&uid) else {
            return;
        };
        if let Reply::Pending { frames, .. } = reply {
            held.retain(|id| !frames.iter().any(|f| f.id == *id));
        }
        self.owe(uid, held);
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
        if self.groups.online_members(&group).next().is_none() {
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
        });
        self.deliver_to_group(ws, &message, exclude, None, now);
        self.groups.relayed(&message.group, message.id);
    }

    /// Another node changed a group's membership.
    pub(super) fn group_changed_elsewhere(&mut self, change: GroupChange) {
        self.apply_group_change(&change);
    }

    /// A group message was written (or failed, and waits for a retry with the other writes):
    /// logins that waited for it go on.
    pub fn group_stored(&mut self, group: &GroupName, now: Instant) {
        self.groups.stored(group);
        let waiting = std::mem::take(&mut self.waiting_logins);
        for (conn, login) in waiting {
            if self.groups.has_unstored(login.uid) {
                self.waiting_logins.push((conn, login));
            } else {
                self.submit_login(conn, login, now);
            }
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

    /// Forgets group messages older than `retention` seconds (asked now and then by the master).
    pub fn purge_groups(&mut self, retention: u64) {
        let before = crate::ids::first_id_at(unix_now().saturating_sub(retention));
        self.task(0, &Task::GroupPurge { before }, Origin::Store);
    }
}

/// `{"code":0,"msg":"ok","uids":[..],"online":[..]}`
fn members_list_body(uids: &[Uid], online: &[Uid]) -> String {
    let text = |l: &[Uid]| l.iter().map(Uid::to_string).collect::<Vec<_>>();
    serde_json::json!({"code": 0, "msg": "ok", "uids": text(uids), "online": text(online)})
        .to_string()
}
