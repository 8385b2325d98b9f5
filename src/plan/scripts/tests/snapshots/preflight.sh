set -u
d=/srv/app
lock_info='user=alice
host=laptop
since=2026-11-25T04:16:38Z
sha=0123456789abcdef0123456789abcdef01234567
message=hotfix for #12
token=t0k3n'
lock_user=alice
exit_locked=5
checked_git='git -c receive.fsckObjects=true -c receive.shallowUpdate=true -c receive.autogc=false'
pushed_fifo=pushed
daemon_log=daemon.log
say_beat=beat
say_confirm=confirm
say_run=run
say_kept=kept
say_stop=stop
say_pushed=pushed
say_pushing=pushing
beat_answer=006
answer_ready=@@xtask-deploy-ready
ours='token=t0k3n'
restart_count=1
restart_limit=600
restart_0='systemctl restart app'
# shellcheck shell=sh disable=SC2154 # `d` is set by the script it is part of
# The server's readiness for a deploy: `require_git` exits 3 (`EXIT_NO_GIT`) without git, with
# the fix; `require_setup` exits 4 (`EXIT_NOT_SET_UP`) when `deploy-setup` did not run. Expects:
# `d`.
require_git() {
  if ! command -v git >/dev/null 2>&1; then
    echo "git is not installed on the server: install it (for example \`apt-get install git\`)" >&2
    exit 3
  fi
}
require_setup() {
  if [ ! -d "$d/releases" ] || [ ! -f "$d/repo/HEAD" ] || [ ! -d "$d/repo/objects" ] || [ ! -d "$d/repo/refs" ]; then
    echo "\`$d\` is not set up for deploys: run \`cargo xtask deploy-setup\` first" >&2
    exit 4
  fi
}
# shellcheck shell=sh disable=SC2154,SC2034,SC2086 # values set and read by the other pieces; words split on purpose
# The lock keeper's first lines (see `keeper_script` in lock.rs, which puts keeper_take.sh,
# keeper_serve.sh and keeper_loop.sh after it, with state.sh first). Expects: `d`,
# `require_git`, `require_setup`.
# The deployer may vanish at any time: a write to its channel must fail, not kill this shell
# before it cleans up (a handler, not an ignored signal: the commands it starts get the default).
trap 'gone=1' PIPE
require_git
require_setup
# shellcheck shell=sh disable=SC2154,SC2034 # `d` is set by the header before it; `state` is read by what follows
# The private state directory of `deploy_to` (the lock, the marks, the kept scripts).
# Expects: `d`. Sets: `state`.
state="$d/.xtask-deploy"
# shellcheck shell=sh disable=SC2154,SC2034 # its values are set, and `went_back` read, by the script it is part of
# Going back to the release a server had (see `GO_BACK` in confirm.rs for what each function
# does). Expects: `d`, `state`, `release`, `previous`, `user`, and `self` if set (else `$$`).
# Defines `hold_switch`, `drop_switch`, `forget_marker`, `go_back`, `switch_back`; sets
# `went_back`, `waited`, `unnamed`, `holder`, `gone`, `link`, `status`.
hold_switch() {
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
}
# shellcheck shell=sh disable=SC2154 # its values are set by the script it is part of
# The lock's helpers, shell builtins only: the preflight runs on every deploy, and each external
# command would be one more process started on the server.
# Expects: `state` (for `holder_alive`). Defines:
# - `start_time PID`: the process's start time (field 22 of /proc/PID/stat), empty if it is gone;
# - `has_line LINE FILE`: whether FILE has the line LINE;
# - `each_line FILE PREFIX`: prints each line of FILE after PREFIX and a space;
# - `holder_alive`: whether the lock's holder still runs: the sshd process of its deploy's SSH
#   connection, or its keeper (same pid and start time, so a reused pid does not count);
# - `alive PID START`: whether that process runs.
# Sets: `line`, `stat`, `holder`, `keeper`.
start_time() {
  { read -r stat < "/proc/$1/stat"; } 2>/dev/null || return 0
  # shellcheck disable=SC2086 # split into the fields after the name
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
  # shellcheck disable=SC2086 # `connection=` holds a pid and a start time, split in two
  alive $holder && return 0
  # shellcheck disable=SC2086 # as above
  [ -n "$keeper" ] && alive $keeper
}
alive() {
  [ -n "${2:-}" ] && [ "$(start_time "$1")" = "$2" ]
}
# shellcheck shell=sh disable=SC2154 # its values are set by the script it is part of
# `drop_lock`: releases the lock `$lock` at once, by a rename, then removes it: a write into it
# that races with the removal (the keeper notes every line it reads there) cannot keep a
# directory named `lock`, without its `info`, in place.
# Expects: `state`, `lock`. Sets: `gone`.
drop_lock() {
  gone="$state/.lock-gone.${self:-$$}"
  if mv -T "$lock" "$gone" 2>/dev/null; then rm -rf "$gone"; else rm -rf "$lock"; fi
}
# shellcheck shell=sh disable=SC2154 # its values are set by the script it is part of
# `release_lock`: removes `$lock` (exiting when there is none), printing its holder as
# `removed <key>=<value>` lines. With `ours` set, only when the lock holds it: a deploy never
# removes a lock it did not take.
# Expects: `lock`, `ours` (may be unset), the lock helpers and `drop_lock`.
release_lock() {
  [ -d "$lock" ] || exit 0
  if [ -n "${ours:-}" ]; then
    has_line "$ours" "$lock/info" || { echo "the lock is not ours; left in place"; exit 0; }
  fi
  each_line "$lock/info" removed
  drop_lock
}
# shellcheck shell=sh disable=SC2154 # its values are set by the script it is part of
# Keeps `repo/` from growing without bound. Every deploy brings a release commit; a push of
# fewer than 100 objects arrives loose, each binary whole, and nothing removed them.
# `tidy_repo` runs in the lock's keeper after a confirmed deploy, once its deployer is gone (off
# the deploy's path): when loose objects or packs have piled up, it points refs
# (`refs/xtask-kept/{release,source}/<release>`) at the commits of each release still on disk
# (what the next release reuses, and the subjects `releases` shows), drops the refs of releases
# that are gone, and runs `git gc --prune=now` at the lowest priority: whatever no ref reaches
# goes. (Rollback reads nothing from `repo/`: a release directory is whole.)
# It never runs beside a deploy. It holds `$state/tidying`, not the lock, and starts only while
# nobody holds the lock; a deploy that takes the lock stops it (`stop_tidying`, in the
# preflight). Each makes its own directory first and then looks for the other's, so one of them
# always sees the other. A git gc cut short leaves lock and temporary files, which are removed,
# and objects as they were (it deletes a pack or a loose object only once a new pack holds it,
# or when no ref reaches it).
# Expects: `d`, `state`, and the lock helpers (`start_time`, `alive`, `has_line`).
tidy_repo() {
  repo="$d/repo"
  loose=0 size=0 packs=0
  while IFS=': ' read -r key value; do
    case "$key" in count) loose=$value ;; size) size=$value ;; packs) packs=$value ;; esac
  done <<EOF
