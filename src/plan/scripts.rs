//! The remote scripts of every phase. Pure: a [`Config`] and plain values in, a quoted
//! [`RemoteScript`] out. Each script starts with `d=<deploy_to>` and uses `"$d"` after that.

use crate::config::{Cache, Config};
use crate::shell::{quote, RemoteScript};

use super::{LockInfo, Release, SubmoduleRelease};

/// Directory under `deploy_to` where xtask-deploy keeps its own state: the lock, daemon pid
/// files, the list of releases marked bad by a rollback.
pub const STATE_DIR: &str = ".xtask-deploy";
/// Exit status of a remote script when `git` is missing on the server.
pub const EXIT_NO_GIT: i32 = 3;
/// Exit status of a remote script when `deploy_to` has not been set up.
pub const EXIT_NOT_SET_UP: i32 = 4;
/// Exit status of the preflight when another deploy holds the lock.
pub const EXIT_LOCKED: i32 = 5;

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

/// Checks that setup was done, takes the deploy lock (`mkdir`, atomic) holding `lock`, stops
/// daemons orphaned by an earlier deploy, and reports the server's state (see
/// [`super::parse_state`]). When another deploy holds the lock it prints the holder as
/// `holder <key>=<value>` lines and exits [`EXIT_LOCKED`], changing nothing. A lock whose
/// holder's SSH connection is gone (the deployer was killed, or its connection cut) is stale:
/// it is taken over, and its holder printed as `stale <key>=<value>` lines.
///
/// The deploy is confirmed by a [`CONFIRM`](super::confirm::CONFIRM) line on the channel, which
/// the keeper acknowledges with [`CONFIRMED`](super::confirm::CONFIRMED). If the channel closes
/// while a release this deploy switched to is unconfirmed, the keeper goes back to the release
/// the server had and runs `restart_hooks` (the `after_publish` hooks) for it.
pub fn preflight_script(config: &Config, lock: &LockInfo, restart_hooks: &[&str]) -> RemoteScript {
    let text = format!(
        r#"set -u
d={deploy_to}
state="$d/{STATE_DIR}"
{REQUIRE_GIT}
{REQUIRE_SETUP}
[ -d "$state" ] || mkdir -p "$state"
{LOCK_HELPERS}
if ! mkdir -m 700 "$state/lock" 2>/dev/null; then
  if holder_alive; then
    each_line "$state/lock/info" holder
    exit {EXIT_LOCKED}
  fi
  # The holder's SSH connection is gone (it was killed or cut off): the lock is stale.
  each_line "$state/lock/info" stale
  rm -rf "$state/lock"
  if ! mkdir -m 700 "$state/lock" 2>/dev/null; then echo "holder user=another deploy, just now"; exit {EXIT_LOCKED}; fi
fi
printf '%s\n' {info} "connection=$PPID $(start_time "$PPID")" "keeper=$$ $(start_time "$$")" > "$state/lock/info"
# A server set up by an older version has them readable by every local user.
{PRIVATE} "$state/lock/info"
{STOP_RECEIVE_PACKS}
{REMOVE_UNFINISHED}
for pidfile in "$state"/daemon.*.pid; do
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  case "$pid" in ''|*[!0-9]*) rm -f "$pidfile"; continue ;; esac
  cmd=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null || true)
  case "$cmd" in
    *"git daemon"*"$d/repo"*|*"{CHECKED_GIT} daemon"*"$d/repo"*)
      # Only a daemon whose watching script is gone (re-parented to init) is stale.
      # The parent pid is the second field after the command name in /proc/<pid>/stat.
      stat=$(cat "/proc/$pid/stat" 2>/dev/null || true)
      set -- ${{stat##*) }}
      if [ "${{2:-}}" = 1 ]; then kill -KILL -"$pid" "$pid" 2>/dev/null; echo "reaped $pid"; rm -f "$pidfile"; fi ;;
    *) rm -f "$pidfile" ;;
  esac
done
# Goes back from the release the unconfirmed marker names, and restarts the one gone back to.
go_back_from_marker() {{
  release=""
  previous=""
  while IFS= read -r line; do
    case "$line" in release=*) release=${{line#release=}} ;; previous=*) previous=${{line#previous=}} ;; esac
  done < "$state/{unconfirmed}"
  user={user}
  go_back || true
  if [ "$went_back" = 1 ]; then
    rel=$previous
{restart}  fi
}}
# A release an earlier deploy switched to and never confirmed, whose keeper died (the server
# rebooted) before it could go back: nobody checked it. Go back now, before anything else.
if [ -f "$state/{unconfirmed}" ]; then
  go_back_from_marker
  rm -f "$state/{unconfirmed}"
fi
{REPORT_STATE}
{probe}echo {READY}
# The deploy holds the lock while this channel is open; its stdin closes when the deploy ends,
# fails, is interrupted or killed, or loses its connection. Then the lock is released.
while read -r line; do
  if [ "$line" = {confirm} ]; then
    if has_line {token} "$state/{unconfirmed}"; then rm -f "$state/{unconfirmed}"; fi
    echo {confirmed}
    # Confirmed: the oldest releases beyond `keep` go now (never the current one). Release
    # names are 14 digits, so the shell's sorted glob lists them oldest first.
    keep={keep}
    count=0
    for r in "$d"/releases/{release_glob}; do [ -d "$r" ] && count=$((count + 1)); done
    excess=$((count - keep))
    now=$(readlink "$d/current" 2>/dev/null || true)
    # Releases marked bad go first: they must not push out the good ones a rollback needs.
    for pass in bad any; do
      for r in "$d"/releases/{release_glob}; do
        [ "$excess" -gt 0 ] || break
        [ -d "$r" ] && [ "${{now##*/}}" != "${{r##*/}}" ] || continue
        if [ "$pass" = bad ] && ! has_line "${{r##*/}}" "$state/bad"; then continue; fi
        excess=$((excess - 1))
        rm -rf "$r"; echo "removed ${{r##*/}}"
      done
    done
    # Marks of the releases just removed go with them.
    unmark=""
{rewrite_marks}
  fi
done
# Nobody reads this channel any more (the deployer may be gone): a write to it would raise
# SIGPIPE and kill this shell before the lock is released.
exec >/dev/null 2>&1
if has_line {token} "$state/lock/info"; then
{STOP_RECEIVE_PACKS}
  # A step of this deploy may still be extracting into its release: its own watchdog stops it
  # on the same EOF; give that a moment before removing what it made.
  for marker in "$state"/preparing.*; do [ -f "$marker" ] && sleep 1; break; done
{REMOVE_UNFINISHED}
  # A release this deploy switched to and never confirmed: its deployer is gone, so nobody
  # checked it. Go back to the release the server had.
  if has_line {token} "$state/{unconfirmed}"; then go_back_from_marker; fi
fi
lock="$state/lock"
{release}"#,
        deploy_to = quote(&config.deploy_to),
        info = lock.lines().iter().map(|line| quote(line)).collect::<Vec<_>>().join(" "),
        release = release_lock(Some(&lock.token)),
        token = quote(&format!("token={}", lock.token)),
        probe = platform_probe(config),
        confirm = quote(super::confirm::CONFIRM),
        confirmed = quote(super::confirm::CONFIRMED),
        unconfirmed = super::confirm::UNCONFIRMED,
        user = quote(&lock.user),
        keep = config.keep_releases,
        release_glob = "[0-9]".repeat(14),
        rewrite_marks = super::rollback::REWRITE_MARKS,
        restart = super::confirm::run_restart_hooks(restart_hooks, config.timeouts.step.as_secs()),
    );
    let text = format!("{}\n{text}", super::confirm::GO_BACK);
    RemoteScript { name: "preflight", text }
}

