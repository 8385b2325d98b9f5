//! The `xtask` binary as users and CI pipelines run it, against real loopback sshds, in one
//! test binary (each file a module): the command line, the fault matrix, many servers, the
//! lifecycle commands, the JSON stream and exit codes, the README against the code, and the dry
//! run's text as a snapshot.
//!
//! Run one module with `cargo test -p xtask --test it faults::`, one test by its name.

// The library's test harness, shared with `tests/it/`, whose tests use the parts these do not
// (local users, network namespaces, ...). `cli_support` holds what only these use.
#[path = "../../../tests/it/support/mod.rs"]
#[allow(dead_code, reason = "these tests use a part of it; `tests/it/`, which uses all of it, reports what is dead")]
mod support;

mod cli_support;

mod cli;
mod dry_run_text;
mod faults;
mod fleet;
mod lifecycle;
mod pipeline;
mod readme;
mod services;
