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
    let text = ["set -eu\n", &header, &crate::shell::arguments(&shared), REQUIRE_GIT, "\n", SETUP].concat();
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

/// Refuses to go on without git on the server, with the fix.
pub(in crate::plan) const REQUIRE_GIT: &str = concat!(
    r#"if ! command -v git >/dev/null 2>&1; then
  echo "git is not installed on the server: install it (for example \`apt-get install git\`)" >&2
  exit "#,
    exit_no_git!(),
    "\nfi"
);

/// Refuses to go on in a `deploy_to` that deploy-setup has not prepared: `releases/` and a bare
/// repository in `repo/` (its `HEAD`, `objects/` and `refs/` at the top, which a clone with a
/// work tree has under `.git/`), checked without starting git.
pub(in crate::plan) const REQUIRE_SETUP: &str = concat!(
    r#"if [ ! -d "$d/releases" ] || [ ! -f "$d/repo/HEAD" ] || [ ! -d "$d/repo/objects" ] || [ ! -d "$d/repo/refs" ]; then
  echo "\`$d\` is not set up for deploys: run \`cargo xtask deploy-setup\` first" >&2
  exit "#,
    exit_not_set_up!(),
    "\nfi"
);

/// Prints `unconfirmed <release>` for the release the
/// [`UNCONFIRMED`](crate::plan::confirm::UNCONFIRMED) marker names, if there is one.
pub(in crate::plan) const REPORT_UNCONFIRMED: &str = r#"if [ -f "$state/unconfirmed" ]; then
  { while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in release=*) echo "unconfirmed ${line#release=}" ;; esac
  done < "$state/unconfirmed"; } 2>/dev/null
fi"#;

/// Prints `subject <sha> <subject>` for the commit of each release that `repo/` has, with one
/// `git log` for all of them. Only a full SHA in `REVISION` is passed on (as an argument, never
/// as script text), so nothing read from the server becomes an option of git.
pub(super) const REPORT_SUBJECTS: &str = r#"set --
for r in "$d"/releases/*; do
  [ -d "$r" ] && [ ! -L "$r" ] || continue
  rev=
  { read -r rev < "$r/REVISION"; } 2>/dev/null || true
  case "$rev" in *[!0-9a-f]*) continue ;; esac
  case "${#rev}" in 40|64) set -- "$@" "$rev" ;; esac
done
if [ "$#" -gt 0 ]; then
  git --git-dir="$d/repo" log --no-walk=unsorted --ignore-missing --format='subject %H %s' "$@" -- 2>/dev/null || true
fi"#;

/// Prints `release <name> <sha>`, `current <target>` and `bad <name>` lines (needs
/// [`LOCK_HELPERS`](super::LOCK_HELPERS)).
pub(in crate::plan) const REPORT_STATE: &str = concat!(
    r#"for r in "$d"/releases/*; do
  [ -d "$r" ] && [ ! -L "$r" ] || continue
  rev=-
  { read -r rev < "$r/REVISION"; } 2>/dev/null || true
  echo "release ${r##*/} ${rev:--}"
done
if [ -L "$d/current" ]; then echo "current $(readlink "$d/current")"; fi
if [ -f "$d/"#,
    state_dir!(),
    r#"/bad" ]; then each_line "$d/"#,
    state_dir!(),
    r#"/bad" bad; fi"#
);