$(git --git-dir="$repo" count-objects -v 2>/dev/null)
EOF
  # Due at a MiB of loose objects (a binary or two), 256 of them, or 8 packs.
  [ "$size" -ge 1024 ] || [ "$loose" -ge 256 ] || [ "$packs" -ge 8 ] || return 0
  # It runs in a process group of its own, so that stopping it stops every git it starts;
  # without `setsid` it could not be stopped whole, and it does not run.
  command -v setsid >/dev/null 2>&1 || return 0
  tidying="$state/tidying"
  mine="tidying=$$ $(start_time "$$")"
  # Made whole, its `info` in it, by one rename: who finds the directory finds who holds it.
  rm -rf "$tidying.$$"
  mkdir -m 700 "$tidying.$$" 2>/dev/null || return 0
  echo "$mine" > "$tidying.$$/info"
  if ! mv -T "$tidying.$$" "$tidying" 2>/dev/null; then
    holder=""
    { read -r holder < "$tidying/info"; } 2>/dev/null
    # shellcheck disable=SC2086 # pid and start time
    if alive ${holder#tidying=}; then rm -rf "$tidying.$$"; return 0; fi
    # Left by a keeper that died (a reboot, a kill): its git gc, if it still runs, stops too;
    # by the next deploy's preflight, if one holds the lock.
    if [ -d "$state/lock" ]; then rm -rf "$tidying.$$"; return 0; fi
    stop_tidying
    mv -T "$tidying.$$" "$tidying" 2>/dev/null || { rm -rf "$tidying.$$"; return 0; }
  fi
  if [ -d "$state/lock" ]; then rm -rf "$tidying"; return 0; fi
  # Kept: each release's commit as its tree was recorded (the build output's, with `reuse`),
  # and its REVISION (the deployed commit, whose subject `releases` shows).
  if ! {
    git --git-dir="$repo" for-each-ref --format='%(refname)' refs/xtask-kept/ | while IFS= read -r ref; do
      [ -d "$d/releases/${ref##*/}" ] || echo "delete $ref"
    done
    for r in "$d"/releases/[0-9]*; do
      name=${r##*/}
      case "$name" in *[!0-9]*) continue ;; esac
      for kind in release source; do
        commit=""
        case "$kind" in
          release) { read -r commit < "$state/tree.$name"; } 2>/dev/null ;;
          source) { read -r commit < "$r/REVISION"; } 2>/dev/null ;;
        esac
        case "$commit" in *[!0-9a-f]*|'') continue ;; esac
        # Only a commit the repository has: a release an older tool made may name none.
        if git --git-dir="$repo" cat-file -e "$commit^{commit}" 2>/dev/null; then
          echo "update refs/xtask-kept/$kind/$name $commit"
        fi
      done
    done
  } | git --git-dir="$repo" update-ref --stdin 2>/dev/null; then
    # Without every ref, git gc could take what a kept release needs.
    rm -rf "$tidying"
    return 0
  fi
  low=""
  command -v nice >/dev/null 2>&1 && low="nice -n 19"
  command -v ionice >/dev/null 2>&1 && low="ionice -c 3 $low"
  # Not once a deploy took the lock (it waits for the line below, or for this process to end).
  if [ -d "$state/lock" ] || ! has_line "$mine" "$tidying/info"; then rm -rf "$tidying"; return 0; fi
  setsid sh -c "exec $low git --git-dir=\"\$1\" gc --prune=now --quiet" sh "$repo" </dev/null >/dev/null 2>&1 &
  gc=$!
  echo "gc=$gc $(start_time "$gc")" >> "$tidying/info"
  # A deploy that took the lock between the look above and the start stops it (it waits for
  # the line just written); this stops it too, whatever that deploy saw.
  if [ -d "$state/lock" ] || ! has_line "$mine" "$tidying/info"; then kill -KILL -"$gc" 2>/dev/null; fi
  wait "$gc"
  # Unless a deploy stopped it (and removed it).
  if has_line "$mine" "$tidying/info"; then rm -rf "$tidying"; fi
}
# Stops the tidying of `repo/` under way, if any, and removes what a git gc cut short leaves.
# Called by a deploy once it holds the lock.
stop_tidying() {
  tidying="$state/tidying"
  [ -d "$tidying" ] || return 0
  tries=0
  while :; do
    holder=""
    gc=""
    [ -d "$tidying" ] || return 0
    { while IFS= read -r line || [ -n "$line" ]; do
      case "$line" in tidying=*) holder=${line#tidying=} ;; gc=*) gc=${line#gc=} ;; esac
    done < "$tidying/info"; } 2>/dev/null
    # Between making its directory and starting git gc, the tidying writes nothing else, and
    # gives up when it sees the lock: a moment (its refs' update at most).
    # shellcheck disable=SC2086 # pid and start time
    if [ -n "$gc" ] || [ -z "$holder" ] || ! alive $holder || [ "$tries" -ge 300 ]; then break; fi
    sleep 0.1 2>/dev/null || sleep 1
    tries=$((tries + 1))
  done
  rm -rf "$tidying"
  [ -n "$gc" ] || return 0
  # shellcheck disable=SC2086 # pid and start time
  set -- $gc
  if alive "$1" "${2:-}"; then
    # At once (git takes a second or more to act on TERM mid-repack, which the deploy would
    # wait for); what git leaves then, its lock and temporary files, goes below.
    kill -KILL -"$1" 2>/dev/null
    tries=0
    while group_runs "$1" && [ "$tries" -lt 40 ]; do
      sleep 0.05 2>/dev/null || sleep 1
      tries=$((tries + 1))
    done
  fi
  # Nothing else works in `repo/` without the lock: every lock file there is one git gc left.
  find "$d/repo/" -name '*.lock' -type f -exec rm -f {} + 2>/dev/null
  rm -f "$d/repo"/objects/pack/.tmp-* "$d/repo"/objects/pack/tmp_* "$d/repo/gc.pid" 2>/dev/null
  return 0
}
# Whether a process of group $1 still runs (not a zombie: git's children, orphaned when it
# dies, wait for init to reap them, which some inits do late or never).
group_runs() {
  for stat in /proc/[0-9]*/stat; do
    { read -r line < "$stat"; } 2>/dev/null || continue
    # shellcheck disable=SC2086 # the fields after the command's name
    set -- "$1" ${line##*) }
    [ "${4:-}" = "$1" ] && [ "${2:-}" != Z ] && return 0
  done
  return 1
}
# shellcheck shell=sh disable=SC2154,SC2016 # its values are set by the script it is part of; the quoted code runs later
# `run_restart_hooks`: runs the restart hooks (the `after_publish` hooks) `restart_0` ...
# `restart_<restart_count - 1>` one after another in `$d/releases/$rel`, which a server went
# back to, each with the hooks' environment and `ROLLBACK=1`, within `restart_limit` seconds;
# a failing one prints `hook-failed <index> <status>` and the next still runs. Each runs under
# `timeout` in a process group of its own: a restart that has begun finishes even when the step
# that started it is stopped (the deployer was lost mid-way). Its command is on no command line
# (see `RUN_EXPORTED`).
# Expects: `d`, `rel`, `restart_count`, `restart_limit`, `restart_<index>`. Sets:
# `restart_index`, `restart_hook`.
run_restart_hooks() {
  restart_index=0
  while [ "$restart_index" -lt "$restart_count" ]; do
    eval "restart_hook=\$restart_$restart_index"
    ( cd "$d/releases/$rel" && rev=- && { read -r rev < REVISION; } 2>/dev/null; export DEPLOY_TO="$d" RELEASE="$rel" RELEASE_PATH="$d/releases/$rel" REVISION="$rev" ROLLBACK=1; XTASK_DEPLOY_RUN=$restart_hook; export XTASK_DEPLOY_RUN; exec timeout -k 1 "$restart_limit" sh -c 'xtask_deploy_command=$XTASK_DEPLOY_RUN; unset XTASK_DEPLOY_RUN; eval "$xtask_deploy_command"' ) </dev/null >&2 || echo "hook-failed $restart_index $?"
    restart_index=$((restart_index + 1))
  done
}
# shellcheck shell=sh disable=SC2154,SC2034,SC2086 # values set and read by the other pieces; words split on purpose
# Takes the deploy's lock (or says who holds it, and exits `$exit_locked`), then tidies what an
# earlier deploy left: receive-packs, unfinished releases, orphaned daemons, a release it
# switched to and never confirmed; makes the FIFOs the push and the daemon's log go through.
# Expects: `d`, `state`, `ours`, `lock_info`, `lock_user`, `exit_locked`, `checked_git`,
# `pushed_fifo`, `daemon_log`, the restart hooks' values, the lock helpers, `stop_tidying`,
# `go_back` and `run_restart_hooks`. Sets: `pushed` (the FIFO, or empty), and defines
# `stop_receive_packs`, `remove_unfinished` and `go_back_from_marker`.
# Stops every `git receive-pack` of `transport = "exec"` named by a pid file (the process group:
# receive-pack and any hook it runs). Run only while holding the lock, when the push that
# started it is over or its deployer is gone.
stop_receive_packs() {
  for pidfile in "$state"/receive-pack.*.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    case "$pid" in ''|*[!0-9]*) rm -f "$pidfile"; continue ;; esac
    # (The braces: a redirection that fails is reported before a `2>` after it applies.)
    case "$({ tr '\0' ' ' < "/proc/$pid/cmdline"; } 2>/dev/null)" in
      # Ours: its script's shell (named so by the bootstrap), or receive-pack itself (a shell that
      # exec'd it, of an older version), whatever `-c` options it runs with.
      *" xtask-deploy-git-receive-pack "*|*"git "*"receive-pack"*) kill -TERM -"$pid" "$pid" 2>/dev/null; echo "reaped $pid" ;;
    esac
    rm -f "$pidfile"
  done
}
# Removes the releases that a deploy prepared but never published or discarded (it was
# interrupted or killed), unless one became current, with the record of its tree; and every
# reuse work directory (`reuse.<release>`): one lives only while a release is prepared, which no
# step does while this runs. A step stopped with SIGTERM or SIGKILL runs no EXIT trap, so its
# own clean-up cannot be relied on. Run only while holding the lock.
remove_unfinished() {
  for marker in "$state"/preparing.*; do
    [ -f "$marker" ] || continue
    unfinished=${marker##*/preparing.}
    case "$unfinished" in ''|*[!0-9]*) continue ;; esac
    case "$(readlink "$d/current" 2>/dev/null)" in
      */releases/"$unfinished") ;;
      *) rm -rf "$d/releases/$unfinished" "$state/tree.$unfinished"; echo "unfinished $unfinished" ;;
    esac
    rm -f "$marker"
  done
  for w in "$state"/reuse.*; do [ -d "$w" ] && rm -rf "$w"; done
}
[ -d "$state" ] || mkdir -p "$state"
if ! mkdir -m 700 "$state/lock" 2>/dev/null; then
  if holder_alive; then
    each_line "$state/lock/info" holder
    exit "$exit_locked"
  fi
  # The holder's SSH connection is gone (it was killed or cut off): the lock is stale.
  each_line "$state/lock/info" stale
  rm -rf "$state/lock"
  if ! mkdir -m 700 "$state/lock" 2>/dev/null; then echo "holder user=another deploy, just now"; exit "$exit_locked"; fi
