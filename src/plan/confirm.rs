//! Scripts for what happens after `current` moves: the health check, the marker that holds a
//! switched release as unconfirmed until the deployer confirms it, and going back to the
//! release a server had (by the deployer, or by the server itself when its deployer is lost).
//!
//! **Architecture Invariant:** like the rest of `plan`, this does no I/O; every value in a
//! script is quoted.

use crate::config::{Config, Healthcheck};
use crate::shell::{quote, RemoteScript};

use super::{Release, STATE_DIR};

/// The marker file (in the state directory) of a release switched to and not yet confirmed:
/// `token=`, `release=` and `previous=` lines.
pub const UNCONFIRMED: &str = "unconfirmed";

/// What the lock keeper prints on stdout once it has taken the deploy's confirmation.
pub const CONFIRMED: &str = "@@xtask-deploy-confirmed";

/// The line the deployer sends the lock keeper to confirm the deploy.
pub const CONFIRM: &str = "confirm";

/// What the health check prints when it passed: `<HEALTHY> <tries> <elapsed ms>`.
pub const HEALTHY: &str = "@@xtask-deploy-healthy";

/// What the health check prints when it did not pass in time: `<UNHEALTHY> <tries> <elapsed ms>`.
pub const UNHEALTHY: &str = "@@xtask-deploy-unhealthy";

/// Shell lines that run `commands` (after_publish hooks) one after another in
/// `$d/releases/$rel`, with the hooks' environment and `ROLLBACK=1`, each within `limit_secs`;
/// a failing one is reported as a `hook-failed <index> <status>` line and the next still runs.
/// Each runs under `timeout` in a process group of its own: a restart that has begun finishes
/// even when the step that started it is stopped (the deployer was lost mid-way).
pub fn run_restart_hooks(commands: &[&str], limit_secs: u64) -> String {
    let mut text = String::new();
    for (index, command) in commands.iter().enumerate() {
        text.push_str(&format!(
            "( cd \"$d/releases/$rel\" && rev=- && {{ read -r rev < REVISION; }} 2>/dev/null; \
             export DEPLOY_TO=\"$d\" RELEASE=\"$rel\" RELEASE_PATH=\"$d/releases/$rel\" REVISION=\"$rev\" ROLLBACK=1; \
             exec timeout -k 1 {limit_secs} sh -c {command} ) </dev/null >&2 || echo \"hook-failed {index} $?\"\n",
            command = quote(command),
        ));
    }
    text
}

/// A shell function `revert` that, when `current` still points at `releases/$release`,
/// switches it back to `releases/$previous` (atomically), marks `$release` bad, logs the
/// rollback in `revisions.log` as `$user`, and runs the restart `hooks` for the restored
/// release. Prints `reverted <from> <to>`; returns 1 (printing `cannot-revert <why>`) when
/// there is no release to go back to. Needs `$d`, `$state`, `$release`, `$previous`, `$user`.
pub fn revert_function(hooks: &[&str], limit_secs: u64) -> String {
    format!(
        r#"revert() {{
  case "$(readlink "$d/current" 2>/dev/null)" in
    */releases/"$release") ;;
    *) echo "not-switched $release"; return 0 ;;
  esac
  if [ -z "$previous" ] || [ ! -d "$d/releases/$previous" ]; then
    echo "cannot-revert no earlier release to go back to"; return 1
  fi
  rel=$previous
  ( cd "$d" && if [ -e releases/current ] || [ -L releases/current ]; then rm -f releases/current; fi &&
    ln -s "$d/releases/$rel" releases/current && mv -T releases/current current ) || {{ echo "cannot-revert the switch failed"; return 1; }}
  echo "$release" >> "$state/bad"
  printf '%s rolled back to release %s\n' "$user" "$rel" >> "$d/revisions.log"
  echo "reverted $release $rel"
{hooks}}}"#,
        hooks = run_restart_hooks(hooks, limit_secs),
    )
}