/// What the server's platform is (for checking the build output's binaries), when the deploy
/// has `artifacts`; nothing otherwise (it starts two processes).
fn platform_probe(config: &Config) -> String {
    if config.artifacts.is_empty() {
        String::new()
    } else {
        format!("{}\n", crate::binaries::PLATFORM_PROBE.trim_end())
    }
}

/// Joins `scripts` into one, run as one remote command: each in its own subshell (its `set -e`,
/// `cd` and traps stay its own), stopping at the first that fails. Before each it prints
/// [`mark_step`] with its index, and after the last one with their count. Run it with
/// `Connection::output_steps(batch, scripts.len(), marker, ...)`, which keeps each step's
/// output apart and gives each its own step time.
pub fn batch_script(scripts: &[&RemoteScript], marker: &str) -> RemoteScript {
    let mut text = String::new();
    for (index, script) in scripts.iter().enumerate() {
        text.push_str(&mark_step(marker, index));
        // Not `( ... ) || exit`: a subshell on the left of `||` would ignore its own `set -e`.
        text.push_str(&format!(
            "(\n{}\n)\nstatus=$?\nif [ \"$status\" -ne 0 ]; then exit \"$status\"; fi\n",
            script.text.trim_end()
        ));
    }
    text.push_str(&mark_step(marker, scripts.len()));
    let name = if scripts.len() == 1 { scripts[0].name } else { "batch" };
    RemoteScript { name, text }
}

/// The shell line that marks where step `index` of a batch starts (or, after the last step,
/// where the batch ended well): `<marker> <index>` on a line of its own, after an empty line
/// (so it starts a line whatever the step before printed last), on stdout and on stderr, so
/// that each stream tells exactly which of its bytes are which step's.
pub fn mark_step(marker: &str, index: usize) -> String {
    let marker = quote(marker);
    format!("printf '\\n%s %s\\n' {marker} {index}; printf '\\n%s %s\\n' {marker} {index} >&2\n")
}

/// The line the preflight prints once it holds the lock and has reported the state.
pub const READY: &str = "@@xtask-deploy-ready";

/// Reports the server's state without changing anything, for `releases`: also
/// `unconfirmed <release>` when a deploy switched to `release` and has not confirmed it (the
/// marker [`UNCONFIRMED`](super::confirm::UNCONFIRMED)), and `subject <sha> <subject>` for each
/// release's commit that `repo/` has.
pub fn inspect_script(config: &Config) -> RemoteScript {
    let text = format!(
        r#"set -u
d={deploy_to}
state="$d/{STATE_DIR}"
{REQUIRE_SETUP}
{LOCK_HELPERS}
{REPORT_STATE}
{REPORT_SUBJECTS}
{REPORT_LOCK}
if [ -f "$d/revisions.log" ]; then each_line "$d/revisions.log" log; fi
{REPORT_UNCONFIRMED}
exit 0
"#,
        deploy_to = quote(&config.deploy_to),
    );
    RemoteScript { name: "inspect", text }
}

/// Gathers what `deploy-check` judges, changing nothing (a probe directory is made and removed
/// at once to learn whether `deploy_to`, or its nearest existing parent, is writable). Prints
/// `writable yes|no <dir>`, `git [<version>]`, `unset <part>` for each part setup makes that is
/// missing, `missing-file <index>` and `missing-dir <index>` for linked paths absent from
/// `shared/`, the lock's `holder`/`stale` lines, `disk <free KiB> <current release KiB>`, and
/// the current release as `current <path>` and `release <name> <sha>` (for the health check).
pub fn check_script(config: &Config) -> RemoteScript {
    let mut linked = String::new();
    for (index, file) in config.linked_files.iter().enumerate() {
        linked.push_str(&format!("[ -e \"$d/shared\"/{} ] || echo missing-file {index}\n", quote(file)));
    }
    for (index, dir) in config.linked_dirs.iter().enumerate() {
        linked.push_str(&format!("[ -d \"$d/shared\"/{} ] || echo missing-dir {index}\n", quote(dir)));
    }
    let text = format!(
        r#"set -u
d={deploy_to}
state="$d/{STATE_DIR}"
p="$d"
while [ ! -e "$p" ] && [ "$p" != / ]; do p=$(dirname "$p"); done
if [ -d "$p" ] && probe=$(mktemp -d "$p/.xtask-deploy-check.XXXXXX" 2>/dev/null); then
  rmdir "$probe"; echo "writable yes $p"
else
  echo "writable no $p"
fi
if command -v git >/dev/null 2>&1; then echo "git $(git --version 2>&1 | head -n 1)"; else echo git; fi
[ -d "$d/releases" ] || echo "unset releases/"
[ -d "$d/shared" ] || echo "unset shared/"
[ "$(git --git-dir="$d/repo" rev-parse --is-bare-repository 2>/dev/null)" = true ] || echo "unset repo/"
{linked}{LOCK_HELPERS}
{REPORT_LOCK}
free=$(df -Pk "$p" 2>/dev/null | awk 'NR == 2 {{ print $4 }}')
size=0
if [ -d "$d/current/" ]; then
  size=$(du -sk --apparent-size "$d/current/" 2>/dev/null || du -sk "$d/current/" 2>/dev/null)
  size=${{size%%[!0-9]*}}
fi
echo "disk ${{free:-unknown}} ${{size:-0}}"
# Shell builtins only (no `readlink`): where `current` leads, and that release's REVISION.
if [ -L "$d/current" ] && target=$(cd -P "$d/current" 2>/dev/null && pwd -P); then
  echo "current $target"
  rev=-
  {{ read -r rev < "$target/REVISION"; }} 2>/dev/null || true
  echo "release ${{target##*/}} ${{rev:--}}"
fi
{probe}exit 0
"#,
        deploy_to = quote(&config.deploy_to),
        probe = platform_probe(config),
    );
    RemoteScript { name: "deploy-check", text }
}

/// Removes the deploy lock: only when it holds `token` (a deploy never removes a lock it did
/// not take), or whoever holds it when `token` is `None` (`cargo xtask unlock`). Prints the
/// holder as `removed <key>=<value>` lines when it removed one.
///
/// Unless `force`, a lock whose holder is alive (its deploy's SSH connection, or the keeper
/// going back after it) is left in place: the script prints `holder <key>=<value>` lines and
/// exits [`EXIT_LOCKED`]. A dead holder's lock is removed (a deploy would take it over anyway).
pub fn unlock_script(config: &Config, token: Option<&str>, force: bool) -> RemoteScript {
    let alive = match force {
        true => String::new(),
        false => format!(
            "if [ -d \"$lock\" ] && holder_alive; then each_line \"$lock/info\" holder; exit {EXIT_LOCKED}; fi\n"
        ),
    };
    let text = format!(
        "set -u\nd={deploy_to}\nstate=\"$d/{STATE_DIR}\"\nlock=\"$state/lock\"\n{LOCK_HELPERS}\n{alive}{release}",
        deploy_to = quote(&config.deploy_to),
        release = release_lock(token),
    );
    RemoteScript { name: "unlock", text }
}