fi
printf '%s\n' "$lock_info" "connection=$PPID $(start_time "$PPID")" "keeper=$$ $(start_time "$$")" > "$state/lock/info"
# A server set up by an older version has them readable by every local user.
chmod go= "$d/repo" "$state" "$state/lock/info"
# What a release of an earlier lock left (one its keeper was stopped in the middle of).
for gone in "$state"/.lock-gone.*; do [ -d "$gone" ] && rm -rf "$gone"; done
stop_receive_packs
remove_unfinished
for pidfile in "$state"/daemon.*.pid; do
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  case "$pid" in ''|*[!0-9]*) rm -f "$pidfile"; continue ;; esac
  cmd=$({ tr '\0' ' ' < "/proc/$pid/cmdline"; } 2>/dev/null || true)
  case "$cmd" in
    *"git daemon"*"$d/repo"*|*"$checked_git daemon"*"$d/repo"*)
      # Only a daemon whose watching script is gone (re-parented to init) is stale.
      # The parent pid is the second field after the command name in /proc/<pid>/stat.
      stat=$(cat "/proc/$pid/stat" 2>/dev/null || true)
      set -- ${stat##*) }
      if [ "${2:-}" = 1 ]; then kill -KILL -"$pid" "$pid" 2>/dev/null; echo "reaped $pid"; rm -f "$pidfile"; fi ;;
    *) rm -f "$pidfile" ;;
  esac
