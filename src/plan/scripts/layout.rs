//! What `deploy_to` holds: `deploy-setup`, which makes it, and the snippets that check it
//! (git is there, setup was done) and report its state (releases, `current`, bad marks, the
//! unconfirmed release, each release's commit subject).

use crate::config::Config;
use crate::shell::RemoteScript;


/// `deploy-setup`: creates `releases/`, `shared/` (with `linked_dirs` and the parents of
/// `linked_files`) and the bare `repo/`; running it again changes nothing. Prints
/// `created <what>` for each thing it made. `repo/` (the whole history) and `.xtask-deploy/`
/// (the lock, its holder, the deploy's state) are made private to the deploy user, also when
/// they exist already; releases and `shared/` keep the user's umask, as the app reads them.
pub fn setup_script(config: &Config) -> RemoteScript {
    let mut shared: Vec<&str> = config.linked_dirs.iter().map(String::as_str).collect();
    shared.extend(config.linked_files.iter().filter_map(|file| file.rsplit_once('/').map(|(parent, _)| parent)));
    let header = crate::shell::header(&[("d", &config.deploy_to)]);
    let text = ["set -eu\n", &header, &crate::shell::arguments(&shared), super::REQUIRE, SETUP].concat();
    RemoteScript { name: "deploy-setup", text }
}

/// `deploy-setup`'s shell (see [`setup_script`]), with its header of what it expects.
const SETUP: &str = include_str!("sh/setup.sh");

/// What the server's platform is (for checking the build output's binaries), when the deploy
/// has `artifacts`; nothing otherwise (it starts two processes).
pub(super) fn platform_probe(config: &Config) -> String {
    if config.artifacts.is_empty() {
        String::new()
    } else {
        format!("{}\n", crate::binaries::PLATFORM_PROBE.trim_end())
    }
}

