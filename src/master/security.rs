//! Security events (refused pushes, bad signatures, rate-limit cuts, refused logins, kicks,
//! refused connections) go to the log with the client's real address, under the `security`
//! target so that they can be filtered. A flood of them must not flood the log: at most
//! `BUDGET` lines per `WINDOW`, then one line saying how many were left out.

use std::cell::RefCell;
use std::fmt;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(10);
const BUDGET: u32 = 100;

struct Budget {
    window_start: Instant,
    logged: u32,
    left_out: u64,
}

thread_local! {
    // The master is one thread; workers never log security events.
    static BUDGET_STATE: RefCell<Option<Budget>> = const { RefCell::new(None) };
}

/// Logs one event (at warn) if the budget allows.
pub fn event(args: fmt::Arguments<'_>) {
    let now = Instant::now();
    let allowed = BUDGET_STATE.with(|b| {
        let mut b = b.borrow_mut();
        let b = b.get_or_insert(Budget {
            window_start: now,
            logged: 0,
            left_out: 0,
        });
        if now.duration_since(b.window_start) >= WINDOW {
            if b.left_out > 0 {
                log::warn!(
                    target: "security",
                    "{} more security events in the last {}s were not logged",
                    b.left_out,
                    WINDOW.as_secs()
                );
            }
            *b = Budget {
                window_start: now,
                logged: 0,
                left_out: 0,
            };
        }
        if b.logged < BUDGET {
            b.logged += 1;
            true
        } else {
            b.left_out += 1;
            false
        }
    });
    if allowed {
        log::warn!(target: "security", "{args}");
    }
}

/// `security!("...", args)`: one security event.
macro_rules! security {
    ($($arg:tt)*) => {
        $crate::master::security::event(format_args!($($arg)*))
    };
}
pub(crate) use security;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_to_the_budget() {
        for i in 0..(BUDGET + 50) {
            event(format_args!("event {i}"));
        }
        BUDGET_STATE.with(|b| {
            let b = b.borrow();
            let b = b.as_ref().expect("started");
            assert_eq!(b.logged, BUDGET);
            assert_eq!(b.left_out, 50);
        });
    }
}
