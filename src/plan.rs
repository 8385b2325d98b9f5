//! Deciding what runs on each server: the remote scripts of every phase, the release name and
//! the `revisions.log` line.
//!
//! **Architecture Invariant:** this module does no I/O. It turns a [`Config`] and plain values
//! into [`RemoteScript`]s, so every script can be read, printed and unit-tested without a server.

use time::{format_description::FormatItem, macros::format_description, OffsetDateTime, PrimitiveDateTime};

use crate::config::Config;
use crate::shell::{quote, RemoteScript};

/// Release directory names: a UTC timestamp, as Capistrano makes them.
const RELEASE_FORMAT: &[FormatItem<'static>] = format_description!("[year][month][day][hour][minute][second]");

/// Directory under `deploy_to` where xtask-deploy keeps its own bookkeeping (daemon pid files).
pub const STATE_DIR: &str = ".xtask-deploy";

/// Exit status of a remote script when `git` is missing on the server.
pub const EXIT_NO_GIT: i32 = 3;
/// Exit status of a remote script when `deploy_to` has not been set up.
pub const EXIT_NOT_SET_UP: i32 = 4;

/// One deploy's release, the same on every server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// The release directory name under `releases/`.
    pub name: String,
    /// The full commit SHA that is released.
    pub sha: String,
    /// The branch (or revision) name written to `revisions.log`.
    pub branch: String,
    /// Who deployed, written to `revisions.log`.
    pub user: String,
}

/// A submodule's place in a release: extracted at `path` from the server's bare repository
/// `repo` (relative to `deploy_to`) at `commit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmoduleRelease {
    /// Path in the release, from its root (`libs/middle/vendor/inner`).
    pub path: String,
    /// The bare repository on the server, relative to `deploy_to` (`repo/modules/middle`).
    pub repo: String,
    /// The full SHA recorded for the submodule.
    pub commit: String,
}

/// What the preflight script found on a server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteState {
    /// Release directory names, sorted oldest first.
    pub releases: Vec<String>,
    /// Where `current` points, when it exists.
    pub current: Option<String>,
    /// `git --version` on the server.
    pub git_version: String,
    /// Pids of daemons left by an earlier deploy that were stopped.
    pub reaped: Vec<String>,
}

/// `deploy-setup`: creates `releases/`, `shared/` and the bare `repo/`; running it again changes
/// nothing. Prints `created <what>` for each thing it made.
pub fn setup_script(config: &Config) -> RemoteScript {
    let text = format!(
        r#"set -eu
d={deploy_to}
{require_git}
for dir in "$d" "$d/releases" "$d/shared" "$d/{STATE_DIR}"; do
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
"#,
        deploy_to = quote(&config.deploy_to),
        require_git = REQUIRE_GIT,
    );
    RemoteScript { name: "deploy-setup", text }
}

/// Checks that setup was done, stops daemons orphaned by an earlier deploy, and reports the
/// existing releases (`release <name>`), `current <target>` and `git <version>`.
pub fn preflight_script(config: &Config) -> RemoteScript {
    let text = format!(
        r#"set -u
d={deploy_to}
{require_git}
if [ ! -d "$d/releases" ] || [ "$(git --git-dir="$d/repo" rev-parse --is-bare-repository 2>/dev/null)" != true ]; then
  echo "\`$d\` is not set up for deploys: run \`cargo xtask deploy-setup\` first" >&2
  exit {EXIT_NOT_SET_UP}
fi
mkdir -p "$d/{STATE_DIR}"
for pidfile in "$d/{STATE_DIR}"/daemon.*.pid; do
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  case "$pid" in ''|*[!0-9]*) rm -f "$pidfile"; continue ;; esac
  cmd=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null || true)
  case "$cmd" in
    *"git daemon"*"$d/repo"*)
      # Only a daemon whose watching script is gone (re-parented to init) is stale.
      # The parent pid is the second field after the command name in /proc/<pid>/stat.
      stat=$(cat "/proc/$pid/stat" 2>/dev/null || true)
      set -- ${{stat##*) }}
      if [ "${{2:-}}" = 1 ]; then kill "$pid" 2>/dev/null; echo "reaped $pid"; rm -f "$pidfile"; fi ;;
    *) rm -f "$pidfile" ;;
  esac
done
echo "git $(git --version)"
for r in "$d"/releases/*; do [ -d "$r" ] && [ ! -L "$r" ] && echo "release ${{r##*/}}"; done
if [ -L "$d/current" ]; then echo "current $(readlink "$d/current")"; fi
exit 0
"#,
        deploy_to = quote(&config.deploy_to),
        require_git = REQUIRE_GIT,
    );
    RemoteScript { name: "preflight", text }
}

