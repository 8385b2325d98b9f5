//! Real local users for the tests that need another account than root's: a deploy user with
//! its own login shell, and "mallory", another local user of the server who tries what any
//! local user can (real servers are reached as a user that is not root).
//!
//! [`LocalUser`] lives in the library's test harness (`xtask_deploy::loopback::user`), which the
//! benchmark shares; its guard kills the user's processes and removes the account on drop.

use std::path::{Path, PathBuf};

pub use xtask_deploy::loopback::user::LocalUser;

/// The login shells a deploy user may have, each with its path when it is installed here.
/// `.ci/install-deps` installs zsh, fish and tcsh (which is also `csh` on Debian).
pub fn login_shells() -> Vec<(&'static str, Option<PathBuf>)> {
    ["sh", "bash", "dash", "zsh", "fish", "tcsh", "csh"]
        .into_iter()
        .map(|name| {
            let found = ["/bin", "/usr/bin"].iter().map(|dir| Path::new(dir).join(name)).find(|path| path.exists());
            (name, found)
        })
        .collect()
}