done
# The tidying of `repo/` after an earlier deploy gives way (see tidy.sh): after the processes
# above, whose git lock files it would take for its own.
stop_tidying
# Goes back from the release the unconfirmed marker names, and restarts the one gone back to.
go_back_from_marker() {
  release=""
  previous=""
  while IFS= read -r line; do
    case "$line" in release=*) release=${line#release=} ;; previous=*) previous=${line#previous=} ;; esac
  done < "$state/unconfirmed"
  user=$lock_user
  go_back || true
  if [ "$went_back" = 1 ]; then
    rel=$previous
    run_restart_hooks
  fi
}
# A release an earlier deploy switched to and never confirmed, whose keeper died (the server
# rebooted) before it could go back: nobody checked it. Go back now, before anything else.
if [ -f "$state/unconfirmed" ]; then
  go_back_from_marker
  rm -f "$state/unconfirmed"
fi
# The batch sent ahead of the push waits on this FIFO, not polling: a line is written to it when
# a connection to the daemon ends, and when the deployer says how the push ended (`ok` once
# receive-pack reported every ref updated). Held open here on fd 6 (read-write, so that opening
# it never blocks), which nothing this shell starts inherits: a line written stays until it is
# read. The daemon's log goes through the other. Both go with the lock's directory. Made after
# going back above, whose restart hooks may leave an app running. Without it, the batch polls.
pushed="$state/lock/$pushed_fifo"
if mkfifo -m 600 "$pushed" "$state/lock/$daemon_log" 2>/dev/null && { command exec 6<>"$pushed"; } 2>/dev/null; then
  :
else
  rm -f "$pushed"
  pushed=""
