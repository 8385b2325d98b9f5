//! [`super::batches`] on plans written out by hand: no server, no configuration.

use super::*;
use crate::shell::RemoteScript;

fn remote(phase: Phase) -> Step {
    Step::new(phase, Action::Remote(RemoteScript { name: phase.as_str(), text: String::new() }))
}

fn local(phase: Phase) -> Step {
    Step::new(phase, Action::Local("make".into()))
}

/// A deploy's steps: check, a local hook, push, prepare, a remote hook, publish, a remote hook,
/// the health check.
fn deploy() -> Vec<Step> {
    vec![
        Step::new(Phase::Check, Action::CheckBinaries),
        local(Phase::BeforeUpdate),
        Step::new(Phase::Push, Action::Push),
        remote(Phase::Prepare),
        remote(Phase::AfterUpdate),
        remote(Phase::Publish),
        remote(Phase::AfterPublish),
        remote(Phase::Healthcheck),
    ]
}

#[test]
fn on_one_server_the_remote_steps_from_prepare_to_the_health_check_are_one_batch() {
    assert_eq!(batches(&deploy(), 1), [0..1, 1..2, 2..3, 3..8]);
}

#[test]
fn on_several_servers_publish_runs_alone() {
    assert_eq!(batches(&deploy(), 2), [0..1, 1..2, 2..3, 3..5, 5..6, 6..8]);
    assert_eq!(batches(&deploy(), 10), batches(&deploy(), 2));
}

#[test]
fn a_local_step_or_the_push_ends_a_batch() {
    let steps = vec![
        remote(Phase::BeforeUpdate),
        local(Phase::BeforeUpdate),
        remote(Phase::BeforeUpdate),
        Step::new(Phase::Push, Action::Push),
        remote(Phase::Prepare),
    ];
    assert_eq!(batches(&steps, 1), [0..1, 1..2, 2..3, 3..4, 4..5]);
}

#[test]
fn every_step_is_in_exactly_one_batch_in_order() {
    for servers in [0, 1, 3] {
        let ranges = batches(&deploy(), servers);
        let covered: Vec<usize> = ranges.iter().flat_map(|range| range.clone()).collect();
        assert_eq!(covered, (0..deploy().len()).collect::<Vec<_>>());
    }
    assert!(batches(&[], 2).is_empty());
}