/// Reads the output of [`preflight_script`].
pub fn parse_preflight(stdout: &str) -> RemoteState {
    let mut state = RemoteState::default();
    for line in stdout.lines() {
        match line.split_once(' ') {
            Some(("release", name)) if is_release_name(name) => state.releases.push(name.to_string()),
            Some(("current", target)) => state.current = Some(target.to_string()),
            Some(("git", version)) => state.git_version = version.to_string(),
            Some(("reaped", pid)) => state.reaped.push(pid.to_string()),
            _ => {}
        }
    }
    state.releases.sort();
    state
}

/// Runs a `git daemon` for this deploy in the foreground of its exec channel: it listens on
/// 127.0.0.1:`port` only, serves only `repo/`, and accepts pushes. It dies when the channel's
/// stdin reaches EOF (the deployer finished, died or lost its connection) and in any case after
/// `max_seconds`. Its pid is kept in a pid file that a later preflight reaps if it was orphaned.
/// It also serves each of `submodule_repos` (relative to `deploy_to`), creating them if needed.
pub fn daemon_script(config: &Config, port: u16, max_seconds: u64, submodule_repos: &[&str]) -> RemoteScript {
    let mut served = String::from("\"$d/repo\"");
    let mut create = String::new();
    for repo in submodule_repos {
        served.push_str(&format!(" \"$d\"/{}", quote(repo)));
        create.push_str(&format!(
            "[ -d \"$d\"/{repo} ] || git init --quiet --bare \"$d\"/{repo} || exit 1\n",
            repo = quote(repo)
        ));
    }
    let text = format!(
        r#"set -u
d={deploy_to}
pidfile="$d/{STATE_DIR}/daemon.{port}.pid"
{create}exec 3<&0
timeout {max_seconds} git daemon --verbose --listen=127.0.0.1 --port={port} --strict-paths \
  --export-all --enable=receive-pack --informative-errors --init-timeout=30 --timeout={max_seconds} \
  {served} </dev/null &
daemon=$!
echo "$daemon" > "$pidfile"
( cat <&3 >/dev/null 2>&1; kill "$daemon" 2>/dev/null ) >/dev/null 2>&1 &
watchdog=$!
exec 3<&-
wait "$daemon"
status=$?
kill "$watchdog" 2>/dev/null
rm -f "$pidfile"
exit $status
"#,
        deploy_to = quote(&config.deploy_to),
    );
    RemoteScript { name: "git daemon", text }
}

