//! Which steps of a plan go to a server together: consecutive remote steps as one remote
//! command (a batch, see [`super::batch_script`]), every other step on its own. Pure.

use std::ops::Range;

use super::{Action, Phase, Step};

/// The steps of `steps` in the order they run when the deploy works on `servers` servers at
/// once: each range is a run of consecutive [`Action::Remote`] steps, sent to each server as
/// one command, or a single step of another kind. With several servers, publish runs alone:
/// every server is ready before any switches, and every server has switched before any
/// `after_publish` hook runs. With one, nothing waits for another server, so publish joins the
/// remote steps around it.
pub fn batches(steps: &[Step], servers: usize) -> Vec<Range<usize>> {
    let several = servers > 1;
    let mut batches = Vec::new();
    let mut start = 0;
    while start < steps.len() {
        let mut end = start + 1;
        if matches!(steps[start].action, Action::Remote(_)) {
            while end < steps.len()
                && matches!(steps[end].action, Action::Remote(_))
                && !(several && (steps[end].phase == Phase::Publish || steps[end - 1].phase == Phase::Publish))
            {
                end += 1;
            }
        }
        batches.push(start..end);
        start = end;
    }
    batches
}

#[cfg(test)]
mod tests;
