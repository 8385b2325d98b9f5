//! While the build runs: every server reached, and what it runs read (without the lock, without
//! changing anything), so that a deploy of the commit every server already runs stops its
//! build and ends at once, and the connections opened meanwhile serve the lock: connecting
//! costs the deploy nothing more than the build already takes.

use std::time::{Duration, Instant};

use crate::config::Config;
use crate::fleet::never_recording;
use crate::fleet::parallel::each;
use crate::local::Cancel;
use crate::plan;
use crate::report::Quiet;
use crate::ssh::Connection;

/// What the probe found.
#[derive(Default)]
pub(super) struct Probed {
    /// Per server, in the config's order: its connection and how long opening it took, or
    /// `None` when it could not be opened (the lock tries again, and says why).
    pub(super) connections: Vec<Option<(Connection, Duration)>>,
    /// The release `current` names on the first server, when every server runs the commit and
    /// is at rest (current, not marked bad, no lock, no switch left unconfirmed).
    pub(super) current: Option<String>,
}

/// Reaches every server (`parallel` at a time) and reads its state; when every one runs `sha`
/// and is at rest (no lock held, no switch left unconfirmed), `cancel`s the build. A server that
/// cannot be reached or read just leaves the deploy to go on as without the probe.
pub(super) fn probe(config: &Config, sha: &str, parallel: usize, cancel: &Cancel) -> Probed {
    let servers = config.servers.iter().collect();
    let reached = each(servers, parallel, &mut Quiet, |server, _| {
        // A host key `accept-new` would record is recorded (and said) by the lock's connection.
        let config = never_recording(&config.on(server));
        let started = Instant::now();
        let connection = Connection::open(&config, server).ok()?;
        let elapsed = started.elapsed();
        let state = connection.run(&plan::inspect_script(&config)).ok().map(|stdout| plan::parse_state(&stdout));
        Some(((connection, elapsed), state))
    });
    // Only a server at rest: another deploy holding the lock (alive or not) may still go back,
    // and a switch nobody confirmed is undone by the next lock.
    let at_rest_on = |state: &plan::RemoteState| {
        state.is_current_and_good(sha)
            && state.holder.is_empty()
            && state.stale.is_empty()
            && state.unconfirmed.is_none()
    };
    let all_current = reached
        .iter()
        .all(|server| server.as_ref().and_then(|(_, state)| state.as_ref()).is_some_and(at_rest_on));
    let current = match all_current {
        true => reached
            .first()
            .and_then(|server| server.as_ref()?.1.as_ref()?.current_release().map(str::to_string)),
        false => None,
    };
    if current.is_some() {
        cancel.cancel();
    }
    Probed { connections: reached.into_iter().map(|server| server.map(|(connection, _)| connection)).collect(), current }
}