/// Removes `$lock` if it holds `token` (any lock when `None`), printing its holder as
/// `removed <key>=<value>` lines (needs [`LOCK_HELPERS`]).
fn release_lock(token: Option<&str>) -> String {
    let check = match token {
        Some(token) => format!(
            "has_line {} \"$lock/info\" || {{ echo \"the lock is not ours; left in place\"; exit 0; }}\n",
            quote(&format!("token={token}"))
        ),
        None => String::new(),
    };
    format!("[ -d \"$lock\" ] || exit 0\n{check}each_line \"$lock/info\" removed\nrm -rf \"$lock\"\n")
}

/// Runs a `git daemon` for this deploy in the foreground of its exec channel: it listens on
/// 127.0.0.1:`port` only, serves only `repo/` (and `submodule_repos`, relative to `deploy_to`,
/// created if needed), accepts pushes and nothing else (no fetch, no archive). It dies when the
/// channel's stdin reaches EOF (the deployer finished, died or lost its connection) and in any
/// case after `max_seconds`. Its pid is kept in a pid file that a later preflight reaps if it
/// was orphaned.
///
/// The port is open to every local user of the server while the daemon runs, so an access hook
/// (below) admits only connections that the deploy user opened: the one sshd opens
/// for this deploy's tunnel. The kernel says who opened a connection; no secret is needed, so
/// none can leak through a command line, a file name or a host name lookup.
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
{create}# The user this daemon runs as (the effective uid), read without starting a process.
uid=""
{{ while read -r key real effective rest; do [ "$key" = Uid: ] && uid=$effective; done < /proc/self/status; }} 2>/dev/null
if [ -z "$uid" ]; then echo "cannot read /proc/self/status: the daemon could not tell this deploy's connections" >&2; exit 1; fi
exec 3<&0
# git daemon runs its access hook through a shell, which finds the hook's text in the
# environment (no file, no second layer of quoting); the environment of another user's process
# cannot be read.
export XTASK_DEPLOY_ACCESS_HOOK={access_hook} XTASK_DEPLOY_PORT={port} XTASK_DEPLOY_UID="$uid"
timeout -k 1 {max_seconds} {CHECKED_GIT} daemon --verbose --listen=127.0.0.1 --port={port} --strict-paths \
  --export-all --enable=receive-pack --disable=upload-pack --disable=upload-archive \
  --forbid-override=receive-pack --forbid-override=upload-pack --forbid-override=upload-archive \
  --access-hook='sh -c "$XTASK_DEPLOY_ACCESS_HOOK" xtask-deploy-access' --informative-errors --init-timeout=30 \
  --timeout={max_seconds} {served} </dev/null &
daemon=$!
echo "$daemon" > "$pidfile"
# `timeout` leads its own process group: the daemon, its per-connection children, receive-pack
# and the repository's hooks. At the channel's EOF (the normal end of every deploy) the group
# gets SIGTERM; `timeout -k 1` SIGKILLs the daemon if it is still there a second later, and
# once `timeout` is gone this shell SIGKILLs the rest of the group: a connection's children
# ignore SIGTERM (git daemon's doing), and may outlive the daemon (SIGPIPE on its log once
# the channel is closed). No `sleep` here: it would outlive the deploy.
( while read -r _; do :; done <&3; kill -TERM -"$daemon" "$daemon" 2>/dev/null ) >/dev/null 2>&1 &
watchdog=$!
# The daemon keeps the channel's stderr; this shell must not write to it once the deployer may be
# gone (`wait` reports a killed daemon on stderr, and SIGPIPE would stop the clean-up below).
exec 3<&- >/dev/null 2>&1
wait "$daemon"
status=$?
kill "$watchdog" 2>/dev/null
kill -KILL -"$daemon" 2>/dev/null
rm -f "$pidfile"
exit $status
"#,
        deploy_to = quote(&config.deploy_to),
        access_hook = quote(ACCESS_HOOK),
    );
    RemoteScript { name: "git daemon", text }
}

/// The daemon's access hook, run as `sh -c <hook> xtask-deploy-access <service> <path> <host>
/// <canonical host> <ip> <port>` with the connection's `REMOTE_ADDR` and `REMOTE_PORT` in its
/// environment (git daemon's), and `XTASK_DEPLOY_PORT` and `XTASK_DEPLOY_UID` (the daemon
/// script's). It lets a push in when the connecting end, 127.0.0.1:`REMOTE_PORT` to this
/// daemon's port, belongs to the deploy user: `/proc/net/tcp` lists every TCP socket with its
/// owner's uid (hex ports; the address in the host's byte order). The deployer sends no `host`
/// field, so its arguments after the path are empty and git daemon looks no host name up.
/// One process (`awk`) per connection.
const ACCESS_HOOK: &str = r#"refuse() { echo "not a connection of this deploy"; exit 1; }
if [ "$1" != receive-pack ]; then echo "this daemon only receives a deploy's push"; exit 1; fi
case "${REMOTE_PORT:-}" in ''|*[!0-9]*) refuse ;; esac
[ "${REMOTE_ADDR:-}" = 127.0.0.1 ] || refuse
awk -v from="$REMOTE_PORT" -v to="${XTASK_DEPLOY_PORT:-}" -v uid="${XTASK_DEPLOY_UID:-}" '
function port(e, hex, n, i) {
  hex = substr(e, index(e, ":") + 1)
  n = 0
  for (i = 1; i <= length(hex); i++) n = n * 16 + index("0123456789ABCDEF", substr(hex, i, 1)) - 1
  return n
}
function loopback(e) { e = substr(e, 1, index(e, ":") - 1); return e == "0100007F" || e == "7F000001" }
NR > 1 && $4 == "01" && port($2) == from + 0 && port($3) == to + 0 && loopback($2) && loopback($3) {
  if (uid != "" && $8 == uid) mine = 1
}
END { exit mine ? 0 : 1 }' /proc/net/tcp 2>/dev/null || refuse
exit 0"#;

/// Runs `git receive-pack` on `repo` (relative to `deploy_to`; created bare if `create`) in
/// the foreground of its exec channel, for `transport = "exec"`. Its process group is named in a
/// pid file, so that the lock keeper can stop it (and a server-side hook it runs) when the
/// deployer is gone, since receive-pack itself notices that only when it next reads.
pub fn receive_pack_script(config: &Config, repo: &str, create: bool) -> RemoteScript {
    let create = if create { "[ -d \"$repo\" ] || git init --quiet --bare \"$repo\" || exit 1\n" } else { "" };
    let text = format!(
        r#"set -u
d={deploy_to}
repo="$d"/{repo}
{create}pidfile="$d/{STATE_DIR}/receive-pack.$$.pid"
echo "$$" > "$pidfile"
{CHECKED_GIT} receive-pack "$repo"
status=$?
rm -f "$pidfile"
exit $status
"#,
        deploy_to = quote(&config.deploy_to),
        repo = quote(repo),
    );
    RemoteScript { name: "git receive-pack", text }
}