/// Goes back to the release a server had before this deploy switched it to `release`: what
/// the deployer runs on every switched server when the deploy fails after the switch.
pub fn revert_script(
    config: &Config,
    release: &str,
    previous: Option<&str>,
    user: &str,
    hooks: &[&str],
) -> RemoteScript {
    let text = format!(
        r#"set -u
d={deploy_to}
state="$d/{STATE_DIR}"
release={release}
previous={previous}
user={user}
{revert}
revert || exit 1
rm -f "$state/{UNCONFIRMED}"
"#,
        deploy_to = quote(&config.deploy_to),
        release = quote(release),
        previous = quote(previous.unwrap_or("")),
        user = quote(user),
        revert = revert_function(hooks, config.timeouts.step.as_secs()),
    );
    RemoteScript { name: "revert", text }
}

/// Tries `healthcheck` in `release` until it exits 0 (printing [`HEALTHY`], the tries and the
/// milliseconds taken) or its timeout passes (printing [`UNHEALTHY`], exit 1, with the last
/// try's output on stderr). A try still running at the timeout is stopped with its children
/// (a `curl` under its `sh`). Tries run in the step's process group, which is stopped whole
/// with the step when its deployer is lost.
pub fn health_script(config: &Config, release: &Release, healthcheck: &Healthcheck) -> RemoteScript {
    let timeout = healthcheck.timeout.as_secs();
    let text = format!(
        r#"set -u
d={deploy_to}
rel={name}
cd "$d/releases/$rel" || exit 1
export DEPLOY_TO="$d" RELEASE="$rel" RELEASE_PATH="$d/releases/$rel" REVISION={sha}
log=$(mktemp) || exit 1
trap 'rm -f "$log"; exit 143' TERM INT HUP
start=$(date +%s%N)
deadline=$(( $(date +%s) + {timeout} ))
tries=0
while :; do
  tries=$((tries + 1))
  sh -c {command} >"$log" 2>&1 </dev/null &
  try=$!
  late=0
  # Tenths of a second left before the deadline for this try, and at least one second.
  ticks=$(( ($deadline - $(date +%s)) * 10 ))
  [ "$ticks" -ge 10 ] || ticks=10
  while kill -0 "$try" 2>/dev/null; do
    if [ "$ticks" -le 0 ]; then
      late=1
      # Frozen first, so that it starts nothing more; then its children; then itself.
      kill -STOP "$try" 2>/dev/null; pkill -TERM -P "$try" 2>/dev/null
      kill -TERM "$try" 2>/dev/null; kill -CONT "$try" 2>/dev/null; sleep 1
      pkill -KILL -P "$try" 2>/dev/null; kill -KILL "$try" 2>/dev/null
      break
    fi
    ticks=$((ticks - 1))
    sleep 0.1
  done
  wait "$try"
  status=$?
  # A try stopped at the timeout failed, whatever it exited with.
  if [ "$status" -eq 0 ] && [ "$late" -eq 0 ]; then
    rm -f "$log"
    echo "{HEALTHY} $tries $(( ($(date +%s%N) - start) / 1000000 ))"
    exit 0
  fi
  [ "$(date +%s)" -lt "$deadline" ] || break
  sleep {interval}
done
echo "{UNHEALTHY} $tries $(( ($(date +%s%N) - start) / 1000000 ))"
printf 'the health check did not pass within %ss (%s tries); its last output:\n%s\n' {timeout} "$tries" "$(tail -c 2000 "$log")" >&2
rm -f "$log"
exit 1
"#,
        deploy_to = quote(&config.deploy_to),
        name = quote(&release.name),
        sha = quote(&release.sha),
        command = quote(&healthcheck.command),
        interval = healthcheck.interval.as_secs(),
    );
    RemoteScript { name: "healthcheck", text }
}

/// The lines the publish script writes into [`UNCONFIRMED`] before it switches.
pub fn unconfirmed_lines(token: &str, release: &str) -> String {
    format!(
        "printf '%s\\n' {} {} \"previous=$previous\" > \"$d/{STATE_DIR}/{UNCONFIRMED}\"",
        quote(&format!("token={token}")),
        quote(&format!("release={release}"))
    )
}

#[cfg(test)]
mod tests;
