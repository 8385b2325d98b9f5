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

/// What the health check prints when it passed: `<HEALTHY> <tries> <elapsed ms>`.
pub const HEALTHY: &str = "@@xtask-deploy-healthy";

/// How the health check's failure message on stderr begins (the tail of its last try follows).
pub const HEALTH_OUTPUT: &str = "the health check did not pass";

/// What the health check prints when it did not pass in time: `<UNHEALTHY> <tries> <elapsed ms>`.
pub const UNHEALTHY: &str = "@@xtask-deploy-unhealthy";

/// Shell lines that run `commands` (after_publish hooks) one after another in
/// `$d/releases/$rel`, with the hooks' environment and `ROLLBACK=1`, each within `limit_secs`;
/// a failing one is reported as a `hook-failed <index> <status>` line and the next still runs.
/// Each runs under `timeout` in a process group of its own: a restart that has begun finishes
/// even when the step that started it is stopped (the deployer was lost mid-way).
pub fn run_restart_hooks(commands: &[crate::plan::Restart], limit_secs: u64) -> String {
    let mut text = String::new();
    for (index, command) in commands.iter().enumerate() {
        text.push_str(&format!(
            "( cd \"$d/releases/$rel\" && rev=- && {{ read -r rev < REVISION; }} 2>/dev/null; \
             export DEPLOY_TO=\"$d\" RELEASE=\"$rel\" RELEASE_PATH=\"$d/releases/$rel\" REVISION=\"$rev\" ROLLBACK=1; \
             {command}; exec timeout -k 1 {limit_secs} {run} ) </dev/null >&2 || echo \"hook-failed {index} $?\"\n",
            command = crate::shell::export_command(&command.command),
            run = crate::shell::RUN_EXPORTED,
        ));
    }
    text
}

/// Shell functions: `go_back`, which, when `current` still points at `releases/$release`,
/// switches it back to `releases/$previous` (atomically, through a link of its own), forgets the
/// [`UNCONFIRMED`] marker if it names `$release`, marks `$release` bad and logs the rollback in
/// `revisions.log` as `$user`. It prints `reverted <from> <to>` and sets `went_back=1`;
/// `not-switched <release>` when `current` is elsewhere; `cannot-revert <why>` (and returns 1)
/// when there is no release to go back to. It runs no hook: the restart is a step of its own.
/// Needs `$d`, `$state`, `$release`, `$previous`, `$user`.
///
/// Also `hold_switch` and `drop_switch`: while the deploy's lock is held, one process at a time
/// goes back or confirms (the deployer's step, and the keeper's watch, may try at once). The
/// one that does holds `$state/lock/switching`, with its pid (`$self`, else `$$`); one left
/// by a process that is gone is taken over.
pub const GO_BACK: &str = r#"hold_switch() {
  [ -d "$state/lock" ] || return 0
  waited=0
  unnamed=0
  until mkdir "$state/lock/switching" 2>/dev/null; do
    [ -d "$state/lock" ] || return 0
    holder=""
    { read -r holder < "$state/lock/switching/pid"; } 2>/dev/null
    case "$holder" in
      # Taken a moment ago, its pid not written yet; or by one killed right then.
      ''|*[!0-9]*) unnamed=$((unnamed + 1)); gone=$([ "$unnamed" -ge 20 ] && echo 1) ;;
      *) unnamed=0; gone=$(kill -0 "$holder" 2>/dev/null || echo 1) ;;
    esac
    if [ -n "$gone" ]; then
      # One at a time: the rename succeeds for one of those who found it stale.
      if mv "$state/lock/switching" "$state/lock/switching.stale.${self:-$$}" 2>/dev/null; then
        rm -rf "$state/lock/switching.stale.${self:-$$}"
      fi
      continue
    fi
    waited=$((waited + 1))
    # A minute at most: then it goes on (as it did before the lock had this).
    [ "$waited" -lt 600 ] || return 0
    sleep 0.1 2>/dev/null || sleep 1
  done
  { echo "${self:-$$}" > "$state/lock/switching/pid"; } 2>/dev/null
  return 0
}
drop_switch() {
  holder=""
  { read -r holder < "$state/lock/switching/pid"; } 2>/dev/null
  if [ "$holder" = "${self:-$$}" ]; then rm -rf "$state/lock/switching"; fi
}
forget_marker() {
  if grep -qxF "release=$release" "$state/unconfirmed" 2>/dev/null; then rm -f "$state/unconfirmed"; fi
}
go_back() {
  hold_switch
  switch_back
  status=$?
  drop_switch
  return "$status"
}
switch_back() {
  went_back=0
  case "$(readlink "$d/current" 2>/dev/null)" in
    */releases/"$release") ;;
    *) forget_marker; echo "not-switched $release"; return 0 ;;
  esac
  if [ -z "$previous" ] || [ ! -d "$d/releases/$previous" ]; then
    # It stays live, but it failed: marked bad, so that nothing takes it for a good release.
    if ! grep -qxF "$release" "$state/bad" 2>/dev/null; then echo "$release" >> "$state/bad"; fi
    echo "cannot-revert no earlier release to go back to"; return 1
  fi
  link="$d/releases/.current.$$"
  rm -f "$link"
  if ! { ln -s "$d/releases/$previous" "$link" && mv -T "$link" "$d/current"; }; then
    rm -f "$link"; echo "cannot-revert the switch failed"; return 1
  fi
  forget_marker
  echo "$release" >> "$state/bad"
  printf '%s rolled back to release %s\n' "$user" "$previous" >> "$d/revisions.log"
  went_back=1
  echo "reverted $release $previous"
}"#;

