//! How a push reaches the server's `repo/`: the deploy's `git daemon` on the server's loopback
//! (its access hook admits only the deploy user's connections), or `git receive-pack` in an
//! exec channel (`transport = "exec"`); both check every object they receive.

use crate::config::Config;
use crate::shell::{quote, RemoteScript};

use super::{EXIT_PORT_TAKEN, STATE_DIR};

/// Runs a `git daemon` for this deploy in the foreground of its exec channel: it listens on
/// 127.0.0.1:`port` only, serves only `repo/` (and `submodule_repos`, relative to `deploy_to`,
/// created if needed), accepts pushes and nothing else (no fetch, no archive). It dies when the
/// channel's stdin reaches EOF (the deployer finished, died or lost its connection) and in any
/// case after `max_seconds`. Its pid is kept in a pid file that a later preflight reaps if it
/// was orphaned. When the port is taken, it exits [`EXIT_PORT_TAKEN`].
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
{command} </dev/null &
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
# git dies with 128 when it cannot listen on its port (another process holds it): a status of
# its own tells the deployer to try another port.
if [ "$status" = 128 ]; then status={EXIT_PORT_TAKEN}; fi
kill "$watchdog" 2>/dev/null
kill -KILL -"$daemon" 2>/dev/null
rm -f "$pidfile"
exit $status
"#,
        deploy_to = quote(&config.deploy_to),
        access_hook = quote(ACCESS_HOOK),
        command = git_daemon_command(max_seconds, &port.to_string(), &served, ""),
    );
    RemoteScript { name: "git daemon", text }
}

/// The deploy's `git daemon` under `timeout` (which leads its process group): on 127.0.0.1
/// `port` (a number, or a shell word such as `"$1"`), serving `served` (shell words), accepting
/// pushes and nothing else (no fetch, no archive), admitting only what the access hook in
/// `$XTASK_DEPLOY_ACCESS_HOOK` lets in, for `max_seconds` at most; its continuation lines
/// indented by `indent`. For the daemon on a channel of its own, and the keeper's.
pub(super) fn git_daemon_command(max_seconds: u64, port: &str, served: &str, indent: &str) -> String {
    format!(
        "timeout -k 1 {max_seconds} {CHECKED_GIT} daemon --verbose --listen=127.0.0.1 --port={port} --strict-paths \\\n\
         {indent}  --export-all --enable=receive-pack --disable=upload-pack --disable=upload-archive \\\n\
         {indent}  --forbid-override=receive-pack --forbid-override=upload-pack --forbid-override=upload-archive \\\n\
         {indent}  --access-hook='sh -c \"$XTASK_DEPLOY_ACCESS_HOOK\" xtask-deploy-access' --informative-errors \
         --init-timeout=30 \\\n\
         {indent}  --timeout={max_seconds} {served}"
    )
}

/// The daemon's access hook, run as `sh -c <hook> xtask-deploy-access <service> <path> <host>
/// <canonical host> <ip> <port>` with the connection's `REMOTE_ADDR` and `REMOTE_PORT` in its
/// environment (git daemon's), and `XTASK_DEPLOY_PORT` and `XTASK_DEPLOY_UID` (the daemon
/// script's). It lets a push in when the connecting end, 127.0.0.1:`REMOTE_PORT` to this
/// daemon's port, belongs to the deploy user: `/proc/net/tcp` lists every TCP socket with its
/// owner's uid (hex ports; the address in the host's byte order). The deployer sends no `host`
/// field, so its arguments after the path are empty and git daemon looks no host name up.
/// One process (`awk`) per connection.
pub(super) const ACCESS_HOOK: &str = r#"refuse() { echo "not a connection of this deploy"; exit 1; }
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

/// git with every object a push brings checked as `git fsck --strict` does: a malformed tree (an
/// entry twice, `..`, `.git`, a `.gitmodules` trick) is refused, with git's own message, before
/// anything is stored. On the command line rather than in `repo/config`, so it holds in every
/// repository the deploy pushes to (the submodules' too), on servers set up by any version (or by
/// Capistrano); a child git (receive-pack under the daemon) inherits it.
///
/// `receive.shallowUpdate`: a push may bring commits whose parents it leaves out (the first
/// deploy sends the deployed tree, not the history; a shallow CI clone has no more to send).
pub(super) const CHECKED_GIT: &str = "git -c receive.fsckObjects=true -c receive.shallowUpdate=true";