fi
# shellcheck shell=sh disable=SC2154,SC2015 # its values are set by the script it is part of; `A && B || continue` skips what is not a release
# What a server holds, as the deployer reads it:
# - `report_state`: `release <name> <sha>`, `current <target>` and `bad <name>` lines;
# - `report_lock`: the lock's holder as `holder <key>=<value>` lines, or `stale <key>=<value>`
#   when its SSH connection is gone (a lock with no `info` yet is being taken right now);
# - `report_unconfirmed`: `unconfirmed <release>` for the release the `unconfirmed` marker
#   names, if there is one;
# - `report_subjects`: `subject <sha> <subject>` for the commit of each release that `repo/`
#   has, with one `git log` for all of them; only a full SHA in `REVISION` is passed on (as an
#   argument, never as script text), so nothing read from the server becomes an option of git.
# Expects: `d`, `state`, the lock helpers. Sets: `r`, `rev`, `line`.
report_state() {
  for r in "$d"/releases/*; do
    [ -d "$r" ] && [ ! -L "$r" ] || continue
    rev=-
    { read -r rev < "$r/REVISION"; } 2>/dev/null || true
    echo "release ${r##*/} ${rev:--}"
  done
  if [ -L "$d/current" ]; then echo "current $(readlink "$d/current")"; fi
  if [ -f "$d/.xtask-deploy/bad" ]; then each_line "$d/.xtask-deploy/bad" bad; fi
}
report_lock() {
  if [ -f "$state/lock/info" ]; then
    if holder_alive; then each_line "$state/lock/info" holder; else each_line "$state/lock/info" stale; fi
  elif [ -d "$state/lock" ]; then
    echo "holder user=a deploy that is taking the lock right now"
  fi
}
report_unconfirmed() {
  if [ -f "$state/unconfirmed" ]; then
    { while IFS= read -r line || [ -n "$line" ]; do
      case "$line" in release=*) echo "unconfirmed ${line#release=}" ;; esac
    done < "$state/unconfirmed"; } 2>/dev/null
  fi
}
report_subjects() {
  set --
  for r in "$d"/releases/*; do
    [ -d "$r" ] && [ ! -L "$r" ] || continue
    rev=
    { read -r rev < "$r/REVISION"; } 2>/dev/null || true
    case "$rev" in *[!0-9a-f]*) continue ;; esac
    case "${#rev}" in 40|64) set -- "$@" "$rev" ;; esac
  done
  if [ "$#" -gt 0 ]; then
    git --git-dir="$d/repo" log --no-walk=unsorted --ignore-missing --format='subject %H %s' "$@" -- 2>/dev/null || true
  fi
}
# shellcheck shell=sh disable=SC2154 # its values are set by the header before it
# The server's state, and what the push goes on: the refs and the shallow commits of `repo/`.
# Expects: `d`, `state`, `each_line`, `report_state`.
report_state
# What the push goes on: it sends its commands without waiting for git to list them again.
git --git-dir="$d/repo" for-each-ref --format='ref %(objectname) %(refname)' 2>/dev/null
if [ -f "$d/repo/shallow" ]; then each_line "$d/repo/shallow" shallow; fi
printf 'platform machine %s\n' "$(uname -m)"
if v=$(getconf GNU_LIBC_VERSION 2>/dev/null); then
  case $v in 'glibc '*) printf 'platform glibc %s\n' "${v#glibc }" ;; esac
fi
for f in /lib/ld-* /lib64/ld-* /usr/lib/ld-* /usr/lib64/ld-* /lib/*/ld-*; do
  if [ -e "$f" ]; then printf 'platform interp %s\n' "$f"; fi
done
daemon_ports='40000 40001'
daemon_max=600
daemon_submodules=repo/modules/lib
access_hook='refuse() { echo "not a connection of this deploy"; exit 1; }
if [ "$1" != receive-pack ]; then echo "this daemon only receives a deploy'"'s push\"; exit 1; fi
case \""'${REMOTE_PORT:-}" in '"''|*["'!0-9]*) refuse ;; esac
[ "${REMOTE_ADDR:-}" = 127.0.0.1 ] || refuse
awk -v from="$REMOTE_PORT" -v to="${XTASK_DEPLOY_PORT:-}" -v uid="${XTASK_DEPLOY_UID:-}" '"'
function port(e, hex, n, i) {
  hex = substr(e, index(e, \":\") + 1)
  n = 0
  for (i = 1; i <= length(hex); i++) n = n * 16 + index(\"0123456789ABCDEF\", substr(hex, i, 1)) - 1
  return n
}
function loopback(e) { e = substr(e, 1, index(e, \":\") - 1); return e == \"0100007F\" || e == \"7F000001\" }
NR > 1 && "'$4 == "01" && port($2) == from + 0 && port($3) == to + 0 && loopback($2) && loopback($3) {
  if (uid != "" && $8 == uid) mine = 1
}
END { exit mine ? 0 : 1 }'"' /proc/net/tcp 2>/dev/null || refuse
exit 0"
answer_daemon=daemon
answer_daemon_no_port=daemon-no-port
answer_daemon_failed=daemon-failed
# shellcheck shell=sh disable=SC2154,SC2086,SC2016,SC2034 # values set by the header; `checked_git` and the ports split on purpose; the access hook is evaluated by git
# The deploy's git daemon, started in the background of the keeper (which goes on to say it is
# ready and to read its stdin meanwhile, so that it sees the deployer go even while a daemon is
# starting). `start_daemons` prints `$answer_daemon <port>` once one listens,
# `$answer_daemon_no_port <what git said>` when every port was taken, or
# `$answer_daemon_failed <what it said>`, then waits for the daemon to end. Each daemon runs
# under `timeout` (leading its process group) on 127.0.0.1 only, receives only, serves only
# `repo/` and the submodules' repositories, and admits only this deploy's connections (the
# access hook); its pid file is what `stop_daemon` reads. Its log goes through a FIFO that the
# starter reads until "Ready to rumble"; `watch_log` then reads it to its end, and wakes the
# batch awaiting the push (the `$pushed` FIFO) when a connection ends, a few times at most.
# Expects: `d`, `state`, `pushed`, `checked_git`, `daemon_log`, `daemon_ports`, `daemon_max`,
# `daemon_submodules` (one a line), `access_hook`, the three `answer_daemon` words. Sets:
# `starter`, and defines `start_daemon`, `watch_log`, `start_daemons`, `stop_daemon`.
start_daemon() {
  port=$1
  shift
  fifo="$state/lock/$daemon_log"
  [ -p "$fifo" ] || { said="cannot make a FIFO in $state/lock"; return 2; }
  # Never `--reuseaddr`: without it, git daemon cannot listen on a port while a connection
  # another user accepted there lingers, so the deployer's tunnel cannot reach a daemon that is
  # not this one.
  XTASK_DEPLOY_PORT=$port timeout -k 1 "$daemon_max" $checked_git daemon --verbose --listen=127.0.0.1 --port="$port" --strict-paths \
    --export-all --enable=receive-pack --disable=upload-pack --disable=upload-archive \
    --forbid-override=receive-pack --forbid-override=upload-pack --forbid-override=upload-archive \
    --access-hook='f() { eval "$XTASK_DEPLOY_ACCESS_HOOK"; }; f' --informative-errors --init-timeout=30 \
    --timeout="$daemon_max" "$@" </dev/null >/dev/null 2>"$fifo" &
  started=$!
  echo "$started" > "$state/daemon.$port.pid"
  exec 4<"$fifo"
  while IFS= read -r line <&4; do
    case "$line" in
      *"Ready to rumble"*) watch_log >/dev/null 2>&1 & exec 4<&-; return 0 ;;
    esac
    said=$line
  done
  exec 4<&-
  wait "$started"
  status=$?
  kill -KILL -"$started" 2>/dev/null
  rm -f "$state/daemon.$port.pid"
  # git dies with 128 when it cannot listen on its port (another process holds it).
  if [ "$status" = 128 ]; then return 1; fi
  return 2
}
# Reads the daemon's log to its end (it must not block on a full pipe). `--verbose` logs
# "[pid] Disconnected" once a connection's receive-pack is over: its refs are updated by then.
# Anyone on 127.0.0.1 can make the daemon log lines of their choosing (the path they ask for
# is logged before the access hook runs): a few wake-ups at most, so that the FIFO never fills
# and the keeper's own line always fits.
watch_log() {
  woken=0
  while IFS= read -r line <&4; do
    case "$line" in
      "["*"] Disconnected"*)
        if [ "$woken" -lt 16 ] && [ -n "$pushed" ] && [ -p "$pushed" ]; then
          echo disconnected 1<>"$pushed"
          woken=$((woken + 1))
        fi ;;
    esac
  done
}
start_daemons() {
  said=""
  # The repositories served: `repo/`, and the submodules' (one a line in `daemon_submodules`),
  # made when missing.
  set -- "$d/repo"
  set -f
  old_ifs=$IFS
  IFS='
'
  for r in $daemon_submodules; do
    IFS=$old_ifs
    if [ ! -d "$d/$r" ] && ! git init --quiet --bare "$d/$r" >/dev/null 2>&1; then
      printf '%s %s\n' "$answer_daemon_failed" "cannot create the repository \`$r\` for a submodule"
      set +f
      return
    fi
    set -- "$@" "$d/$r"
  done
  IFS=$old_ifs
  set +f
  uid=""
  { while read -r key real effective rest; do [ "$key" = Uid: ] && uid=$effective; done < /proc/self/status; } 2>/dev/null
  if [ -z "$uid" ]; then
    echo "$answer_daemon_failed cannot read /proc/self/status: the daemon could not tell this deploy's connections"
    return
  fi
  export XTASK_DEPLOY_ACCESS_HOOK="$access_hook" XTASK_DEPLOY_UID="$uid"
  outcome=1
  for port in $daemon_ports; do
    start_daemon "$port" "$@"
    outcome=$?
    [ "$outcome" = 1 ] || break
  done
  case "$outcome" in
    0) echo "$answer_daemon $port"; wait "$started" ;;
    1) printf '%s %s\n' "$answer_daemon_no_port" "$said" ;;
    *) printf '%s %s\n' "$answer_daemon_failed" "$said" ;;
  esac
}
start_daemons </dev/null 2>/dev/null 6>&- &
starter=$!
# Stops the starter (were it still starting one) and the daemon it started: the one whose pid
# file names a child of the starter (not a daemon of a later deploy on the same port).
stop_daemon() {
  [ -n "$starter" ] || return 0
  for port in $daemon_ports; do
    pid=""
    { read -r pid < "$state/daemon.$port.pid"; } 2>/dev/null
    case "$pid" in ''|*[!0-9]*) continue ;; esac
    stat=""
    { read -r stat < "/proc/$pid/stat"; } 2>/dev/null
    set -- ${stat##*) }
    [ "${2:-}" = "$starter" ] || continue
    # The push is over: nothing in the daemon's group has work left. KILL at once (a
    # connection's children ignore TERM, git daemon's doing), while the pid is surely still the
    # daemon's group, and without holding up the keeper.
    kill -KILL -"$pid" "$pid" 2>/dev/null
    rm -f "$state/daemon.$port.pid"
  done
  # Only while it is still the starter (the keeper's watch holds a copy of the pid).
  case "$({ tr '\0' ' ' < "/proc/$starter/cmdline"; } 2>/dev/null)" in
    *xtask-deploy-preflight*) kill "$starter" 2>/dev/null ;;
  esac
  starter=""
}
# shellcheck shell=sh disable=SC2154,SC2016 # its values are set by the script it is part of; the quoted code runs later
# The keeper's jobs: `run_job END LENGTH [kept]` (a batch the deployer sent: `run` or `kept`)
# and `stop_job`. A job is the decoded batch run by `sh`, wrapped so that it prints its end
# line; in a session of its own (`setsid`, when the server has it) so that stopping it stops
# all it started. The batch reaches that `sh` in its environment, not on a command line, where
# every local user could read it.
# Expects: `state`, `xk` (the bootstrap's decoder, for `kept`). Sets: `job`, `jobfile`,
# `starter` (if unset), `RUN_JOB`, `JOB`, and the functions' own variables.
job=""
starter=${starter:-}
jobfile="$state/lock/job.$$"
# A job's wrapper (a child of this shell) starts the batch (in its environment, run by $1) in a
# session of its own, notes its pid in $3 for `stop`, waits for it, notes `ended <status>` (the
# keeper's watch reads it), and prints the end line: once, whether the batch ended or was
# stopped. $3 is written only while it exists: the confirmation removes the lock's directory,
# and with it this note.
RUN_JOB='xtask_deploy_command=$XTASK_DEPLOY_RUN; unset XTASK_DEPLOY_RUN; eval "$xtask_deploy_command"'
JOB='if command -v setsid >/dev/null 2>&1; then setsid sh -c "$1" </dev/null & else sh -c "$1" </dev/null & fi
batch=$!
if [ -f "$3" ]; then { echo "$batch" > "$3"; } 2>/dev/null; fi
wait "$batch"
s=$?
if [ -f "$3" ]; then { echo "ended $s" > "$3"; } 2>/dev/null; fi
printf "\n%s %s\n" "$2" "$s"
printf "\n%s %s\n" "$2" "$s" >&2'
# `run <end> <length>`: <length> bytes of the batch in base64 (with a newline) follow on stdin.
# `head -c` reads no more than that: what the deployer sends next stays for this loop. `kept
# <end> <length>`: the same, the batch as runs of the lines of our kept scripts (not in
# base64), which the bootstrap read and decodes (`xk`).
run_job() {
  if [ -n "$job" ]; then wait "$job" 2>/dev/null; job=""; fi
  end=$1
  length=${2:-0}
  case "$end" in ''|*[!A-Za-z0-9@-]*) end=@@xtask-deploy-end ;; esac
  case "$length" in ''|*[!0-9]*) length=0 ;; esac
  b=$(head -c "$length")
  # Cut short (the connection went): nothing of it runs.
  p='echo "the step did not arrive whole" >&2; exit 1'
  if [ "${3:-}" = kept ]; then
    # As they are, not in base64: counted in bytes, whatever the locale.
    if [ "$(LC_ALL=C; printf %s "${#b}")" -eq $((length - 1)) ]; then p=$(xk "$b") || p='exit 1'; fi
  elif [ "${#b}" -eq $((length - 1)) ]; then p=$(printf %s "$b" | base64 -d) || p='exit 1'; fi
  { : > "$jobfile"; } 2>/dev/null
  XTASK_DEPLOY_RUN=$p sh -c "$JOB" xtask-deploy-job "$RUN_JOB" "$end" "$jobfile" </dev/null 6>&- &
  job=$!
}
# Stops the running batch, if any: TERM to its session, and a second later KILL to what in it
# ignored TERM. Its wrapper then prints the end line. (The keeper's watch, a process of its own,
# knows the job from its note only.)
stop_job() {
  [ -n "$job" ] || [ -f "$jobfile" ] || return 0
  batch=""
  tries=0
  while [ "$tries" -lt 20 ]; do
    { read -r batch < "$jobfile"; } 2>/dev/null || break
    [ -n "$batch" ] && break
    sleep 0.05 2>/dev/null || sleep 1
    tries=$((tries + 1))
  done
  case "$batch" in ''|*[!0-9]*) return 0 ;; esac
  kill -TERM -"$batch" "$batch" 2>/dev/null
  tries=0
  while kill -0 -"$batch" 2>/dev/null && [ "$tries" -lt 10 ]; do
    sleep 0.1 2>/dev/null || sleep 1
    tries=$((tries + 1))
  done
  kill -KILL -"$batch" 2>/dev/null
}
keep_releases=2
answer_confirmed=@@xtask-deploy-confirmed
answer_not_confirmed=@@xtask-deploy-not-confirmed
answer_prune=prune
# shellcheck shell=sh disable=SC2154 # its values are set by the script it is part of
# `rewrite_marks`: rewrites `$state/bad` keeping each mark once, only of releases that exist,
# and not the mark of `$unmark` (printing `unmarked <name>` when it had one).
# Expects: `d`, `state`, `unmark`. Sets: `kept`, `cleared`, `name`.
rewrite_marks() {
  if [ -f "$state/bad" ]; then
    kept=" "
    cleared=""
    true > "$state/bad.new"
    while IFS= read -r name || [ -n "$name" ]; do
      case "$name" in ''|*[!0-9]*) continue ;; esac
      if [ "$name" = "$unmark" ]; then cleared=$name; continue; fi
      [ -d "$d/releases/$name" ] || continue
      case "$kept" in *" $name "*) continue ;; esac
      kept="$kept$name "
      printf '%s\n' "$name" >> "$state/bad.new"
    done < "$state/bad"
    mv -f "$state/bad.new" "$state/bad"
    if [ -n "$cleared" ]; then echo "unmarked $cleared"; fi
  fi
}
# shellcheck shell=sh disable=SC2154,SC2034,SC2015 # its values are set, and `unmark` read, by the script it is part of
# `confirm_deploy`: forgets the `unconfirmed` marker when it holds this deploy's token (so
# nothing goes back), prunes the releases beyond `keep_releases` (the ones marked bad first,
# then the oldest; never the current one), drops their marks, releases the lock, and prints
# `$answer_prune <name>` for each release pruned and `$answer_confirmed`; or, when the server
# went back by itself first, `$answer_not_confirmed` (and returns 1). Pruning renames a release
# to `releases/.pruned-<name>`; the keeper removes those once the deployer is gone.
# Expects: `d`, `state`, `ours`, `keep_releases`, the three `answer_` words, the lock helpers,
# `drop_lock`, `hold_switch`, `drop_switch` and `rewrite_marks`.
confirm_deploy() {
  # Not once the server went back by itself (the keeper's watch): then nothing is confirmed.
  hold_switch
  if ! has_line "$ours" "$state/unconfirmed"; then
    drop_switch
    echo "$answer_not_confirmed"
    return 1
  fi
  rm -f "$state/unconfirmed"
  drop_switch
  keep=$keep_releases
  count=0
  for r in "$d"/releases/[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]; do [ -d "$r" ] && count=$((count + 1)); done
  excess=$((count - keep))
  now=$(readlink "$d/current" 2>/dev/null || true)
  # Release names are 14 digits, so the shell's sorted glob lists them oldest first.
  for pass in bad any; do
    for r in "$d"/releases/[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]; do
      [ "$excess" -gt 0 ] || break
      [ -d "$r" ] && [ "${now##*/}" != "${r##*/}" ] || continue
      if [ "$pass" = bad ] && ! has_line "${r##*/}" "$state/bad"; then continue; fi
      excess=$((excess - 1))
      mv "$r" "$d/releases/.pruned-${r##*/}" 2>/dev/null || rm -rf "$r"
      rm -f "$state/tree.${r##*/}"
      echo "$answer_prune ${r##*/}"
    done
  done
  # Marks of the releases just pruned go with them.
  unmark=""
  rewrite_marks
  lock="$state/lock"
  if has_line "$ours" "$lock/info"; then drop_lock; fi
  echo "$answer_confirmed"
}
watch_silence=20
watch_deadline=630
watch_grace=5
# shellcheck shell=sh disable=SC2154 # its values are set by the script it is part of
# The keeper's watch (see `watch_function` in keeper.rs): `watch_deploy`, run beside the keeper,
# and what it needs: `clock` (seconds since boot into `now`), `say_why`, `lost`.
# Expects: `d`, `state`, `ours`, `heard`, `pushing`, `jobfile`, `watch_silence`,
# `watch_deadline` and `watch_grace` (seconds), the lock helpers, `go_back_from_marker` and
# `end_deploy`. Sets `self` (its own pid) and its own counters.
clock() {
  now=0
  { read -r now rest < /proc/uptime; } 2>/dev/null
  now=${now%%.*}
}
# Notes in the system log why the deploy ends here by itself, naming the release it switched to.
say_why() {
  release=""
  { while IFS= read -r line; do case "$line" in release=*) release=${line#release=} ;; esac; done < "$state/unconfirmed"; } 2>/dev/null
  if command -v logger >/dev/null 2>&1; then
    logger -t xtask-deploy "$d: the deploy's keeper ended it by itself (release ${release:--} unconfirmed): $1" </dev/null >/dev/null 2>&1 || true
  fi
}
lost() {
  if ! has_line "$ours" "$state/lock/info"; then
    # Confirmed, the lock released: only the keeper is left, waiting for a deployer that is gone.
    kill -TERM "$$" 2>/dev/null
    for r in "$d"/releases/.pruned-*; do [ -d "$r" ] && rm -rf "$r"; done
    exit 0
  fi
  # The keeper ends the deploy itself when its stdin closes after all: one of them does.
  mkdir "$state/lock/ending" 2>/dev/null || exit 0
  # The lock is held by this process from now on (the keeper and the connection may be gone
  # while it goes back): a deploy that starts meanwhile finds it held.
  { while IFS= read -r line; do
    case "$line" in keeper=*) echo "keeper=$self $(start_time "$self")" ;; *) printf '%s\n' "$line" ;; esac
  done < "$state/lock/info" > "$state/lock/info.new" && mv "$state/lock/info.new" "$state/lock/info"; } 2>/dev/null
  kill -TERM "$$" 2>/dev/null
  say_why "$1"
  # What it starts (the restart hooks) must not hold the deployer's channel open.
  exec >/dev/null 2>&1
  end_deploy
  exit 0
}
watch_deploy() {
  self=$(exec sh -c 'echo "$PPID"')
  silence=$watch_silence
  seen="" since="" switched="" due="" failed="" nap="" released=""
  # Stopped (the keeper's EOF), its `sleep` goes with it.
  trap 'kill "$nap" 2>/dev/null; exit 0' TERM
  while :; do
    sleep 1 >/dev/null 2>&1 &
    nap=$!
    wait "$nap"
    kill -0 "$$" 2>/dev/null || exit 0
    clock
    count=""
    { read -r count < "$heard"; } 2>/dev/null
    if [ "$count" != "$seen" ] || [ -z "$since" ]; then seen=$count; since=$now; fi
    # Confirmed, the lock released (with the count): the deployer closes the channel next; a
    # keeper still waiting for that `timeouts.silence` later waits for a deployer that is gone.
    if ! has_line "$ours" "$state/lock/info"; then
      [ -n "$released" ] || released=$now
      if [ $((now - released)) -ge "$silence" ]; then lost "confirmed, and the deployer's channel never ended"; fi
      continue
    fi
    # From the start: the deployer beats from the moment it reads the keeper's first answer.
    # A push under way has its own time on top (its beats wait behind it).
    allowed=$silence
    push_limit=""
    { read -r push_limit < "$pushing"; } 2>/dev/null
    case "$push_limit" in ''|*[!0-9]*) ;; *) allowed=$((silence + push_limit)) ;; esac
    if [ $((now - since)) -ge "$allowed" ]; then
      lost "it heard nothing from the deployer for ${allowed}s (\`timeouts.silence\`): the link went down"
    fi
    if ! has_line "$ours" "$state/unconfirmed"; then switched=""; failed=""; continue; fi
    if [ -z "$switched" ]; then switched=$now; due=$((now + watch_deadline)); fi
    if [ "$now" -ge "$due" ]; then
      lost "the deploy was not confirmed in time (\`timeouts.confirm\`)"
    fi
    state_of_job=""
    { read -r state_of_job < "$jobfile"; } 2>/dev/null
    case "$state_of_job" in
      "ended 0"|"") failed="" ;;
      "ended "*)
        [ -n "$failed" ] || failed=$now
        if [ $((now - failed)) -ge "$watch_grace" ]; then
          say_why "a step failed there, and the deployer had not sent it back ${watch_grace}s later"
          go_back_from_marker >/dev/null 2>&1
          failed=""
        fi ;;
      *) failed="" ;;
    esac
  done
}
# shellcheck shell=sh disable=SC2154,SC2034,SC2086,SC2059 # values set and read by the other pieces; words split on purpose; the beat answer is a format
# The keeper's loop: it says it is ready, then reads the deployer's lines (the words of
# `protocol::Say`, in the `say_` values) until its stdin closes, then ends the deploy there.
# Expects: `d`, `state`, `ours`, `pushed`, the `say_` words, `beat_answer` (octal),
# `answer_ready`, `run_job`, `stop_job`, `stop_daemon`, `confirm_deploy`, `tidy_repo`,
# `release_lock`, `stop_receive_packs`, `remove_unfinished`, `go_back_from_marker`, and
# `watch_deploy` when the deploy is watched. Sets: `heard`, `pushing`, `lines_read`, `watcher`.
echo "$answer_ready"
# The end of the deploy on this server, once its deployer is gone (or lost): stops the job and
# the daemon, removes what an unfinished step made, goes back from a release it switched to
# and never confirmed (nobody checked it), removes pruned releases, releases the lock.
end_deploy() {
  stop_job
  stop_daemon
  if has_line "$ours" "$state/lock/info"; then
    stop_receive_packs
    # A step of this deploy on a channel of its own may still be extracting into its release:
    # its own watchdog stops it on the same EOF; give that a moment before removing what it made.
    for marker in "$state"/preparing.*; do [ -f "$marker" ] && sleep 1; break; done
    remove_unfinished
    if has_line "$ours" "$state/unconfirmed"; then go_back_from_marker; fi
  fi
  for r in "$d"/releases/.pruned-*; do [ -d "$r" ] && rm -rf "$r"; done
  # Confirmed (the confirmation released the lock), the deploy leaves `repo/` to be tidied.
  # (A keeper whose lock was taken over finds it held by another deploy: it does not start.)
  if [ -f "$d/repo/HEAD" ] && ! has_line "$ours" "$state/lock/info"; then tidy_repo; fi
  lock="$state/lock"
  release_lock
}
# How many lines it read so far, in a file of this keeper's own (it goes with the lock): the
# watch reads it (any line shows the deployer is there; it sends `beat` lines while it works,
# each answered with a byte 6 on stderr).
heard="$state/lock/heard.$$"
# While a push is under way (`pushing <seconds>` to `pushed`), its own time limit: the deployer's
# beats wait behind its bytes on a slow link.
pushing="$state/lock/pushing.$$"
lines_read=0
watcher=""
if command -v watch_deploy >/dev/null 2>&1; then
  watch_deploy </dev/null >/dev/null 6>&- &
  watcher=$!