/// Makes `releases/<name>` from the pushed commit (never from a branch name), writes `REVISION`,
/// switches `current` atomically, appends to `revisions.log` and removes releases beyond
/// `keep_releases`. If anything fails before `current` moves, the unfinished release is removed.
/// Each of `submodules` is extracted from its own bare repository into its path.
pub fn release_script(config: &Config, release: &Release, submodules: &[SubmoduleRelease]) -> RemoteScript {
    let mut extract_submodules = String::new();
    for submodule in submodules {
        extract_submodules.push_str(&format!(
            "mkdir -p \"releases/$rel\"/{path}\n\
             {{ git --git-dir={repo} archive --format=tar {commit} || echo failed > \"$failed\"; }} \
             | tar -x -f - -C \"releases/$rel\"/{path}\n",
            path = quote(&submodule.path),
            repo = quote(&submodule.repo),
            commit = quote(&submodule.commit),
        ));
    }
    let text = format!(
        r#"set -eu
d={deploy_to}
rel={name}
sha={sha}
cd "$d"
if [ -e "releases/$rel" ]; then echo "release \`$rel\` already exists in \`$d/releases\`" >&2; exit 1; fi
if ! git --git-dir=repo cat-file -e "$sha^{{commit}}" 2>/dev/null; then
  echo "commit \`$sha\` is not in \`$d/repo\`: the push did not arrive" >&2; exit 1
fi
mkdir "releases/$rel"
trap 'rm -rf "releases/$rel"' EXIT
failed=$(mktemp)
{{ git --git-dir=repo archive --format=tar "$sha" || echo "git archive failed" > "$failed"; }} | tar -x -f - -C "releases/$rel"
{extract_submodules}if [ -s "$failed" ]; then rm -f "$failed"; echo "could not extract \`$sha\` into \`releases/$rel\`" >&2; exit 1; fi
rm -f "$failed"
printf '%s\n' "$sha" > "releases/$rel/REVISION"
rm -f releases/current
ln -s "$d/releases/$rel" releases/current
mv -T releases/current current
trap - EXIT
printf '%s\n' {log_line} >> revisions.log
keep={keep}
current=$(basename "$(readlink current)")
count=$(ls -1 releases | grep -cE '^[0-9]{{14}}$' || true)
if [ "$count" -gt "$keep" ]; then
  ls -1 releases | grep -E '^[0-9]{{14}}$' | sort | head -n "$((count - keep))" | while read -r old; do
    if [ "$old" != "$current" ]; then rm -rf "releases/$old"; echo "removed $old"; fi
  done
fi
"#,
        deploy_to = quote(&config.deploy_to),
        name = quote(&release.name),
        sha = quote(&release.sha),
        log_line = quote(&revision_log_line(release)),
        keep = config.keep_releases,
    );
    RemoteScript { name: "release", text }
}

/// Capistrano 3's `revisions.log` line for a deploy.
pub fn revision_log_line(release: &Release) -> String {
    format!("Branch {} (at {}) deployed as release {} by {}", release.branch, release.sha, release.name, release.user)
}

/// Chooses the release name: the UTC time `now`, or one second after the newest existing
/// release when that is later, so names stay unique and sort in deploy order.
pub fn release_name<'a>(now: OffsetDateTime, existing: impl IntoIterator<Item = &'a str>) -> String {
    let now = PrimitiveDateTime::new(now.date(), now.time()).replace_nanosecond(0).expect("0 is a valid nanosecond");
    let newest = existing.into_iter().filter_map(|name| PrimitiveDateTime::parse(name, RELEASE_FORMAT).ok()).max();
    let chosen = match newest {
        Some(newest) if newest >= now => newest + time::Duration::SECOND,
        _ => now,
    };
    chosen.format(RELEASE_FORMAT).expect("a date formats")
}

/// Whether `name` is a release directory name (14 digits), as Capistrano's cleanup checks.
pub fn is_release_name(name: &str) -> bool {
    name.len() == 14 && name.bytes().all(|b| b.is_ascii_digit())
}

/// Refuses to go on without git on the server, with the fix.
const REQUIRE_GIT: &str = r#"if ! command -v git >/dev/null 2>&1; then
  echo "git is not installed on the server: install it (for example \`apt-get install git\`)" >&2
  exit 3
