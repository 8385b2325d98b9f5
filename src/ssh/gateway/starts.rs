//! Pacing the servers' starts through a hub: at most [`STARTS`] between their channel's
//! opening and their login at once, fewer once a server behind the gateway dropped a
//! connection, and then each a moment after the one before.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Hub, STARTS};

/// A server's turn to start through a hub (see [`Hub::start`]), given back when dropped.
pub(in crate::ssh) struct Start(Arc<Hub>);

impl Drop for Start {
    fn drop(&mut self) {
        let mut starting = self.0.starting.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        starting.now -= 1;
        if starting.paced {
            starting.next = Some(Instant::now() + START_GAP);
        }
        self.0.started.notify_all();
    }
}

/// The starts through a hub: how many are under way, how many may be, and once a server behind
/// the gateway dropped a connection, when the next may begin.
pub(super) struct Starting {
    pub(super) now: usize,
    /// [`STARTS`], halved each time a server drops a connection, one more per login.
    pub(super) may: usize,
    /// Set once a server dropped a connection: from then on a start waits [`START_GAP`] after
    /// the one before ended.
    pub(super) paced: bool,
    pub(super) next: Option<Instant>,
}

/// How long a start waits after the one before ended, once a server behind the gateway dropped
/// a connection: sshd lets a connection out of its `MaxStartups` count a moment after the
/// client sees its login, and a start in that moment is dropped again (at `1:100:1`, where one
/// unauthenticated connection is all it takes, a server could be dropped six times in a row).
const START_GAP: Duration = Duration::from_millis(100);

impl Hub {
    /// Waits for a turn to start a server through this gateway: at most [`STARTS`] at once,
    /// fewer once servers dropped connections (see [`Hub::dropped`]).
    pub(in crate::ssh) fn start(self: &Arc<Self>) -> Start {
        let mut starting = self.starting.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        loop {
            let wait = starting.next.map(|next| next.saturating_duration_since(Instant::now()));
            match wait {
                _ if starting.now >= starting.may => {
                    starting = self.started.wait(starting).unwrap_or_else(|poisoned| poisoned.into_inner());
                }
                Some(wait) if !wait.is_zero() => {
                    let waited = self.started.wait_timeout(starting, wait);
                    starting = waited.unwrap_or_else(|poisoned| poisoned.into_inner()).0;
                }
                _ => break,
            }
        }
        starting.now += 1;
        Start(self.clone())
    }

    /// A server behind the gateway closed a connection before its handshake ended (its
    /// `MaxStartups`, most often): half as many start at once from now on, at least one, and
    /// each [`START_GAP`] after the one before.
    pub(in crate::ssh) fn dropped(&self) {
        let mut starting = self.starting.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        starting.may = (starting.may / 2).max(1);
        starting.paced = true;
    }

    /// A server behind the gateway logged in: one more may start at once, up to [`STARTS`].
    pub(in crate::ssh) fn logged_in(&self) {
        let mut starting = self.starting.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        starting.may = (starting.may + 1).min(STARTS);
    }
}
