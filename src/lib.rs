//! xtask-deploy: Capistrano-style deploys over SSH for Rust repositories.
//!
//! The flow follows the modules: [`config`] reads `[package.metadata.deploy]`, `plan` decides
//! what runs where (pure, no I/O), `ssh` and `transport` do the talking, `run` walks the
//! plan over the servers and reports [`report::Event`]s; `manage` (rollback, releases,
//! unlock) and `check` (deploy-check) are the other commands, and all of them reach, lock and
//! fan out over the servers through `fleet`. [`Error`] and [`exit`] say what failed and how
//! the process ends. `loopback` starts a throwaway `sshd`
//! on 127.0.0.1 for the demo, the benchmark and the tests. `submodules` finds what else a
//! commit needs pushed. `interrupt` stops a command promptly on SIGINT or SIGTERM. `cli` (the
//! default `cli` feature) is the command line over all of it: clap types an xtask flattens into
//! its own, and the status lines and JSON events.

// Every public item of the API has docs; the inside that `testkit` makes public is not API.
#![cfg_attr(not(feature = "testkit"), deny(missing_docs))]

// The public API: the configuration, the commands with their options and reports, the events
// they report, the errors and exit codes, and the command line. `public-api.txt` lists it
// (`.ci/public-api` compares it in CI).
#[cfg(feature = "cli")]
pub mod cli;
pub mod config;
pub mod report;

pub use check::{run_checks, CheckReport, CHECKS};
pub use config::Config;
pub use error::{exit, Error};
pub use interrupt::Signal;
pub use manage::{releases, rollback, unlock, unmark};
pub use plan::{DryRun, Phase, PlannedStep, RollbackTo, ServerPlan};
pub use report::{DeployReport, Event, Reporter};
pub use run::{deploy, dry_run::dry_run, setup, DeployOptions};
pub use services::ServiceStatus;

/// Modules of the crate's inside: private to the crate, and public with the `testkit` feature
/// (for this repository's own integration tests, fuzz targets, demo and benchmark; not part of
/// the API, and may change in any release).
macro_rules! inside {
    ($($(#[$attr:meta])* $name:ident;)*) => {$(
        $(#[$attr])*
        #[cfg(feature = "testkit")]
        pub mod $name;
        $(#[$attr])*
        #[cfg(not(feature = "testkit"))]
        mod $name;
    )*};
}

inside! {
    binaries;
    build_output;
    check;
    error;
    fleet;
    interrupt;
    local;
    manage;
    plan;
    protocol;
    run;
    services;
    shell;
    ssh;
    submodules;
    transport;
}

#[cfg(test)]
mod layers;

// The test harness: only with the `testkit` feature.
#[cfg(feature = "testkit")]
pub mod bench;
#[cfg(feature = "testkit")]
pub mod container;
#[cfg(feature = "testkit")]
pub mod demo;
#[cfg(feature = "testkit")]
pub mod loopback;
#[cfg(feature = "testkit")]
pub mod relay;
