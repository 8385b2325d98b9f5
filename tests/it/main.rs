//! The library's integration tests, in one binary (each file a module, so the library is linked
//! once): stories against a real loopback sshd and real git, given a server and an app, when I
//! deploy, then the server holds X. `support` is the shared harness (the loopback sshd, the app
//! repository, local users), which `xtask/tests/it/` includes too.
//!
//! Run one module with `cargo test --test it safety::`, one test by its name.

mod support;

mod bastion;
mod ci_clones;
mod deploy;
mod disks;
mod dropbear;
mod fleet;
mod hostile_trees;
mod lifecycle;
mod partitions;
mod reuse;
mod safety;
mod services;
mod submodules;
mod systemd_host;
mod transport;
mod wire;
