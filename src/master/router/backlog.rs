//! Which uids have kept messages on their way to them, so that nothing newer overtakes them.
//!
//! A uid has a backlog while a take of its kept messages is with a worker (a login check, a
//! fetch), or while kept messages wait for one of its connections to catch up (its queue was
//! full). Meanwhile a new message for it is not sent live: it is kept too and comes behind the
//! older ones, in order. The backlog ends with a take that sent everything, left nothing
//! (`more`), and saw nothing new kept while it ran.

use crate::model::Uid;
use std::collections::HashMap;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct State {
    /// Takes with a worker.
    takes: u32,
    /// A message was kept for the uid while a take ran: the take may have missed it.
    missed: bool,
    /// Kept messages did not fit the uid's queues: take again once one has caught up.
    waiting_for_drain: bool,
}

/// What to do after a take was answered.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Take again now.
    Take,
    /// Nothing until a connection of the uid has caught up.
    WaitForDrain,
    /// Another take is still out, or the backlog is over: nothing to do.
    Nothing,
}

#[derive(Default)]
pub struct Backlogs {
    uids: HashMap<Uid, State>,
}

impl Backlogs {
    /// New messages for `uid` must be kept, not sent live.
    pub fn holds(&self, uid: Uid) -> bool {
        self.uids.contains_key(&uid)
    }

    /// A take of `uid`'s kept messages is with a worker.
    pub fn taking(&self, uid: Uid) -> bool {
        self.takes(uid) > 0
    }

    /// How many takes of `uid`'s kept messages are with a worker.
    pub fn takes(&self, uid: Uid) -> u32 {
        self.uids.get(&uid).map_or(0, |s| s.takes)
    }

    /// A take of `uid`'s kept messages went to a worker.
    pub fn take_started(&mut self, uid: Uid) {
        self.uids.entry(uid).or_default().takes += 1;
    }

    /// A message was kept (undelivered) for `uid`.
    pub fn kept(&mut self, uid: Uid) {
        if let Some(s) = self.uids.get_mut(&uid) {
            s.missed |= s.takes > 0;
        }
    }

    /// Kept messages for `uid` wait for its queues to have room.
    pub fn wait_for_drain(&mut self, uid: Uid) {
        self.uids.entry(uid).or_default().waiting_for_drain = true;
    }

    /// A take was answered: `all_sent` when every message it brought went out, `more` when it
    /// stopped at its limit.
    pub fn answered(&mut self, uid: Uid, all_sent: bool, more: bool) -> Next {
        let Some(s) = self.uids.get_mut(&uid) else {
            return Next::Nothing;
        };
        s.takes = s.takes.saturating_sub(1);
        if !all_sent {
            s.waiting_for_drain = true;
        }
        if s.takes > 0 || s.waiting_for_drain {
            return if s.takes == 0 {
                Next::WaitForDrain
            } else {
                Next::Nothing
            };
        }
        if more || s.missed {
            s.missed = false;
            s.takes = 1;
            return Next::Take;
        }
        self.uids.remove(&uid);
        Next::Nothing
    }

    /// A connection of `uid` has caught up: true if a take should go now.
    pub fn drained(&mut self, uid: Uid) -> bool {
        let Some(s) = self.uids.get_mut(&uid) else {
            return false;
        };
        if !s.waiting_for_drain || s.takes > 0 {
            return false;
        }
        s.waiting_for_drain = false;
        s.missed = false;
        s.takes = 1;
        true
    }

    /// `uid` has no connection left (or its store cannot be read): what is kept for it comes
    /// at its next login, or when the store is back.
    pub fn forget(&mut self, uid: Uid) {
        self.uids.remove(&uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: Uid = Uid(9);

    #[test]
    fn a_take_that_sent_everything_ends_the_backlog() {
        let mut b = Backlogs::default();
        assert!(!b.holds(U));
        b.take_started(U);
        assert!(b.holds(U));
        assert_eq!(b.answered(U, true, false), Next::Nothing);
        assert!(!b.holds(U));
    }

    #[test]
    fn what_was_kept_during_a_take_is_taken_again() {
        let mut b = Backlogs::default();
        b.take_started(U);
        b.kept(U);
        assert_eq!(b.answered(U, true, false), Next::Take);
        assert!(b.holds(U), "the new take holds it");
        assert_eq!(b.answered(U, true, false), Next::Nothing);
        assert!(!b.holds(U));
    }

    #[test]
    fn a_take_at_its_limit_is_followed_by_another() {
        let mut b = Backlogs::default();
        b.take_started(U);
        assert_eq!(b.answered(U, true, true), Next::Take);
        assert_eq!(b.answered(U, true, false), Next::Nothing);
    }

    #[test]
    fn what_did_not_fit_waits_for_the_queue_to_drain() {
        let mut b = Backlogs::default();
        b.take_started(U);
        assert_eq!(b.answered(U, false, true), Next::WaitForDrain);
        assert!(b.holds(U));
        b.kept(U);
        assert!(b.drained(U));
        assert!(!b.drained(U), "once");
        assert_eq!(b.answered(U, true, false), Next::Nothing);
        assert!(!b.holds(U));
    }

    #[test]
    fn two_takes_at_once_end_with_the_last() {
        let mut b = Backlogs::default();
        b.take_started(U);
        b.take_started(U);
        assert_eq!(b.answered(U, true, false), Next::Nothing);
        assert!(b.holds(U), "the other take is still out");
        assert_eq!(b.answered(U, true, false), Next::Nothing);
        assert!(!b.holds(U));
    }

    #[test]
    fn a_live_message_that_did_not_fit_starts_a_wait() {
        let mut b = Backlogs::default();
        b.wait_for_drain(U);
        assert!(b.holds(U));
        assert!(b.drained(U));
        assert_eq!(b.answered(U, true, false), Next::Nothing);
        b.wait_for_drain(U);
        b.forget(U);
        assert!(!b.holds(U) && !b.drained(U));
    }
}
