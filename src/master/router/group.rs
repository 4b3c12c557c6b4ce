//! Groups' membership: changes carried out by a worker (the store answers the count), then
//! applied to the master's table; the table read at start; `group_members`. Messages to a
//! group are `group_send`'s.

use super::push::PushOutcome;
use super::{Origin, ReplyTo, Router};
use crate::ids::unix_now;
use crate::ipc::{Reply, Task};
use crate::master::http::error_body;
use crate::model::{GroupName, MessageId, Uid};
use std::hash::{Hash, Hasher};

/// The most members a `demo:` group may have through the demo page.
const DEMO_GROUP_MEMBERS: usize = 100;

/// A membership change waiting for the store's answer.
#[derive(Debug, Clone)]
pub enum GroupChange {
    Join(GroupName, Vec<Uid>),
    Leave(GroupName, Vec<Uid>),
}

/// The worker slot of a group's tasks: one slot per group keeps its writes in order.
pub(super) fn group_key(group: &GroupName) -> u64 {
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
    pub fn ask_for_groups(&mut self, now: std::time::Instant) {
        if !self.groups_asked && self.groups_ask_after.is_none_or(|at| now >= at) {
            self.groups_asked = true;
            self.task(0, &Task::GroupLoad, Origin::GroupLoad);
        }
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
                log::warn!("groups could not be read ({other:?}); asking again in a second");
                self.groups_asked = false;
                self.groups_ask_after =
                    Some(std::time::Instant::now() + std::time::Duration::from_secs(1));
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
        // Members get what is sent after they join, nothing before: from now on in this
        // node's table (taken back if the store refuses), so that what is sent while the store
        // writes them reaches those online here, and is held for those logging in.
        let at = self.ids.next_id();
        let task = Task::GroupJoin {
            group: group.as_str(),
            uids: uids.clone(),
            at,
        };
        let newcomers: Vec<Uid> = uids
            .iter()
            .copied()
            .filter(|u| !self.groups.is_member(&group, *u))
            .collect();
        let registry = &self.registry;
        self.groups
            .join(&group, &newcomers, |u| registry.is_online(u));
        let origin = Origin::Group {
            to,
            change: GroupChange::Join(group.clone(), newcomers),
        };
        self.task(group_key(&group), &task, origin);
        PushOutcome::Later
    }

    /// The demo page's join (`/demo/join`): `uid` into `group`, answered as `join_group` is.
    /// At most `DEMO_GROUP_MEMBERS` members: the demo is for trying, from any page.
    pub fn demo_join(&mut self, group: GroupName, uid: Uid, to: ReplyTo) -> PushOutcome {
        if self.groups.member_count(&group) >= DEMO_GROUP_MEMBERS {
            let why = format!("a demo group has at most {DEMO_GROUP_MEMBERS} members");
            return PushOutcome::Now {
                status: 413,
                body: error_body(413, &why),
            };
        }
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
                // A join is in the table since it was asked.
                if let GroupChange::Leave(..) = change {
                    self.apply_group_change(&change);
                }
                (200, members_body(n))
            }
            other => {
                if let GroupChange::Join(group, newcomers) = &change {
                    self.groups.leave(group, newcomers);
                }
                match other {
                    Reply::Failed(why) => {
                        let status = crate::master::apply::failure_status(&why);
                        (status, error_body(status, &why.to_string()))
                    }
                    _ => (500, error_body(500, "unexpected answer")),
                }
            }
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

    /// Another node changed a group's membership.
    pub(super) fn group_changed_elsewhere(&mut self, change: GroupChange) {
        self.apply_group_change(&change);
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