/// Makes `releases/<name>` from the pushed commit (never from a branch name): its files (by
/// `git archive`, or through `shared/cached-copy`), the submodules', `REVISION`, and the links
/// to `shared/`. A missing linked file is refused before anything is made; if anything fails,
/// the unfinished release is removed.
pub fn prepare_script(config: &Config, release: &Release, submodules: &[SubmoduleRelease]) -> RemoteScript {
    let mut checks = String::new();
    for file in &config.linked_files {
        // The quoted name goes outside the double quotes: inside them its single quotes would be
        // literal, and a `$(...)` in it would run.
        checks.push_str(&format!("[ -e \"$d/shared\"/{file} ] || missing=\"$missing \"{file}\n", file = quote(file)));
    }
    // The tree's `.gitattributes` must not drop or rewrite build output (`export-ignore`,
    // `export-subst`, line endings, filters): `info/attributes` comes first and unsets them.
    let attributes = match release.build {
        Some(_) => config
            .artifacts
            .iter()
            .flat_map(|path| {
                // A directory that is `export-ignore` hides what is below it: its parents too.
                let parents = path.match_indices('/').map(|(at, _)| (format!("/{}", &path[..at]), "-export-ignore"));
                parents.chain([(format!("/{path}"), ARTIFACT_ATTRIBUTES), (format!("/{path}/**"), ARTIFACT_ATTRIBUTES)])
            })
            .map(|(pattern, attributes)| {
                let plain = !pattern.contains(|c: char| c.is_whitespace() || c == '"' || c == '\\');
                let pattern = if plain {
                    pattern.to_string()
                } else {
                    format!("\"{}\"", pattern.replace('\\', "\\\\").replace('"', "\\\""))
                };
                quote(&format!("{pattern} {attributes}"))
            })
            .collect::<Vec<String>>()
            .join(" "),
        None => String::new(),
    };
    let write_attributes = |git_dir: &str| match attributes.is_empty() {
        true => String::new(),
        false => format!("mkdir -p {git_dir}/info && printf '%s\\n' {attributes} > {git_dir}/info/attributes\n"),
    };
    let extract = match config.cache {
        Cache::Archive => {
            write_attributes("repo")
                + r#"{ git --git-dir=repo archive --format=tar "$tree" || echo "git archive failed" > "$marker"; } | tar -x -f - -C "releases/$rel" || echo "tar failed" >> "$marker""#
        }
        Cache::CachedCopy => {
            r#"cc="$d/shared/cached-copy"
if [ ! -d "$cc/.git" ]; then git clone --quiet --no-checkout "$d/repo" "$cc"; fi
# Its history is the code's, as private as `repo/`; the releases are copied out of it.
chmod go= "$cc"
"#
            .to_string()
                + &write_attributes("\"$cc/.git\"")
                + r#"git -C "$cc" fetch --quiet "$d/repo" "+refs/heads/*:refs/remotes/xtask-deploy/*" "+refs/xtask-deploy/*:refs/remotes/xtask-deploy-build/*"
git -C "$cc" checkout --quiet --force --detach "$tree"
git -C "$cc" clean --quiet -d -f -f -x
{ tar -C "$cc" --exclude=./.git -cf - . || echo "copy failed" > "$marker"; } | tar -x -f - -C "releases/$rel" || echo "tar failed" >> "$marker""#
        }
    };
    let mut extract_submodules = String::new();
    for submodule in submodules {
        // A well-formed tree has a directory there; a link (a malformed tree with the path
        // twice) would take the submodule's files wherever it points.
        let what = format!("submodule `{}`", submodule.path);
        let fix = "the deployed tree is malformed (`git fsck --strict` names the problem): fix the commit";
        extract_submodules.push_str(&format!(
            "no_link {path} yes {what} {fix}\n\
             mkdir -p \"releases/$rel\"/{path}\n\
             {{ git --git-dir={repo} archive --format=tar {commit} || echo failed > \"$marker\"; }} \
             | tar -x -f - -C \"releases/$rel\"/{path} || echo failed >> \"$marker\"\n",
            path = quote(&submodule.path),
            what = quote(&what),
            fix = quote(fix),
            repo = quote(&submodule.repo),
            commit = quote(&submodule.commit),
        ));
    }
    // No path the deploy writes passes through a link of the tree. A link at a linked path
    // itself is fine: it is removed (not followed) and replaced.
    let mut no_links = String::new();
    for (key, paths) in [("linked_dirs", &config.linked_dirs), ("linked_files", &config.linked_files)] {
        for path in paths {
            let what = format!("the link to `shared/{path}` (`{key}`)");
            let fix = format!("make it a directory in the commit, or remove `{path}` from `{key}`");
            no_links.push_str(&format!("no_link {} no {} {}\n", quote(path), quote(&what), quote(&fix)));
        }
    }
    // Each command only when needed: a process started per linked path adds up.
    let mut links = String::new();
    for path in config.linked_dirs.iter().chain(&config.linked_files) {
        let parent = match path.rsplit_once('/') {
            Some((parent, _)) => {
                format!("[ -d \"releases/$rel\"/{0} ] || mkdir -p \"releases/$rel\"/{0}\n", quote(parent))
            }
            None => String::new(),
        };
        links.push_str(&format!(
            "if [ -e \"releases/$rel\"/{path} ] || [ -L \"releases/$rel\"/{path} ]; then rm -rf \"releases/$rel\"/{path}; fi\n\
             {parent}ln -s \"$d/shared\"/{path} \"releases/$rel\"/{path}\n",
            path = quote(path)
        ));
    }
    let text = format!(
        r#"set -eu
d={deploy_to}
rel={name}
sha={sha}
tree={tree}
cd "$d"
if [ -e "releases/$rel" ]; then echo "release \`$rel\` already exists in \`$d/releases\`" >&2; exit 1; fi
missing=""
{checks}if [ -n "$missing" ]; then
  echo "linked file(s) missing in \`$d/shared\`:$missing: create them on the server before deploying" >&2; exit 1
fi
mkdir "releases/$rel"
marker="$d/{STATE_DIR}/preparing.$rel"
trap 'rm -rf "releases/$rel" "$marker"' EXIT
{NO_LINK}
# The marker tells an interrupted deploy's clean-up that this release is unfinished; until the
# release is made, an extraction that fails writes into it.
: > "$marker"
{extract}
{extract_submodules}if [ -s "$marker" ]; then
  if ! git --git-dir=repo cat-file -e "$tree^{{commit}}" 2>/dev/null; then
    echo "commit \`$tree\` is not in \`$d/repo\`: the push did not arrive" >&2; exit 1
  fi
  echo "could not extract \`$tree\` into \`releases/$rel\`" >&2; exit 1
fi
no_link REVISION yes '`REVISION`' 'remove `REVISION` from the commit (the deploy writes that file)'
{no_links}if [ -d "releases/$rel/REVISION" ]; then
  echo "\`REVISION\` is a directory in the deployed commit: the deploy writes that file; remove it from the commit and deploy again" >&2; exit 1
fi
printf '%s\n' "$sha" > "releases/$rel/REVISION"
{links}trap - EXIT
"#,
        deploy_to = quote(&config.deploy_to),
        name = quote(&release.name),
        sha = quote(&release.sha),
        tree = quote(release.tree()),
    );
    RemoteScript { name: "prepare", text }
}

/// `no_link PATH LAST WHAT FIX`, for the prepare script: stops it when a directory on the way
/// to PATH in the release (and PATH itself, when LAST is `yes`) is a symbolic link. Only the
/// deployed tree can have put one there, and writing WHAT through it would land outside the
/// release: in `shared/`, another release, or anywhere the deploy user can write. The message
/// names the link, where it points, and FIX. Shell builtins only, but for the message.
const NO_LINK: &str = r#"no_link() {
  p="releases/$rel"
  rest=$1
  while [ -n "$rest" ]; do
    p="$p/${rest%%/*}"
    case "$rest" in */*) rest=${rest#*/} ;; *) rest="" ;; esac
    if [ -L "$p" ] && { [ -n "$rest" ] || [ "$2" = yes ]; }; then
      printf '`%s` is a symbolic link in the deployed commit (to `%s`): the deploy would write %s through it, outside the release; %s, and deploy again\n' \
        "${p#releases/$rel/}" "$(readlink "$p")" "$3" "$4" >&2
      exit 1
    fi
  done
}"#;