fi"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Server, SshOptions};
    use std::path::PathBuf;
    use time::macros::datetime;

    fn config(deploy_to: &str) -> Config {
        Config {
            manifest_path: PathBuf::from("/app/Cargo.toml"),
            application: "hello".into(),
            deploy_to: deploy_to.into(),
            keep_releases: 2,
            revision: "HEAD".into(),
            build: vec![],
            submodules: true,
            servers: vec![Server { host: "h".into(), port: 22, user: "u".into() }],
            ssh: SshOptions { identity: None, known_hosts: PathBuf::from("/k"), connect_timeout: 10 },
        }
    }

    fn release() -> Release {
        Release {
            name: "20261125041638".into(),
            sha: "0123456789abcdef0123456789abcdef01234567".into(),
            branch: "main".into(),
            user: "alice".into(),
        }
    }

    fn submodule() -> SubmoduleRelease {
        SubmoduleRelease {
            path: "libs/$(evil)".into(),
            repo: "repo/modules/it's".into(),
            commit: "89abcdef0123456789abcdef0123456789abcdef".into(),
        }
    }

    #[test]
    fn submodules_are_served_created_and_extracted_quoted() {
        let daemon = daemon_script(&config("/srv/x"), 40123, 900, &["repo/modules/a b"]);
        assert!(daemon
            .text
            .contains("[ -d \"$d\"/'repo/modules/a b' ] || git init --quiet --bare \"$d\"/'repo/modules/a b'"));
        assert!(daemon.text.contains("\"$d/repo\" \"$d\"/'repo/modules/a b' </dev/null &"));
        let release = release_script(&config("/srv/x"), &release(), &[submodule()]);
        assert!(release.text.contains("mkdir -p \"releases/$rel\"/'libs/$(evil)'\n"), "{}", release.text);
        let archive = format!(
            "git --git-dir={} archive --format=tar 89abcdef0123456789abcdef0123456789abcdef",
            quote("repo/modules/it's")
        );
        assert!(release.text.contains(&archive), "{}", release.text);
        let extract = release.text.find("libs/$(evil)").unwrap();
        assert!(extract < release.text.find("if [ -s \"$failed\" ]").unwrap());
    }

    #[test]
    fn release_name_is_utc_timestamp_and_stays_unique() {
        let now = datetime!(2026-11-25 04:16:38.5 UTC);
        assert_eq!(release_name(now, []), "20261125041638");
        assert_eq!(release_name(now, ["20261125041000"]), "20261125041638");
        assert_eq!(release_name(now, ["20261125041638"]), "20261125041639");
        assert_eq!(release_name(now, ["20261125041700", "junk"]), "20261125041701");
    }

    #[test]
    fn revision_log_line_uses_capistrano_wording() {
        assert_eq!(
            revision_log_line(&release()),
            "Branch main (at 0123456789abcdef0123456789abcdef01234567) deployed as release 20261125041638 by alice"
        );
    }

    #[test]
    fn preflight_output_is_parsed() {
        let state = parse_preflight(
            "git git version 2.47.3\nrelease 20261125041639\nrelease 20261125041638\nrelease notes\n\
             current /srv/x/releases/20261125041639\nreaped 42\n",
        );
        assert_eq!(state.releases, vec!["20261125041638", "20261125041639"]);
        assert_eq!(state.current.as_deref(), Some("/srv/x/releases/20261125041639"));
        assert_eq!(state.git_version, "git version 2.47.3");
        assert_eq!(state.reaped, vec!["42"]);
    }

    #[test]
    fn every_script_quotes_a_hostile_deploy_to() {
        let hostile = "/srv/it's $(rm -rf ~) `x`";
        let cfg = config(hostile);
        for script in [
            setup_script(&cfg),
            preflight_script(&cfg),
            daemon_script(&cfg, 40000, 600, &["repo/modules/it's"]),
            release_script(&cfg, &release(), &[submodule()]),
        ] {
            assert!(script.text.contains(&format!("d={}\n", quote(hostile))), "{}", script.name);
            // The value appears once, inside that quoted assignment, and nowhere else.
            assert_eq!(script.text.matches("rm -rf ~").count(), 1, "{}", script.name);
        }
    }

    #[test]
    fn daemon_listens_on_loopback_only_and_serves_one_repo() {
        let script = daemon_script(&config("/srv/x"), 40123, 900, &[]);
        assert!(script.text.contains("--listen=127.0.0.1 --port=40123 --strict-paths"));
        assert!(script.text.contains("--enable=receive-pack"));
        assert!(script.text.contains("timeout 900 git daemon"));
        assert!(script.text.contains("\"$d/repo\""));
    }

    #[test]
    fn release_is_made_from_the_sha_and_switched_atomically() {
        let script = release_script(&config("/srv/x"), &release(), &[]);
        let text = &script.text;
        assert!(text.contains("sha=0123456789abcdef0123456789abcdef01234567\n"));
        assert!(text.contains("archive --format=tar \"$sha\""));
        let link = text.find("ln -s").unwrap();
        let switch = text.find("mv -T releases/current current").unwrap();
        let log = text.find(">> revisions.log").unwrap();
        assert!(link < switch && switch < log);
        assert!(text.contains("keep=2\n"));
    }
}
