//! How a push reaches the server's `repo/`: the deploy's `git daemon` on the server's loopback
//! (its access hook admits only the deploy user's connections), or `git receive-pack` in an
//! exec channel (`transport = "exec"`); both check every object they receive.

use crate::config::Config;
use crate::shell::RemoteScript;


/// The access hook as git daemon is told it: git runs it as `sh -c '<this> "$@"' '<this>'
/// <arguments>`, so the function gets the arguments and `eval`s [`ACCESS_HOOK`] (from the
/// environment: nothing of it on a command line) in that one shell. `sh/daemon.sh` writes it
/// out; the tests run it.
#[cfg(test)]
pub(super) const ACCESS_HOOK_CALL: &str = r#"f() { eval "$XTASK_DEPLOY_ACCESS_HOOK"; }; f"#;

/// The daemon's access hook, run with the arguments `<service> <path> <host> <canonical host>
/// <ip> <port>` in the shell git daemon starts for it (a function `eval`s it: no second shell),
/// with the connection's `REMOTE_ADDR` and `REMOTE_PORT` in its environment (git daemon's), and
/// `XTASK_DEPLOY_PORT` and `XTASK_DEPLOY_UID` (the daemon script's). It lets a push in when
/// the connecting end, 127.0.0.1:`REMOTE_PORT` to this daemon's port, belongs to the deploy user: `/proc/net/tcp` lists every TCP socket with its
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
    let header = crate::shell::header(&[
        ("d", &config.deploy_to),
        ("repo", repo),
        ("create", if create { "1" } else { "0" }),
        ("checked_git", CHECKED_GIT),
    ]);
    RemoteScript { name: "git receive-pack", text: ["set -u\n", &header, RECEIVE_PACK].concat() }
}

/// `git receive-pack`'s shell (see [`receive_pack_script`]), with its header of what it expects.
const RECEIVE_PACK: &str = include_str!("sh/receive_pack.sh");

/// What [`bases_script`] runs (see the file's header).
const BASES: &str = include_str!("sh/bases.sh");

/// Prints a pack of what a deployer lacking the server's build output needs to make its own as
/// deltas against it: release commit `tip` (the server's newest, as it advertised it), its trees,
/// and the blobs under the artifact `paths` that are not among `have` (the deployer's own).
/// Exits 3 with nothing on stdout when the server's release ref no longer names `tip`.
pub fn bases_script(config: &Config, tip: &str, have: &[String], paths: &[&str]) -> RemoteScript {
    let have: Vec<&str> = have.iter().map(String::as_str).filter(|id| crate::local::is_object_name(id)).collect();
    let header = crate::shell::header(&[("d", &config.deploy_to), ("tip", tip), ("have", &have.join(" "))]);
    RemoteScript { name: "delta bases", text: [header, crate::shell::arguments(paths), BASES.to_string()].concat() }
}

/// git with every object a push brings checked as `git fsck --strict` does: a malformed tree (an
/// entry twice, `..`, `.git`, a `.gitmodules` trick) is refused, with git's own message, before
/// anything is stored. On the command line rather than in `repo/config`, so it holds in every
/// repository the deploy pushes to (the submodules' too), on servers set up by any version (or by
/// Capistrano); a child git (receive-pack under the daemon) inherits it.
///
/// `receive.autogc=false`: `repo/` is tidied after a confirmed deploy, never beside one (see
/// `sh/tidy.sh`), not by a `git gc --auto` a push would leave running.
///
/// `receive.shallowUpdate`: a push may bring commits whose parents it leaves out (the first
/// deploy sends the deployed tree, not the history; a shallow CI clone has no more to send).
pub(super) const CHECKED_GIT: &str =
    "git -c receive.fsckObjects=true -c receive.shallowUpdate=true -c receive.autogc=false";