/// Runs a remote hook command with `sh -c` in the release directory (in `deploy_to` while the
/// release does not exist yet), with `DEPLOY_TO`, `RELEASE`, `RELEASE_PATH` and `REVISION` set.
/// Its stdout and stderr are its own: in a batch, each step's output is kept apart (see
/// [`batch_script`]), so what a hook prints is shown as its own and never read as what our
/// scripts print.
pub fn hook_script(config: &Config, release: &Release, phase: &'static str, command: &str) -> RemoteScript {
    let text = format!(
        r#"d={deploy_to}
export DEPLOY_TO="$d" RELEASE={name} RELEASE_PATH="$d/releases"/{name} REVISION={sha} ROLLBACK=
if [ -d "$RELEASE_PATH" ]; then cd "$RELEASE_PATH"; else cd "$d"; fi || exit 1
exec sh -c {command}
"#,
        deploy_to = quote(&config.deploy_to),
        name = quote(&release.name),
        sha = quote(&release.sha),
        command = quote(command),
    );
    RemoteScript { name: phase, text }
}

/// Removes the unfinished release of a failed deploy, unless it became current.
pub fn discard_script(config: &Config, release: &Release) -> RemoteScript {
    let text = format!(
        r#"set -u
d={deploy_to}
rel={name}
case "$(readlink "$d/current" 2>/dev/null)" in
  */releases/"$rel") echo "release $rel is current; kept" ;;
  *) rm -rf "$d/releases/$rel" ;;
esac
rm -f "$d/{STATE_DIR}/preparing.$rel"
"#,
        deploy_to = quote(&config.deploy_to),
        name = quote(&release.name),
    );
    RemoteScript { name: "discard", text }
}

/// Switches `current` to the release atomically (`ln -s` to `releases/current`, then `mv -T`,
/// as Capistrano 3), appends to `revisions.log` and removes releases beyond `keep_releases`
/// (never the current one). Prints `removed <name>` for each release removed.
///
/// Before it switches, it writes the [`UNCONFIRMED`](super::confirm::UNCONFIRMED) marker with
/// this deploy's `token` and the release `current` pointed at: until the deployer confirms, the
/// lock keeper goes back to that release if the deployer is lost.
pub fn publish_script(config: &Config, release: &Release, token: &str) -> RemoteScript {
    let text = format!(
        r#"set -eu
d={deploy_to}
rel={name}
cd "$d"
# Claim the release: an interrupted deploy's clean-up removes only unclaimed ones.
marker="$d/{STATE_DIR}/preparing.$rel"
if ! mv "$marker" "$marker.publishing" 2>/dev/null; then
  echo "release \`$rel\` is no longer being prepared (its deploy was interrupted and it was removed); current is unchanged" >&2
  exit 1
fi
previous=$(readlink current 2>/dev/null || true)
previous=${{previous##*/}}
{unconfirmed}
{SWITCH_CURRENT}
echo "switched $rel"
rm -f "$marker.publishing"
printf '%s\n' {log_line} >> revisions.log
"#,
        deploy_to = quote(&config.deploy_to),
        name = quote(&release.name),
        log_line = quote(&super::revision_log_line(release)),
        unconfirmed = super::confirm::unconfirmed_lines(token, &release.name),
    );
    RemoteScript { name: "publish", text }
}

/// git with every object a push brings checked as `git fsck --strict` does: a malformed tree (an
/// entry twice, `..`, `.git`, a `.gitmodules` trick) is refused, with git's own message, before
/// anything is stored. On the command line rather than in `repo/config`, so it holds in every
/// repository the deploy pushes to (the submodules' too), on servers set up by any version (or by
/// Capistrano); a child git (receive-pack under the daemon) inherits it.
///
/// `receive.shallowUpdate`: a push may bring commits whose parents it leaves out (the first
/// deploy sends the deployed tree, not the history; a shallow CI clone has no more to send).
const CHECKED_GIT: &str = "git -c receive.fsckObjects=true -c receive.shallowUpdate=true";

/// Makes `repo/` and `.xtask-deploy/` the deploy user's alone (0700: no other local user may
/// read the history or the lock's holder); the preflight also passes the lock's `info` (0600).
/// One `chmod` for all: `go=` clears the group's and others' bits and leaves the owner's.
const PRIVATE: &str = r#"chmod go= "$d/repo" "$d/.xtask-deploy""#;

/// Refuses to go on without git on the server, with the fix.
pub(super) const REQUIRE_GIT: &str = r#"if ! command -v git >/dev/null 2>&1; then
  echo "git is not installed on the server: install it (for example \`apt-get install git\`)" >&2
  exit 3
fi"#;

/// `start_time PID`: the process's start time (field 22 of /proc/PID/stat), empty if it is gone.
/// `holder_alive`: whether the sshd process of the lock holder's SSH connection still runs
/// (same pid and start time, so a reused pid does not count).
/// `has_line LINE FILE`: whether FILE has the line LINE. `each_line FILE PREFIX`: prints each
/// line of FILE after PREFIX and a space.
/// Shell builtins only: the preflight runs on every deploy, and each external command would be
/// one more process started on the server.
pub(super) const LOCK_HELPERS: &str = r#"start_time() {
  { read -r stat < "/proc/$1/stat"; } 2>/dev/null || return 0
  set -- ${stat##*) }
  shift 19
  echo "$1"
}
has_line() {
  { while IFS= read -r line || [ -n "$line" ]; do [ "$line" = "$1" ] && return 0; done < "$2"; } 2>/dev/null
  return 1
}
each_line() {
  { while IFS= read -r line || [ -n "$line" ]; do printf '%s %s\n' "$2" "$line"; done < "$1"; } 2>/dev/null
}
# The lock is held while its deploy's SSH connection lives, or its keeper (which may still be
# going back to the release the server had after that connection is gone).
holder_alive() {
  holder=""
  keeper=""
  { while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in connection=*) holder=${line#connection=} ;; keeper=*) keeper=${line#keeper=} ;; esac
  done < "$state/lock/info"; } 2>/dev/null
  [ -n "$holder" ] || return 0
  alive $holder && return 0
  [ -n "$keeper" ] && alive $keeper
}
alive() {
  [ -n "${2:-}" ] && [ "$(start_time "$1")" = "$2" ]
}"#;

/// Stops every `git receive-pack` of `transport = "exec"` named by a pid file (the process
/// group: receive-pack and any hook it runs). Run only while holding the lock, when the push
/// that started it is over or its deployer is gone.
const STOP_RECEIVE_PACKS: &str = r#"for pidfile in "$state"/receive-pack.*.pid; do
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  case "$pid" in ''|*[!0-9]*) rm -f "$pidfile"; continue ;; esac
  case "$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null)" in
    # Ours, whatever `-c` options it runs with (this version's, or an older one's).
    *"git "*"receive-pack"*) kill -TERM -"$pid" "$pid" 2>/dev/null; echo "reaped $pid" ;;
  esac
  rm -f "$pidfile"
done"#;

/// Removes the releases that a deploy prepared but never published or discarded (it was
/// interrupted or killed), unless one became current. Run only while holding the lock.
const REMOVE_UNFINISHED: &str = r#"for marker in "$state"/preparing.*; do
  [ -f "$marker" ] || continue
  unfinished=${marker##*/preparing.}
  case "$unfinished" in ''|*[!0-9]*) continue ;; esac
  case "$(readlink "$d/current" 2>/dev/null)" in
    */releases/"$unfinished") ;;
    *) rm -rf "$d/releases/$unfinished"; echo "unfinished $unfinished" ;;
  esac
  rm -f "$marker"