fi
# The deploy holds the lock while this channel is open; its stdin closes when the deploy ends,
# fails, is interrupted or killed, or loses its connection. Then the lock is released.
while read -r line; do
  lines_read=$((lines_read + 1))
  { echo "$lines_read" > "$heard"; } 2>/dev/null
  case "$line" in
    "$say_beat") printf "\\$beat_answer" >&2 ;;
    "$say_confirm") confirm_deploy ;;
    "$say_run "*) run_job ${line#"$say_run "} ;;
    "$say_kept "*) run_job ${line#"$say_kept "} kept ;;
    "$say_stop") stop_job ;;
    "$say_pushed "*) rm -f "$pushing"; stop_daemon; if [ -n "$pushed" ]; then echo "${line#"$say_pushed "}" >&6; fi ;;
    "$say_pushing "*)
      case "${line#"$say_pushing "}" in ''|*[!0-9]*) ;; *) { echo "${line#"$say_pushing "}" > "$pushing"; } 2>/dev/null ;; esac ;;
  esac
done
# Nobody reads this channel any more (the deployer may be gone): a write to it would raise
# SIGPIPE and kill this shell before the lock is released.
exec >/dev/null 2>&1 6>&-
# The watch may be ending the deploy already (it found the deployer lost): one of them does.
if has_line "$ours" "$state/lock/info" && ! mkdir "$state/lock/ending" 2>/dev/null; then exit 0; fi
# Stopped, the watch finishes what it is doing first (restarting a release it went back to):
# the lock is released after that.
if [ -n "$watcher" ]; then kill "$watcher" 2>/dev/null; wait "$watcher" 2>/dev/null; fi
end_deploy
