//! What a deploy stopped by a signal leaves on the servers, as far as the deployer knows: the
//! words of its error. The deployer runs nothing more there: its connections are cut (see
//! [`crate::interrupt`]), and each server cleans up when it sees its connection close, as for a
//! deployer that died. Its lock keeper removes the unfinished release, goes back from a release
//! switched to and not confirmed, and releases the lock.

use crate::interrupt::Signal;
use crate::report::ServerStatus;
use crate::Error;

use super::Walk;

/// What an interrupted deploy left when no server had made its release: nothing but the lock.
pub(crate) const UNCHANGED: &str =
    ": no server was changed (a server this deploy locked releases the lock when it sees the connection close)";

impl Walk<'_> {
    /// The error of a deploy that `signal` stopped in its steps or, with `confirmed` (the
    /// servers whose keeper answered), while it confirmed the release.
    pub(super) fn interrupted(&self, signal: Signal, confirmed: Option<&[String]>) -> Error {
        let release = &self.release.name;
        let live: Vec<String> = self
            .reports
            .iter()
            .filter(|report| report.status == ServerStatus::Published)
            .map(|report| report.server.clone())
            .collect();
        // A publish cut short may have switched before its output said so.
        let maybe = &self.cut_in_publish;
        let goes_back = format!(
            "goes back by itself to the release it had when it sees the connection close (it marks {release} \
             bad, runs the `after_publish` hooks again for the release it went back to with ROLLBACK=1, then \
             releases the lock; one with no earlier release keeps {release}, marked bad)"
        );
        let releases = "`cargo xtask releases` shows where each is";
        let state = match confirmed {
            _ if live.is_empty() && maybe.is_empty() && !self.prepared => UNCHANGED.to_string(),
            _ if live.is_empty() && maybe.is_empty() => format!(
                ": no server switched `current`; each server removes the unfinished release {release} and releases \
                 the lock when it sees the connection close"
            ),
            Some(confirmed) => {
                let unknown: Vec<&String> = live.iter().filter(|server| !confirmed.contains(server)).collect();
                let taken = match confirmed.is_empty() {
                    true => String::new(),
                    false => format!("it is confirmed on {}; ", confirmed.join(", ")),
                };
                format!(
                    " while release {release} was confirmed: {taken}whether {} took the confirmation is not known; \
                     one that did not {goes_back}. {releases}",
                    unknown.iter().map(|server| server.as_str()).collect::<Vec<_>>().join(", ")
                )
            }
            None => {
                let went = match (live.is_empty(), maybe.is_empty()) {
                    (false, true) => format!("after release {release} went live on {}", live.join(", ")),
                    (false, false) => format!(
                        "after release {release} went live on {}, and perhaps on {}",
                        live.join(", "),
                        maybe.join(", ")
                    ),
                    _ => {
                        format!("while release {release} was published: it may have gone live on {}", maybe.join(", "))
                    }
                };
                let others = match live.len() + maybe.len() == self.reports.len() {
                    true => "",
                    false => {
                        "; the other servers did not switch: each removes its unfinished release, if any, and \
                              releases the lock"
                    }
                };
                // Cut in the batch that confirms too (one server, its last): it may have.
                let unless = match self.confirming {
                    true => ", unless it confirmed the release before it saw the connection close (the command it \
                             was running ends with the confirmation)",
                    false => "",
                };
                format!(" {went}, unconfirmed: a server where it is live {goes_back}{unless}{others}. {releases}")
            }
        };
        Error::Interrupted { signal, state }
    }
}