done"#;

/// Refuses to go on in a `deploy_to` that deploy-setup has not prepared: `releases/` and a bare
/// repository in `repo/` (its `HEAD`, `objects/` and `refs/` at the top, which a clone with a
/// work tree has under `.git/`), checked without starting git.
pub(super) const REQUIRE_SETUP: &str = r#"if [ ! -d "$d/releases" ] || [ ! -f "$d/repo/HEAD" ] || [ ! -d "$d/repo/objects" ] || [ ! -d "$d/repo/refs" ]; then
  echo "\`$d\` is not set up for deploys: run \`cargo xtask deploy-setup\` first" >&2
  exit 4
fi"#;

/// Prints the lock's holder as `holder <key>=<value>` lines, or as `stale <key>=<value>` lines
/// when its SSH connection is gone (needs [`LOCK_HELPERS`]). A lock with no `info` yet is being
/// taken by a deploy right now.
pub(super) const REPORT_LOCK: &str = r#"if [ -f "$state/lock/info" ]; then
  if holder_alive; then each_line "$state/lock/info" holder; else each_line "$state/lock/info" stale; fi
elif [ -d "$state/lock" ]; then
  echo "holder user=a deploy that is taking the lock right now"
fi"#;

/// Prints `unconfirmed <release>` for the release the [`UNCONFIRMED`](super::confirm::UNCONFIRMED)
/// marker names, if there is one.
pub(super) const REPORT_UNCONFIRMED: &str = r#"if [ -f "$state/unconfirmed" ]; then
  { while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in release=*) echo "unconfirmed ${line#release=}" ;; esac
  done < "$state/unconfirmed"; } 2>/dev/null
fi"#;

/// Prints `subject <sha> <subject>` for the commit of each release that `repo/` has, with one
/// `git log` for all of them. Only a full SHA in `REVISION` is passed on (as an argument, never
/// as script text), so nothing read from the server becomes an option of git.
const REPORT_SUBJECTS: &str = r#"set --
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
/// [`LOCK_HELPERS`]).
pub(super) const REPORT_STATE: &str = r#"for r in "$d"/releases/*; do
  [ -d "$r" ] && [ ! -L "$r" ] || continue
  rev=-
  { read -r rev < "$r/REVISION"; } 2>/dev/null || true
  echo "release ${r##*/} ${rev:--}"
done
if [ -L "$d/current" ]; then echo "current $(readlink "$d/current")"; fi
if [ -f "$d/.xtask-deploy/bad" ]; then each_line "$d/.xtask-deploy/bad" bad; fi"#;

/// The attributes `info/attributes` gives build output, so that `git archive` and a checkout
/// write it byte for byte, whatever the tree's `.gitattributes` say.
const ARTIFACT_ATTRIBUTES: &str = "-export-ignore -export-subst -text -ident -filter -working-tree-encoding";

