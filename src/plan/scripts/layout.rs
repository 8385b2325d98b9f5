//! What `deploy_to` holds: `deploy-setup`, which makes it, and the snippets that check it
//! (git is there, setup was done) and report its state (releases, `current`, bad marks, the
//! unconfirmed release, each release's commit subject).

use crate::config::Config;
use crate::shell::{quote, RemoteScript};

use super::STATE_DIR;

/// `deploy-setup`: creates `releases/`, `shared/` (with `linked_dirs` and the parents of
/// `linked_files`) and the bare `repo/`; running it again changes nothing. Prints
/// `created <what>` for each thing it made. `repo/` (the whole history) and `.xtask-deploy/`
/// (the lock, its holder, the deploy's state) are made private to the deploy user, also when
/// they exist already; releases and `shared/` keep the user's umask, as the app reads them.
pub fn setup_script(config: &Config) -> RemoteScript {
    let mut dirs = vec![
        "\"$d\"".to_string(),
        "\"$d/releases\"".to_string(),
        "\"$d/shared\"".to_string(),
        format!("\"$d/{STATE_DIR}\""),
    ];
    for dir in &config.linked_dirs {
        dirs.push(format!("\"$d/shared\"/{}", quote(dir)));
    }
    for file in &config.linked_files {
        if let Some((parent, _)) = file.rsplit_once('/') {
            dirs.push(format!("\"$d/shared\"/{}", quote(parent)));
        }
    }
    let text = format!(
        r#"set -eu
d={deploy_to}
{REQUIRE_GIT}
for dir in {dirs}; do
  if [ ! -d "$dir" ]; then mkdir -p "$dir"; echo "created $dir"; fi
done
if [ -e "$d/repo" ]; then
  if [ "$(git --git-dir="$d/repo" rev-parse --is-bare-repository 2>/dev/null)" != true ]; then
    echo "\`$d/repo\` exists but is not a bare git repository: move it away and run deploy-setup again" >&2
    exit 1
  fi
else
  git init --quiet --bare "$d/repo"
  echo "created $d/repo"
fi
{PRIVATE}
"#,
        deploy_to = quote(&config.deploy_to),
        dirs = dirs.join(" "),
    );
    RemoteScript { name: "deploy-setup", text }
}

/// What the server's platform is (for checking the build output's binaries), when the deploy
/// has `artifacts`; nothing otherwise (it starts two processes).
pub(super) fn platform_probe(config: &Config) -> String {
    if config.artifacts.is_empty() {
        String::new()
    } else {
        format!("{}\n", crate::binaries::PLATFORM_PROBE.trim_end())
    }
}

/// Makes `repo/` and `.xtask-deploy/` the deploy user's alone (0700: no other local user may
/// read the history or the lock's holder); the preflight also passes the lock's `info` (0600).
/// One `chmod` for all: `go=` clears the group's and others' bits and leaves the owner's.
pub(super) const PRIVATE: &str = concat!(r#"chmod go= "$d/repo" "$d/"#, state_dir!(), r#"""#);

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
