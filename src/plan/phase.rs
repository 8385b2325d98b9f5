//! [`Phase`]: when in a deploy a step runs. Its name is printed (`Running after_update: ...`)
//! and is the `phase` of the `running` and `output` events of `--json`.

use std::fmt;

/// When in a deploy a step runs, in the order of a deploy (Capistrano's hook names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// A `build` command, here, before any server is locked.
    Build,
    /// The build output checked and laid over the commit, here.
    Package,
    /// The build output's binaries checked against every server.
    Check,
    /// The `before_update` hooks.
    BeforeUpdate,
    /// The push of the commit to every server.
    Push,
    /// The release made on every server, not yet current.
    Prepare,
    /// The `services`' unit files written (or, in system scope, checked) before the switch.
    Units,
    /// The `after_update` hooks.
    AfterUpdate,
    /// The `before_publish` hooks.
    BeforePublish,
    /// The switch of `current`: a failure before it discards the release.
    Publish,
    /// The `services` restarted from the new release and watched until they settle.
    Restart,
    /// The `after_publish` hooks (they restart what `services` does not cover).
    AfterPublish,
    /// The health check, after the `after_publish` hooks.
    Healthcheck,
    /// The `on_failure` hooks, when the deploy failed.
    OnFailure,
}

impl Phase {
    /// The phase's name, as printed and in the JSON events (`before_update`, `healthcheck`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Build => "build",
            Phase::Package => "package",
            Phase::Check => "check",
            Phase::BeforeUpdate => "before_update",
            Phase::Push => "push",
            Phase::Prepare => "prepare",
            Phase::Units => "units",
            Phase::AfterUpdate => "after_update",
            Phase::BeforePublish => "before_publish",
            Phase::Publish => "publish",
            Phase::Restart => "restart",
            Phase::AfterPublish => "after_publish",
            Phase::Healthcheck => "healthcheck",
            Phase::OnFailure => "on_failure",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Phase {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}