/// Points `current` at `releases/$rel` atomically, from inside `$d`.
pub(super) const SWITCH_CURRENT: &str = r#"if [ -e releases/current ] || [ -L releases/current ]; then rm -f releases/current; fi
ln -s "$d/releases/$rel" releases/current
mv -T releases/current current"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::rollback::{marks_script, rollback_script, RollbackTo};
    use crate::plan::tests::{config, lock, release};

    fn submodule() -> SubmoduleRelease {
        SubmoduleRelease {
            path: "libs/$(evil)".into(),
            repo: "repo/modules/it's".into(),
            commit: "89abcdef0123456789abcdef0123456789abcdef".into(),
        }
    }

    #[test]
    fn every_script_quotes_a_hostile_deploy_to() {
        let hostile = "/srv/it's $(rm -rf ~) `x`";
        let cfg = config(hostile);
        let release = release();
        for script in [
            setup_script(&cfg),
            preflight_script(&cfg, &lock(), &["systemctl restart it"]),
            inspect_script(&cfg),
            unlock_script(&cfg, Some("t"), false),
            daemon_script(&cfg, 40000, 600, &["repo/modules/it's"]),
            prepare_script(&cfg, &release, &[submodule()]),
            hook_script(&cfg, &release, "after_update", "echo hi"),
            discard_script(&cfg, &release),
            publish_script(&cfg, &release, "t0k3n"),
            rollback_script(
                &cfg,
                RollbackTo::Release { name: "20261125041638", mark_left: true },
                "alice",
                &["x"],
                "@@m",
            ),
            marks_script(&cfg, Some("20261125041638")),
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
        assert!(script.text.contains(&format!("timeout -k 1 900 {CHECKED_GIT} daemon")));
        assert!(script.text.contains("\"$d/repo\" </dev/null &"));
    }

    #[test]
    fn both_transports_check_what_they_receive_and_their_processes_are_still_found() {
        let checked = CHECKED_GIT;
        assert!(checked.contains("-c receive.fsckObjects=true") && checked.contains("-c receive.shallowUpdate=true"));
        assert!(daemon_script(&config("/srv/x"), 40123, 900, &[]).text.contains(&format!("{checked} daemon")));
        let exec = receive_pack_script(&config("/srv/x"), "repo", false).text;
        assert!(exec.contains(&format!("\n{checked} receive-pack \"$repo\"\n")), "{exec}");
        // The preflight and the lock keeper find them by command line (and those of older versions).
        let preflight = preflight_script(&config("/srv/x"), &lock(), &[]).text;
        assert!(preflight.contains(&format!("*\"{checked} daemon\"*\"$d/repo\"*")), "{preflight}");
        assert!(
            preflight.contains("*\"git daemon\"*\"$d/repo\"*") && preflight.contains("*\"git \"*\"receive-pack\"*")
        );
    }

    #[test]
    fn submodules_are_served_created_and_extracted_quoted() {
        let daemon = daemon_script(&config("/srv/x"), 40123, 900, &["repo/modules/a b"]);
        assert!(daemon
            .text
            .contains("[ -d \"$d\"/'repo/modules/a b' ] || git init --quiet --bare \"$d\"/'repo/modules/a b'"));
        assert!(daemon.text.contains("\"$d/repo\" \"$d\"/'repo/modules/a b' </dev/null &"));
        let prepare = prepare_script(&config("/srv/x"), &release(), &[submodule()]);
        assert!(prepare.text.contains("mkdir -p \"releases/$rel\"/'libs/$(evil)'\n"), "{}", prepare.text);
        let archive = format!(
            "git --git-dir={} archive --format=tar 89abcdef0123456789abcdef0123456789abcdef",
            quote("repo/modules/it's")
        );
        assert!(prepare.text.contains(&archive), "{}", prepare.text);
        assert!(prepare.text.find("libs/$(evil)").unwrap() < prepare.text.find("if [ -s \"$marker\" ]").unwrap());
    }

    #[test]
    fn release_is_made_from_the_sha_and_published_atomically() {
        let prepare = prepare_script(&config("/srv/x"), &release(), &[]);
        assert!(prepare.text.contains("sha=0123456789abcdef0123456789abcdef01234567\n"));
        assert!(prepare.text.contains("tree=0123456789abcdef0123456789abcdef01234567\n"), "without build output");
        assert!(prepare.text.contains("archive --format=tar \"$tree\""));
        assert!(prepare.text.contains("printf '%s\\n' \"$sha\" > \"releases/$rel/REVISION\""));
        // With build output, the files come from the release commit; REVISION still names the source.
        let build = Release { build: Some("fedcba9876543210fedcba9876543210fedcba98".into()), ..release() };
        let prepare = prepare_script(&config("/srv/x"), &build, &[]);
        assert!(prepare.text.contains("sha=0123456789abcdef0123456789abcdef01234567\n"));
        assert!(prepare.text.contains("tree=fedcba9876543210fedcba9876543210fedcba98\n"));
        let publish = publish_script(&config("/srv/x"), &release(), "t0k3n").text;
        let link = publish.find("ln -s").unwrap();
        let switch = publish.find("mv -T releases/current current").unwrap();
        let log = publish.find(">> revisions.log").unwrap();
        assert!(link < switch && switch < log);
        // The marker that holds the release unconfirmed is written before the switch.
        let marker = publish.find("token=t0k3n").unwrap();
        assert!(marker < link, "{publish}");
    }

    #[test]
    fn linked_files_are_checked_before_the_release_is_made() {
        let mut cfg = config("/srv/x");
        cfg.linked_files = vec!["config/database.yml".into()];
        cfg.linked_dirs = vec!["log".into()];
        let prepare = prepare_script(&cfg, &release(), &[]).text;
        let check = prepare.find("[ -e \"$d/shared\"/config/database.yml ]").unwrap();
        assert!(check < prepare.find("mkdir \"releases/$rel\"").unwrap());
        assert!(prepare.contains("ln -s \"$d/shared\"/log \"releases/$rel\"/log"));
        let setup = setup_script(&cfg).text;
        assert!(setup.contains("\"$d/shared\"/log") && setup.contains("\"$d/shared\"/config"), "{setup}");
    }

    #[test]
    fn a_batch_stops_at_the_first_failing_script_and_marks_the_others() {
        let ok = RemoteScript { name: "ok", text: "set -eu\necho one".into() };
        // `set -e` must still stop this script at `false`, inside the batch.
        let failing = RemoteScript { name: "failing", text: "set -eu\nfalse\necho not-reached".into() };
        let never = RemoteScript { name: "never", text: "echo never".into() };
        let batch = batch_script(&[&ok, &failing, &never], "@@m-1f");
        let out = std::process::Command::new("sh").arg("-c").arg(&batch.text).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        // Each step is marked as it starts, on both streams; the one after the failure is not.
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "\n@@m-1f 0\none\n\n@@m-1f 1\n");
        assert_eq!(String::from_utf8(out.stderr).unwrap(), "\n@@m-1f 0\n\n@@m-1f 1\n");
        let all = std::process::Command::new("sh").arg("-c").arg(batch_script(&[&ok], "@@m-1f").text).output();
        assert_eq!(String::from_utf8(all.unwrap().stdout).unwrap(), "\n@@m-1f 0\none\n\n@@m-1f 1\n");
    }

    #[test]
    fn publish_claims_the_prepared_release_before_switching() {
        let publish = publish_script(&config("/srv/x"), &release(), "t0k3n").text;
        let claim = publish.find("mv \"$marker\" \"$marker.publishing\"").unwrap();
        assert!(claim < publish.find("mv -T releases/current current").unwrap());
        let prepare = prepare_script(&config("/srv/x"), &release(), &[]).text;
        assert!(prepare.contains("marker=\"$d/.xtask-deploy/preparing.$rel\"\n"), "{prepare}");
        assert!(prepare.contains("\n: > \"$marker\"\n"), "{prepare}");
    }

    #[test]
    fn a_deploy_removes_only_its_own_lock_and_unlock_removes_any() {
        let own = unlock_script(&config("/srv/x"), Some("abc"), true).text;
        assert!(own.contains(&format!("has_line {} \"$lock/info\"", quote("token=abc"))), "{own}");
        let any = unlock_script(&config("/srv/x"), None, true).text;
        assert!(!any.contains("token="), "{any}");
    }

    /// Runs `text` with `sh -c`, with `args` as `$0 $1...`; returns (status, stdout, stderr).
    fn sh(text: &str, args: &[&str]) -> (i32, String, String) {
        let out = std::process::Command::new("sh").arg("-c").arg(text).args(args).output().unwrap();
        let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
        (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
    }

    #[test]
    fn the_access_hook_lets_in_only_a_push_whose_connection_the_deploy_user_opened() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        // SAFETY: geteuid has no preconditions and cannot fail.
        let uid = unsafe { libc::geteuid() };
        // git daemon runs it as `sh -c <hook> <name> <service> <path> <host> <canon> <ip> <port>`.
        let run = |service: &str, remote: &str, uid: u32| {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(ACCESS_HOOK)
                .args(["xtask-deploy-access", service, "/srv/x/repo", "", "", "", ""])
                .env("REMOTE_ADDR", "127.0.0.1")
                .env("REMOTE_PORT", remote)
                .env("XTASK_DEPLOY_PORT", port.to_string())
                .env("XTASK_DEPLOY_UID", uid.to_string())
                .output()
                .unwrap();
            (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap())
        };
        let ours = peer.port().to_string();
        assert_eq!(run("receive-pack", &ours, uid).0, 0, "our own connection");
        assert_eq!(run("receive-pack", &ours, uid).0, 0, "the same connection, asked again");
        assert_eq!(run("upload-pack", &ours, uid).0, 1, "only pushes are let in");
        assert_eq!(
            run("receive-pack", &ours, uid + 1),
            (1, "not a connection of this deploy\n".into()),
            "another user's"
        );
        // The daemon's own end of the connection, a port nobody connects from, and garbage.
        for other in [port.to_string(), "1".into(), "".into(), "x".into(), format!("{ours} 1"), format!("0{ours}x")] {
            assert_eq!(run("receive-pack", &other, uid), (1, "not a connection of this deploy\n".into()), "{other:?}");
        }
        let elsewhere = std::process::Command::new("sh")
            .arg("-c")
            .arg(ACCESS_HOOK)
            .args(["xtask-deploy-access", "receive-pack", "/srv/x/repo"])
            .env("REMOTE_ADDR", "10.0.0.1")
            .env("REMOTE_PORT", &ours)
            .env("XTASK_DEPLOY_PORT", port.to_string())
            .env("XTASK_DEPLOY_UID", uid.to_string())
            .status()
            .unwrap();
        assert_eq!(elsewhere.code(), Some(1), "not from 127.0.0.1");
    }

    #[test]
    fn a_lock_is_released_only_by_its_token_and_reports_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let deploy_to = dir.path().to_str().unwrap();
        let lock = dir.path().join(STATE_DIR).join("lock");
        let take = || {
            std::fs::create_dir_all(&lock).unwrap();
            // The last line has no newline: it still counts.
            std::fs::write(lock.join("info"), "user=alice\ntoken=abc").unwrap();
        };
        take();
        for other in ["ab", "abcd", "ABC"] {
            let (status, stdout, _) = sh(&unlock_script(&config(deploy_to), Some(other), true).text, &[]);
            assert_eq!((status, stdout.as_str()), (0, "the lock is not ours; left in place\n"), "token {other}");
            assert!(lock.exists());
        }
        let (status, stdout, _) = sh(&unlock_script(&config(deploy_to), Some("abc"), true).text, &[]);
        assert_eq!((status, stdout.as_str()), (0, "removed user=alice\nremoved token=abc\n"));
        assert!(!lock.exists());
        take();
        let (_, stdout, _) = sh(&unlock_script(&config(deploy_to), None, true).text, &[]);
        assert_eq!(stdout, "removed user=alice\nremoved token=abc\n");
        assert!(!lock.exists());

        // Without force, a live holder's lock stays (this test is its "connection"); a dead
        // one's goes.
        let pid = std::process::id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let start = stat.rsplit(") ").next().unwrap().split_whitespace().nth(19).unwrap().to_string();
        std::fs::create_dir_all(&lock).unwrap();
        std::fs::write(lock.join("info"), format!("user=alice\nconnection={pid} {start}\n")).unwrap();
        let (status, stdout, _) = sh(&unlock_script(&config(deploy_to), None, false).text, &[]);
        assert_eq!(
            (status, stdout.as_str()),
            (EXIT_LOCKED, format!("holder user=alice\nholder connection={pid} {start}\n").as_str())
        );
        assert!(lock.exists(), "a live deploy's lock is left in place");
        std::fs::write(lock.join("info"), "user=gone\nconnection=1 0\n").unwrap();
        let (status, stdout, _) = sh(&unlock_script(&config(deploy_to), None, false).text, &[]);
        assert_eq!((status, stdout.as_str()), (0, "removed user=gone\nremoved connection=1 0\n"));
        assert!(!lock.exists(), "a dead deploy's lock is removed");
    }

    #[test]
    fn a_commit_that_did_not_arrive_is_named_and_nothing_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let deploy_to = dir.path().to_str().unwrap();
        let init = crate::local::git().args(["init", "-q", "--bare"]).arg(dir.path().join("repo")).status();
        assert!(init.unwrap().success());
        std::fs::create_dir_all(dir.path().join("releases")).unwrap();
        std::fs::create_dir_all(dir.path().join(STATE_DIR)).unwrap();
        let (status, _, stderr) = sh(&prepare_script(&config(deploy_to), &release(), &[]).text, &[]);
        assert_eq!(status, 1, "{stderr}");
        assert!(stderr
            .contains(&format!("commit `{}` is not in `{deploy_to}/repo`: the push did not arrive", release().sha)));
        assert_eq!(std::fs::read_dir(dir.path().join("releases")).unwrap().count(), 0, "the release was removed");
        assert_eq!(std::fs::read_dir(dir.path().join(STATE_DIR)).unwrap().count(), 0, "the marker was removed");
    }

    #[test]
    fn no_path_is_written_through_a_link_but_a_link_at_its_end_may_be_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let release = dir.path().join("releases/20261125041638");
        std::fs::create_dir_all(release.join("b/c")).unwrap();
        std::os::unix::fs::symlink("/elsewhere", release.join("a")).unwrap();
        std::os::unix::fs::symlink("../../x", release.join("b/c/l")).unwrap();
        let script = format!("cd \"$0\" && rel=20261125041638\n{NO_LINK}\nno_link \"$1\" \"$2\" WHAT FIX\necho fine");
        let run = |path: &str, last: &str| sh(&script, &[dir.path().to_str().unwrap(), path, last]);
        for (path, last) in [("a", "no"), ("b/c/l", "no"), ("b/c/new/deeper", "no"), ("b/c", "yes"), ("new", "yes")] {
            assert_eq!(run(path, last), (0, "fine\n".into(), String::new()), "{path} {last}");
        }
        let through = |link: &str, target: &str| {
            format!(
                "`{link}` is a symbolic link in the deployed commit (to `{target}`): the deploy would write WHAT \
                 through it, outside the release; FIX, and deploy again\n"
            )
        };
        for (path, last, link, target) in
            [("a/x", "no", "a", "/elsewhere"), ("a", "yes", "a", "/elsewhere"), ("b/c/l", "yes", "b/c/l", "../../x")]
        {
            assert_eq!(run(path, last), (1, String::new(), through(link, target)), "{path} {last}");
        }
    }

    #[test]
    fn subjects_are_read_for_full_shas_only() {
        let dir = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let out = crate::local::git().args(args).current_dir(dir.path()).output().unwrap();
            assert!(out.status.success(), "git {args:?}");
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        git(&["init", "-q", "--bare", "repo"]);
        let tree = git(&["--git-dir=repo", "mktree"]);
        let ident = ["-c", "user.name=t", "-c", "user.email=t@t"];
        let commit =
            git(&[&ident[..], &["--git-dir=repo", "commit-tree", &tree, "-m", "Fix it's \"quoted\""]].concat());
        let pwned = dir.path().join("pwned");
        let revisions = [
            commit.clone(),
            "f".repeat(40),
            format!("--output={}", pwned.display()),
            "HEAD".to_string(),
            commit[..12].to_string(),
        ];
        for (index, revision) in revisions.iter().enumerate() {
            let release = dir.path().join(format!("releases/2026010100000{index}"));
            std::fs::create_dir_all(&release).unwrap();
            std::fs::write(release.join("REVISION"), format!("{revision}\n")).unwrap();
        }
        let (status, stdout, _) = sh(&inspect_script(&config(dir.path().to_str().unwrap())).text, &[]);
        assert_eq!(status, 0);
        let subjects: Vec<&str> = stdout.lines().filter(|line| line.starts_with("subject ")).collect();
        assert_eq!(subjects, [format!("subject {commit} Fix it's \"quoted\"")]);
        assert!(!pwned.exists(), "a REVISION became an option of git");
    }

    #[test]
    fn only_a_bare_repository_counts_as_set_up() {
        let dir = tempfile::tempdir().unwrap();
        let deploy_to = dir.path().to_str().unwrap();
        let git = |args: &[&str]| assert!(crate::local::git().args(args).status().unwrap().success());
        let inspect = inspect_script(&config(deploy_to)).text;
        assert_eq!(sh(&inspect, &[]).0, EXIT_NOT_SET_UP, "nothing there");
        std::fs::create_dir_all(dir.path().join("releases")).unwrap();
        let repo = dir.path().join("repo");
        git(&["init", "-q", repo.to_str().unwrap()]);
        let (status, _, stderr) = sh(&inspect, &[]);
        assert_eq!(status, EXIT_NOT_SET_UP, "a clone with a work tree in `repo/`");
        assert!(stderr.contains("run `cargo xtask deploy-setup` first"), "{stderr}");
        std::fs::remove_dir_all(&repo).unwrap();
        git(&["init", "-q", "--bare", repo.to_str().unwrap()]);
        assert_eq!(sh(&inspect, &[]), (0, String::new(), String::new()));
    }

    #[test]
    fn build_output_is_exempt_from_the_trees_attributes_even_with_odd_names() {
        let mut cfg = config("/srv/x");
        cfg.artifacts = vec!["bin/my \"app\"".into(), "dist".into()];
        let build = Release { build: Some("f".repeat(40)), ..release() };
        let prepare = prepare_script(&cfg, &build, &[]).text;
        let line = prepare.lines().find(|line| line.starts_with("mkdir -p repo/info")).expect("attributes written");
        let dir = tempfile::tempdir().unwrap();
        let (status, _, stderr) = sh(&format!("cd {} && {line}", quote(dir.path().to_str().unwrap())), &[]);
        assert_eq!(status, 0, "{stderr}");
        let written = std::fs::read_to_string(dir.path().join("repo/info/attributes")).unwrap();
        let all = ARTIFACT_ATTRIBUTES;
        assert_eq!(
            written,
            format!(
                "/bin -export-ignore\n\"/bin/my \\\"app\\\"\" {all}\n\"/bin/my \\\"app\\\"/**\" {all}\n/dist {all}\n/dist/** {all}\n"
            )
        );
        // Without build output, the repository's attributes are left alone.
        assert!(!prepare_script(&cfg, &release(), &[]).text.contains("info/attributes"));
    }
}
