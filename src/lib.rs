//! xtask-deploy: Capistrano-style deploys over SSH for Rust repositories.
//!
//! The flow follows the modules: [`config`] reads `[package.metadata.deploy]`, [`plan`] decides
//! what runs where (pure, no I/O), [`ssh`] and [`transport`] do the talking, [`run`] walks the
//! plan over the servers and reports [`report::Event`]s; [`manage`] (rollback, releases,
//! unlock) and [`check`] (deploy-check) are the other commands, and all of them reach, lock and
//! fan out over the servers through [`fleet`]. [`Error`] and [`exit`] say what failed and how
//! the process ends. [`loopback`] starts a throwaway `sshd`
//! on 127.0.0.1 for the demo, the benchmark and the tests. [`submodules`] finds what else a
//! commit needs pushed. [`interrupt`] stops a command promptly on SIGINT or SIGTERM. `cli` (the
//! default `cli` feature) is the command line over all of it: clap types an xtask flattens into
//! its own, and the status lines and JSON events.

pub mod bench;
pub mod binaries;
pub mod build_output;
pub mod check;
#[cfg(feature = "cli")]
pub mod cli;
pub mod config;
pub mod demo;
mod error;
pub mod fleet;
pub mod interrupt;
pub mod local;
pub mod loopback;
pub mod manage;
pub mod plan;
pub mod relay;
pub mod report;
pub mod run;
pub mod shell;
pub mod ssh;
pub mod submodules;
pub mod transport;

pub use config::Config;
pub use error::{exit, Error};
pub use report::{DeployReport, Event, Reporter};
pub use run::{deploy, dry_run::dry_run, setup, DeployOptions};