/// Goes back to the release a server had before this deploy switched it to `release`: what
/// the deployer runs on every switched server when the deploy fails after the switch. The
/// restart hooks are [`restart_script`], run after it.
pub fn revert_script(config: &Config, release: &str, previous: Option<&str>, user: &str) -> RemoteScript {
    let text = format!(
        r#"set -u
d={deploy_to}
state="$d/{STATE_DIR}"
release={release}
previous={previous}
user={user}
{GO_BACK}
go_back
"#,
        deploy_to = quote(&config.deploy_to),
        release = quote(release),
        previous = quote(previous.unwrap_or("")),
        user = quote(user),
    );
    RemoteScript { name: "revert", text }
}

/// Runs the restart `hooks` (the `after_publish` hooks) for `release`, which a server went back
/// to, with `ROLLBACK=1`; a failing one prints `hook-failed <index> <status>`.
pub fn restart_script(config: &Config, release: &str, hooks: &[crate::plan::Restart]) -> RemoteScript {
    let text = format!(
        "set -u\nd={deploy_to}\nrel={release}\n{hooks}",
        deploy_to = quote(&config.deploy_to),
        release = quote(release),
        hooks = run_restart_hooks(hooks, config.timeouts.step.as_secs()),
    );
    RemoteScript { name: "restart", text }
}

/// Tries `healthcheck` in `release` until it exits 0 (printing [`HEALTHY`], the tries and the
/// milliseconds taken) or its timeout passes (printing [`UNHEALTHY`], exit 1, with the last
/// try's output on stderr after [`HEALTH_OUTPUT`]). A try still running at the timeout is
/// stopped with everything it started; so is one running when the step is stopped.
///
/// With `watch` (the shell of [`crate::plan::service::health_watch`]) it also watches the
/// services: when one is not active after a try, the check fails at once, whatever the try
/// said, instead of trying until its timeout.
pub fn health_script(
    config: &Config,
    release: &Release,
    healthcheck: &Healthcheck,
    watch: Option<&str>,
) -> RemoteScript {
    let timeout = healthcheck.timeout.as_secs();
    let text = format!(
        r#"set -u
d={deploy_to}
rel={name}
cd "$d/releases/$rel" || exit 1
export DEPLOY_TO="$d" RELEASE="$rel" RELEASE_PATH="$d/releases/$rel" REVISION={sha} ROLLBACK=
log=$(mktemp) || exit 1
# Tries run in the step's process group: stopped with the step (its deployer was lost), the
# whole group goes, tries included.
trap 'rm -f "$log"; exit 143' TERM INT HUP
# Freezes a process and everything below it (so that none starts more), then kills them all.
stop_tree() {{
  kill -STOP "$1" 2>/dev/null
  for child in $(pgrep -P "$1" 2>/dev/null); do stop_tree "$child"; done
  kill -KILL "$1" 2>/dev/null
}}
# Milliseconds since the epoch (busybox's `date` has no %N: whole seconds then).
now_ms() {{
  n=$(date +%s%N)
  case "$n" in *[!0-9]*|'') echo $(( $(date +%s) * 1000 )) ;; *) echo $(( n / 1000000 )) ;; esac
}}
{watch}
start=$(now_ms)
deadline=$(( start + {timeout} * 1000 ))
tries=0
while :; do
  tries=$((tries + 1))
  ( {command}; exec {run} ) >"$log" 2>&1 </dev/null &
  try=$!
  late=0
  # Tenths of a second left before the deadline for this try, and at least one second.
  ticks=$(( (deadline - $(now_ms)) / 100 ))
  [ "$ticks" -ge 10 ] || ticks=10
  while kill -0 "$try" 2>/dev/null; do
    if [ "$ticks" -le 0 ]; then
      late=1
      stop_tree "$try"
      break
    fi
    ticks=$((ticks - 1))
    sleep 0.1
  done
  wait "$try"
  status=$?
  # A service that stopped fails the check at once, whatever the try said.
  if down=$(services_down); then
    echo "{UNHEALTHY} $tries $(( $(now_ms) - start ))"
    printf '{HEALTH_OUTPUT}: service `%s` stopped during it (%s)\n' "$down" "$(services_state "$down")" >&2
    rm -f "$log"
    exit 1
  fi
  # A try stopped at the timeout failed, whatever it exited with.
  if [ "$status" -eq 0 ] && [ "$late" -eq 0 ]; then
    rm -f "$log"
    echo "{HEALTHY} $tries $(( $(now_ms) - start ))"
    exit 0
  fi
  [ "$(now_ms)" -lt "$deadline" ] || break
  sleep {interval}
done
echo "{UNHEALTHY} $tries $(( $(now_ms) - start ))"
last=$(tail -c 2000 "$log")
[ -n "$last" ] || last="(it printed nothing)"
printf '{HEALTH_OUTPUT} within %ss (%s tries); its last output:\n%s\n' {timeout} "$tries" "$last" >&2
rm -f "$log"
exit 1
"#,
        deploy_to = quote(&config.deploy_to),
        name = quote(&release.name),
        sha = quote(&release.sha),
        command = crate::shell::export_command(&healthcheck.command),
        run = crate::shell::RUN_EXPORTED,
        interval = healthcheck.interval.as_secs(),
        watch = watch.unwrap_or("services_down() { return 1; }"),
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
