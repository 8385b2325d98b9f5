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
trap 'gone=1' PIPE
require_git
require_setup
state="$d/.xtask-deploy"
hold_switch() {
  [ -d "$state/lock" ] || return 0
  waited=0
  unnamed=0
  until mkdir "$state/lock/switching" 2>/dev/null; do
    [ -d "$state/lock" ] || return 0
    holder=""
    { read -r holder < "$state/lock/switching/pid"; } 2>/dev/null
    case "$holder" in
      ''|*[!0-9]*) unnamed=$((unnamed + 1)); gone=$([ "$unnamed" -ge 20 ] && echo 1) ;;
      *) unnamed=0; gone=$(kill -0 "$holder" 2>/dev/null || echo 1) ;;
    esac
    if [ -n "$gone" ]; then
      if mv "$state/lock/switching" "$state/lock/switching.stale.${self:-$$}" 2>/dev/null; then
        rm -rf "$state/lock/switching.stale.${self:-$$}"
      fi
      continue
    fi
    waited=$((waited + 1))
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
start_time() {
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
}
drop_lock() {
  gone="$state/.lock-gone.${self:-$$}"
  if mv -T "$lock" "$gone" 2>/dev/null; then rm -rf "$gone"; else rm -rf "$lock"; fi
}
release_lock() {
  [ -d "$lock" ] || exit 0
  if [ -n "${ours:-}" ]; then
    has_line "$ours" "$lock/info" || { echo "the lock is not ours; left in place"; exit 0; }
  fi
  each_line "$lock/info" removed
  drop_lock
}
tidy_repo() {
  repo="$d/repo"
  loose=0 size=0 packs=0
  while IFS=': ' read -r key value; do
    case "$key" in count) loose=$value ;; size) size=$value ;; packs) packs=$value ;; esac
  done <<EOF
$(git --git-dir="$repo" count-objects -v 2>/dev/null)
EOF
  [ "$size" -ge 1024 ] || [ "$loose" -ge 256 ] || [ "$packs" -ge 8 ] || return 0
  command -v setsid >/dev/null 2>&1 || return 0
  tidying="$state/tidying"
  mine="tidying=$$ $(start_time "$$")"
  rm -rf "$tidying.$$"
  mkdir -m 700 "$tidying.$$" 2>/dev/null || return 0
  echo "$mine" > "$tidying.$$/info"
  if ! mv -T "$tidying.$$" "$tidying" 2>/dev/null; then
    holder=""
    { read -r holder < "$tidying/info"; } 2>/dev/null
    if alive ${holder#tidying=}; then rm -rf "$tidying.$$"; return 0; fi
    if [ -d "$state/lock" ]; then rm -rf "$tidying.$$"; return 0; fi
    stop_tidying
    mv -T "$tidying.$$" "$tidying" 2>/dev/null || { rm -rf "$tidying.$$"; return 0; }
  fi
  if [ -d "$state/lock" ]; then rm -rf "$tidying"; return 0; fi
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
        if git --git-dir="$repo" cat-file -e "$commit^{commit}" 2>/dev/null; then
          echo "update refs/xtask-kept/$kind/$name $commit"
        fi
      done
    done
  } | git --git-dir="$repo" update-ref --stdin 2>/dev/null; then
    rm -rf "$tidying"
    return 0
  fi
  low=""
  command -v nice >/dev/null 2>&1 && low="nice -n 19"
  command -v ionice >/dev/null 2>&1 && low="ionice -c 3 $low"
  if [ -d "$state/lock" ] || ! has_line "$mine" "$tidying/info"; then rm -rf "$tidying"; return 0; fi
  setsid sh -c "exec $low git --git-dir=\"\$1\" gc --prune=now --quiet" sh "$repo" </dev/null >/dev/null 2>&1 &
  gc=$!
  echo "gc=$gc $(start_time "$gc")" >> "$tidying/info"
  if [ -d "$state/lock" ] || ! has_line "$mine" "$tidying/info"; then kill -KILL -"$gc" 2>/dev/null; fi
  wait "$gc"
  if has_line "$mine" "$tidying/info"; then rm -rf "$tidying"; fi
}
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
    if [ -n "$gc" ] || [ -z "$holder" ] || ! alive $holder || [ "$tries" -ge 300 ]; then break; fi
    sleep 0.1 2>/dev/null || sleep 1
    tries=$((tries + 1))
  done
  rm -rf "$tidying"
  [ -n "$gc" ] || return 0
  set -- $gc
  if alive "$1" "${2:-}"; then
    kill -KILL -"$1" 2>/dev/null
    tries=0
    while group_runs "$1" && [ "$tries" -lt 40 ]; do
      sleep 0.05 2>/dev/null || sleep 1
      tries=$((tries + 1))
    done
  fi
  find "$d/repo/" -name '*.lock' -type f -exec rm -f {} + 2>/dev/null
  rm -f "$d/repo"/objects/pack/.tmp-* "$d/repo"/objects/pack/tmp_* "$d/repo/gc.pid" 2>/dev/null
  return 0
}
group_runs() {
  for stat in /proc/[0-9]*/stat; do
    { read -r line < "$stat"; } 2>/dev/null || continue
    set -- "$1" ${line##*) }
    [ "${4:-}" = "$1" ] && [ "${2:-}" != Z ] && return 0
  done
  return 1
}
run_restart_hooks() {
  restart_index=0
  while [ "$restart_index" -lt "$restart_count" ]; do
    eval "restart_hook=\$restart_$restart_index"
    ( cd "$d/releases/$rel" && rev=- && { read -r rev < REVISION; } 2>/dev/null; export DEPLOY_TO="$d" RELEASE="$rel" RELEASE_PATH="$d/releases/$rel" REVISION="$rev" ROLLBACK=1; XTASK_DEPLOY_RUN=$restart_hook; export XTASK_DEPLOY_RUN; exec timeout -k 1 "$restart_limit" sh -c 'xtask_deploy_command=$XTASK_DEPLOY_RUN; unset XTASK_DEPLOY_RUN; eval "$xtask_deploy_command"' ) </dev/null >&2 || echo "hook-failed $restart_index $?"
    restart_index=$((restart_index + 1))
  done
}
stop_receive_packs() {
  for pidfile in "$state"/receive-pack.*.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    case "$pid" in ''|*[!0-9]*) rm -f "$pidfile"; continue ;; esac
    case "$({ tr '\0' ' ' < "/proc/$pid/cmdline"; } 2>/dev/null)" in
      *" xtask-deploy-git-receive-pack "*|*"git "*"receive-pack"*) kill -TERM -"$pid" "$pid" 2>/dev/null; echo "reaped $pid" ;;
    esac
    rm -f "$pidfile"
  done
}
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
  each_line "$state/lock/info" stale
  rm -rf "$state/lock"
  if ! mkdir -m 700 "$state/lock" 2>/dev/null; then echo "holder user=another deploy, just now"; exit "$exit_locked"; fi
fi
printf '%s\n' "$lock_info" "connection=$PPID $(start_time "$PPID")" "keeper=$$ $(start_time "$$")" > "$state/lock/info"
chmod go= "$d/repo" "$state" "$state/lock/info"
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
      stat=$(cat "/proc/$pid/stat" 2>/dev/null || true)
      set -- ${stat##*) }
      if [ "${2:-}" = 1 ]; then kill -KILL -"$pid" "$pid" 2>/dev/null; echo "reaped $pid"; rm -f "$pidfile"; fi ;;
    *) rm -f "$pidfile" ;;
  esac
done
stop_tidying
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
if [ -f "$state/unconfirmed" ]; then
  go_back_from_marker
  rm -f "$state/unconfirmed"
fi
pushed="$state/lock/$pushed_fifo"
if mkfifo -m 600 "$pushed" "$state/lock/$daemon_log" 2>/dev/null && { command exec 6<>"$pushed"; } 2>/dev/null; then
  :
else
  rm -f "$pushed"
  pushed=""
fi
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
report_state
git --git-dir="$d/repo" for-each-ref --format='ref %(objectname) %(refname)' 2>/dev/null
if [ -f "$d/repo/shallow" ]; then each_line "$d/repo/shallow" shallow; fi
printf 'platform machine %s\n' "$(uname -m)"
if v=$(getconf GNU_LIBC_VERSION 2>/dev/null); then
  case $v in 'glibc '*) printf 'platform glibc %s\n' "${v#glibc }" ;; esac
fi
for f in /lib/ld-* /lib64/ld-* /usr/lib/ld-* /usr/lib64/ld-* /lib/*/ld-*; do
  if [ -e "$f" ]; then printf 'platform interp %s\n' "$f"; fi
done
daemon_ports=40000
daemon_max=600
daemon_submodules=''
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
start_daemon() {
  port=$1
  shift
  fifo="$state/lock/$daemon_log"
  [ -p "$fifo" ] || { said="cannot make a FIFO in $state/lock"; return 2; }
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
  if [ "$status" = 128 ]; then return 1; fi
  return 2
}
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
    kill -KILL -"$pid" "$pid" 2>/dev/null
    rm -f "$state/daemon.$port.pid"
  done
  case "$({ tr '\0' ' ' < "/proc/$starter/cmdline"; } 2>/dev/null)" in
    *xtask-deploy-preflight*) kill "$starter" 2>/dev/null ;;
  esac
  starter=""
}
job=""
starter=${starter:-}
jobfile="$state/lock/job.$$"
RUN_JOB='xtask_deploy_command=$XTASK_DEPLOY_RUN; unset XTASK_DEPLOY_RUN; eval "$xtask_deploy_command"'
JOB='if command -v setsid >/dev/null 2>&1; then setsid sh -c "$1" </dev/null & else sh -c "$1" </dev/null & fi
batch=$!
if [ -f "$3" ]; then { echo "$batch" > "$3"; } 2>/dev/null; fi
wait "$batch"
s=$?
if [ -f "$3" ]; then { echo "ended $s" > "$3"; } 2>/dev/null; fi
printf "\n%s %s\n" "$2" "$s"
printf "\n%s %s\n" "$2" "$s" >&2'
run_job() {
  if [ -n "$job" ]; then wait "$job" 2>/dev/null; job=""; fi
  end=$1
  length=${2:-0}
  case "$end" in ''|*[!A-Za-z0-9@-]*) end=@@xtask-deploy-end ;; esac
  case "$length" in ''|*[!0-9]*) length=0 ;; esac
  b=$(head -c "$length")
  p='echo "the step did not arrive whole" >&2; exit 1'
  if [ "${3:-}" = kept ]; then
    if [ "$(LC_ALL=C; printf %s "${#b}")" -eq $((length - 1)) ]; then p=$(xk "$b") || p='exit 1'; fi
  elif [ "${#b}" -eq $((length - 1)) ]; then p=$(printf %s "$b" | base64 -d) || p='exit 1'; fi
  { : > "$jobfile"; } 2>/dev/null
  XTASK_DEPLOY_RUN=$p sh -c "$JOB" xtask-deploy-job "$RUN_JOB" "$end" "$jobfile" </dev/null 6>&- &
  job=$!
}
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
confirm_deploy() {
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
  unmark=""
  rewrite_marks
  lock="$state/lock"
  if has_line "$ours" "$lock/info"; then drop_lock; fi
  echo "$answer_confirmed"
}
watch_silence=20
watch_deadline=630
watch_grace=5
clock() {
  now=0
  { read -r now rest < /proc/uptime; } 2>/dev/null
  now=${now%%.*}
}
say_why() {
  release=""
  { while IFS= read -r line; do case "$line" in release=*) release=${line#release=} ;; esac; done < "$state/unconfirmed"; } 2>/dev/null
  if command -v logger >/dev/null 2>&1; then
    logger -t xtask-deploy "$d: the deploy's keeper ended it by itself (release ${release:--} unconfirmed): $1" </dev/null >/dev/null 2>&1 || true
  fi
}
lost() {
  if ! has_line "$ours" "$state/lock/info"; then
    kill -TERM "$$" 2>/dev/null
    for r in "$d"/releases/.pruned-*; do [ -d "$r" ] && rm -rf "$r"; done
    exit 0
  fi
  mkdir "$state/lock/ending" 2>/dev/null || exit 0
  { while IFS= read -r line; do
    case "$line" in keeper=*) echo "keeper=$self $(start_time "$self")" ;; *) printf '%s\n' "$line" ;; esac
  done < "$state/lock/info" > "$state/lock/info.new" && mv "$state/lock/info.new" "$state/lock/info"; } 2>/dev/null
  kill -TERM "$$" 2>/dev/null
  say_why "$1"
  exec >/dev/null 2>&1
  end_deploy
  exit 0
}
watch_deploy() {
  self=$(exec sh -c 'echo "$PPID"')
  silence=$watch_silence
  seen="" since="" switched="" due="" failed="" nap="" released=""
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
    if ! has_line "$ours" "$state/lock/info"; then
      [ -n "$released" ] || released=$now
      if [ $((now - released)) -ge "$silence" ]; then lost "confirmed, and the deployer's channel never ended"; fi
      continue
    fi
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
echo "$answer_ready"
end_deploy() {
  stop_job
  stop_daemon
  if has_line "$ours" "$state/lock/info"; then
    stop_receive_packs
    for marker in "$state"/preparing.*; do [ -f "$marker" ] && sleep 1; break; done
    remove_unfinished
    if has_line "$ours" "$state/unconfirmed"; then go_back_from_marker; fi
  fi
  for r in "$d"/releases/.pruned-*; do [ -d "$r" ] && rm -rf "$r"; done
  if [ -f "$d/repo/HEAD" ] && ! has_line "$ours" "$state/lock/info"; then tidy_repo; fi
  lock="$state/lock"
  release_lock
}
heard="$state/lock/heard.$$"
pushing="$state/lock/pushing.$$"
lines_read=0
watcher=""
if command -v watch_deploy >/dev/null 2>&1; then
  watch_deploy </dev/null >/dev/null 6>&- &
  watcher=$!
fi
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
exec >/dev/null 2>&1 6>&-
if has_line "$ours" "$state/lock/info" && ! mkdir "$state/lock/ending" 2>/dev/null; then exit 0; fi
if [ -n "$watcher" ]; then kill "$watcher" 2>/dev/null; wait "$watcher" 2>/dev/null; fi
end_deploy

#@@xtask-deploy-script-end
restart_count=0
starter=""
stop_daemon() { :; }
repo=repo
create=0
repo="$d/$repo"
if [ "$create" = 1 ]; then [ -d "$repo" ] || git init --quiet --bare "$repo" || exit 1; fi
pidfile="$d/.xtask-deploy/receive-pack.$$.pid"
echo "$$" > "$pidfile"
$checked_git receive-pack "$repo"
status=$?
rm -f "$pidfile"
exit $status
tip=0123456789abcdef0123456789abcdef01234567
have=0123456789abcdef0123456789abcdef01234567
set -- target/release/app
cd "$d/repo" || exit 3
now=$(git rev-parse -q --verify 'refs/xtask-deploy/release^{commit}') || { echo "it has no release commit" >&2; exit 3; }
[ "$now" = "$tip" ] || { echo "its newest release commit is $now now, not $tip" >&2; exit 3; }
{
  echo "$tip"
  git rev-parse "$tip^{tree}"
  git ls-tree -r -d "$tip" | while read -r _ _ id _; do echo "$id"; done
  git --literal-pathspecs ls-tree -r "$tip" -- "$@" | while read -r _ type id path; do
    [ "$type" = blob ] || continue
    case " $have " in *" $id "*) continue ;; esac
    printf '%s %s\n' "$id" "$path"
  done
} | git pack-objects --stdout -q
set -- "step_marker=@@m
mark() {
  printf '\\n%s %s\\n' \""'$step_marker" "$1"
  printf '"'\\n%s %s\\n' \""'$step_marker" "$1" >&2
}
mark 0
(
set -eu
rel=20261125041638
tree=fedcba9876543210fedcba9876543210fedcba98
cd "$d"
if [ -e "releases/$rel" ]; then echo "release '"\\"'`$rel'"\\"'` already exists in '"\\"'`$d/releases'"\\"'`" >&2; exit 1; fi
missing=""
[ -e "$d/shared"/config/database.yml ] || missing="$missing "config/database.yml
if [ -n "$missing" ]; then
  echo "linked file(s) missing in '"\\"'`$d/shared'"\\"'`:$missing: create them on the server before deploying" >&2; exit 1
fi
marker="$d/.xtask-deploy/preparing.$rel"
: > "$marker"
record="$d/.xtask-deploy/tree.$rel"
work="$d/.xtask-deploy/reuse.$rel"
trap '"'rm -rf \"releases/"'$rel" "$marker" "$record" "$work"'"' EXIT
for r in \""'${record%/*}"/tree.*; do
  if [ -f "$r" ] && [ ! -d "releases/${r##*/tree.}" ]; then rm -f "$r"; fi
done
mkdir "releases/$rel"
no_link() {
  p="releases/$rel"
  rest=$1
  while [ -n "$rest" ]; do
    p="$p/${rest%%/*}"
    case "$rest" in */*) rest=${rest#*/} ;; *) rest="" ;; esac
    if [ -L "$p" ] && { [ -n "$rest" ] || [ "$2" = yes ]; }; then
      printf '"'"'`%s` is a symbolic link in the deployed commit (to `%s`): the deploy would write %s through it, outside the release; %s, and deploy again'"\\n' \\
        \""'${p#releases/"$rel"/}" "$(readlink "$p")" "$3" "$4" >&2
      exit 1
    fi
mkdir -p repo/info && printf '"'%s\\n' '/target -export-ignore' '/target/release -export-ignore' '/target/release/app -export-ignore -export-subst -text -ident -filter -working-tree-encoding' '/target/release/app/** -export-ignore -export-subst -text -ident -filter -working-tree-encoding' > repo/info/attributes
if [ -f repo/info/attributes ]; then attributes="'$(cksum < repo/info/attributes); else attributes=none; fi
{ git --git-dir=repo archive --format=tar "$tree" || echo "git archive failed" > "$marker"; } | tar -x -f - -C "releases/$rel" || echo "tar failed" >> "$marker"
no_link vendor/lib yes '"'submodule "'`vendor/lib`'"' 'the deployed tree is malformed ("'`git fsck --strict` names the problem): fix the commit'"'
mkdir -p \"releases/"'$rel"/vendor/lib
{ git --git-dir=repo/modules/lib archive --format=tar 89abcdef0123456789abcdef0123456789abcdef || echo failed > "$marker"; } | tar -x -f - -C "releases/$rel"/vendor/lib || echo failed >> "$marker"
if [ -s "$marker" ]; then
  if ! git --git-dir=repo cat-file -e "$tree''^{commit}" 2>/dev/null; then
    echo "commit '"\\"'`$tree'"\\"'` is not in '"\\"'`$d/repo'"\\"'`: the push did not arrive" >&2; exit 1
  fi
  echo "could not extract '"\\"'`$tree'"\\"'` into '"\\"'`releases/$rel'"\\"'`" >&2; exit 1
fi
no_link REVISION yes '"'"'`REVISION`'"' 'remove "'`REVISION` from the commit (the deploy writes that file)'"'
no_link log no 'the link to "'`shared/log` (`linked_dirs`)'"' 'make it a directory in the commit, or remove "'`log` from `linked_dirs`'"'
no_link config/database.yml no 'the link to "'`shared/config/database.yml` (`linked_files`)'"' 'make it a directory in the commit, or remove "'`config/database.yml` from `linked_files`'"'
if [ -d \"releases/"'$rel/REVISION" ]; then
  echo "'"\\"'`REVISION'"\\"'` is a directory in the deployed commit: the deploy writes that file; remove it from the commit and deploy again" >&2; exit 1
fi
printf '"'%s\\n' \""'$sha" > "releases/$rel/REVISION"
if [ -e "releases/$rel"/log ] || [ -L "releases/$rel"/log ]; then rm -rf "releases/$rel"/log; fi
ln -s "$d/shared"/log "releases/$rel"/log
if [ -e "releases/$rel"/config/database.yml ] || [ -L "releases/$rel"/config/database.yml ]; then rm -rf "releases/$rel"/config/database.yml; fi
[ -d "releases/$rel"/config ] || mkdir -p "releases/$rel"/config
ln -s "$d/shared"/config/database.yml "releases/$rel"/config/database.yml
if ! { printf '"'%s\\n' \""'$tree" "$attributes" && find "releases/$rel" '"\\( -type f -o -type l \\) -printf '%i ./%P\\n' \\
  \\( -type f \\( -perm -0200 -o -perm -0020 -o -perm -0002 \\) -exec chmod a-w {} + \\); } > \""'$record" 2>/dev/null; then
  rm -f "$record"
  find "releases/$rel" -type f '"\\( -perm -0200 -o -perm -0020 -o -perm -0002 \\) -exec chmod a-w {} +
fi
trap - EXIT
)
status="'$?
if [ "$status" -ne 0 ]; then exit "$status"; fi
mark 1
'
exec 3<&0
XTASK_DEPLOY_RUN=$1
export XTASK_DEPLOY_RUN
set --
run='xtask_deploy_command=$XTASK_DEPLOY_RUN; unset XTASK_DEPLOY_RUN; eval "$xtask_deploy_command"'
if command -v setsid >/dev/null 2>&1; then setsid sh -c "$run" "$0" </dev/null & else sh -c "$run" "$0" </dev/null & fi
unset XTASK_DEPLOY_RUN
job=$!
( while read -r _; do :; done <&3; trap '' TERM; kill -TERM -"$job" "$job" 2>/dev/null; sleep 1; kill -KILL -"$job" 2>/dev/null ) >/dev/null 2>&1 &
watchdog=$!
exec 3<&- >/dev/null 2>&1
wait "$job"
kill "$watchdog" 2>/dev/null
exit "$status"
step_marker=@@m
  printf '\n%s %s\n' "$step_marker" "$1"
  printf '\n%s %s\n' "$step_marker" "$1" >&2
if [ -e "releases/$rel" ]; then echo "release \`$rel\` already exists in \`$d/releases\`" >&2; exit 1; fi
  echo "linked file(s) missing in \`$d/shared\`:$missing: create them on the server before deploying" >&2; exit 1
trap 'rm -rf "releases/$rel" "$marker" "$record" "$work"' EXIT
for r in "${record%/*}"/tree.*; do
      printf '`%s` is a symbolic link in the deployed commit (to `%s`): the deploy would write %s through it, outside the release; %s, and deploy again\n' \
        "${p#releases/"$rel"/}" "$(readlink "$p")" "$3" "$4" >&2
mkdir -p repo/info && printf '%s\n' '/target -export-ignore' '/target/release -export-ignore' '/target/release/app -export-ignore -export-subst -text -ident -filter -working-tree-encoding' '/target/release/app/** -export-ignore -export-subst -text -ident -filter -working-tree-encoding' > repo/info/attributes
if [ -f repo/info/attributes ]; then attributes=$(cksum < repo/info/attributes); else attributes=none; fi
no_link vendor/lib yes 'submodule `vendor/lib`' 'the deployed tree is malformed (`git fsck --strict` names the problem): fix the commit'
mkdir -p "releases/$rel"/vendor/lib
  if ! git --git-dir=repo cat-file -e "$tree^{commit}" 2>/dev/null; then
    echo "commit \`$tree\` is not in \`$d/repo\`: the push did not arrive" >&2; exit 1
  fi
  echo "could not extract \`$tree\` into \`releases/$rel\`" >&2; exit 1
fi
no_link REVISION yes '`REVISION`' 'remove `REVISION` from the commit (the deploy writes that file)'
no_link log no 'the link to `shared/log` (`linked_dirs`)' 'make it a directory in the commit, or remove `log` from `linked_dirs`'
no_link config/database.yml no 'the link to `shared/config/database.yml` (`linked_files`)' 'make it a directory in the commit, or remove `config/database.yml` from `linked_files`'
if [ -d "releases/$rel/REVISION" ]; then
  echo "\`REVISION\` is a directory in the deployed commit: the deploy writes that file; remove it from the commit and deploy again" >&2; exit 1
fi
printf '%s\n' "$sha" > "releases/$rel/REVISION"
if ! { printf '%s\n' "$tree" "$attributes" && find "releases/$rel" \( -type f -o -type l \) -printf '%i ./%P\n' \
  \( -type f \( -perm -0200 -o -perm -0020 -o -perm -0002 \) -exec chmod a-w {} + \); } > "$record" 2>/dev/null; then
  find "releases/$rel" -type f \( -perm -0200 -o -perm -0020 -o -perm -0002 \) -exec chmod a-w {} +
reuse() {
  prev=$(readlink current) || return 1
  prev=${prev##*/}
  case "$prev" in '"''|*["'!0-9]*) return 1 ;; esac
  stamp="${record%/*}/tree.$prev"
  [ -d "releases/$prev" ] && [ -f "$stamp" ] || return 1
  { read -r prev_tree && read -r prev_attributes; } < "$stamp" || return 1
  [ "$prev_attributes" = "$attributes" ] || return 1
  case "$prev_tree" in '"''|*["'!0-9a-f]*) return 1 ;; esac
  mkdir "$work" || return 1
  git --git-dir=repo ls-tree -r -z --full-tree "$tree" > "$work/new.z" || return 1
  git --git-dir=repo ls-tree -r -z --full-tree "$prev_tree" > "$work/old.z" || return 1
  newlines=$(cat "$work/new.z" "$work/old.z" | wc -l) && [ $((newlines)) -eq 0 ] || return 1
  tr '"'\\0' '\\n' < \""'$work/new.z" > "$work/new" && tr '"'\\0' '\\n' < \""'$work/old.z" > "$work/old" || return 1
  printf '"'%s\\n' \""'$@" > "$work/skip"
  LC_ALL=C work="$work" awk '"'
    FILENAME ~ /\\/skip"'$/ { if ($0 != "") skip[n++] = $0; next }
    FILENAME ~ /'"\\/old"'$/ { old[$0] = 1; gone[substr($0, index($0, "'"\\t\") + 1)] = 1; next }
    {
      at = index("'$0, "'"\\t\"); path = substr("'$0, at + 1); mode = substr($0, 1, 7); total++
      delete gone[path]
      if (path ~ /(''^|'"\\/)\\.gitattributes"'$/) { attributes = 1; if (!($0 in old)) bad = 1 }
      type = mode == "100644 " ? "f" : mode == "100755 " ? "x" : mode == "120000 " ? "l" : ""
      same = at > 0 && ($0 in old) && type != "" && path != "REVISION"
      for (i = 0; same && i < n; i++) if (substr(path, 1, length(skip[i])) == skip[i]) same = 0
      if (same) { print "./" path > (ENVIRON["work"] "/all"); print type " ./" path > (ENVIRON["work"] "/expect") }
      else { print path > (ENVIRON["work"] "/extract"); changed++ }
    }
    END {
      for (path in gone) if (path ~ /(''^|'"\\/)\\.gitattributes"'$/) bad = 1
      if (attributes) print "" > (ENVIRON["work"] "/attributes")
      exit bad || changed * 2 > total || changed == total
    }'"' \""'$work/skip" "$work/old" "$work/new" || return 1
  if [ -f "$work/attributes" ]; then
    git --git-dir=repo grep -q -F -e export-subst -e export-ignore "$tree" -- .gitattributes '"'*/.gitattributes'
    [ "'$? = 1 ] || return 1
  fi
  if [ -f repo/info/attributes ]; then
    grep -q -E '"'("'^|[[:space:]])export-(subst|ignore)([[:space:]=]|$)'"' repo/info/attributes; [ "'$? = 1 ] || return 1
  fi
  (cd "releases/$prev" && xargs -d '"'\\n' sh -c 'exec find \""'$@" -prune -printf "%i %y%m %T@ %p'"\\n\"' sh \""'$stamp" < "$work/all") > "$work/now" || return 1
  LC_ALL=C stamp="$stamp" awk '"'
    FILENAME ~ /\\/tree\\.[0-9]*"'$/ { if (FNR > 2) inode[substr($0, index($0, " ") + 1)] = $1; next }
    FILENAME ~ /'"\\/expect"'$/ { expect[substr($0, 3)] = substr($0, 1, 1); wanted++; next }
    {
      path = $0; for (i = 0; i < 3; i++) path = substr(path, index(path, " ") + 1)
      if (path == ENVIRON["stamp"]) { since = $3; next }
      kind = substr($2, 1, 1) == "l" ? "l" : substr($2, 1, 1) != "f" ? "?" : substr($2, 2, 1) ~ /[1357]/ ? "x" : "f"
      if (since == "" || inode[path] != $1 || expect[path] != kind || $3 + 0 > since + 0) bad = 1
      found++
    }
    END { exit bad || found != wanted }'"' \""'$stamp" "$work/expect" "$work/now" || return 1
  (cd "releases/$prev" && xargs -d '"'\\n' cp -P -l --parents -t \""'$d/releases/$rel" -- < "$work/all") || return 1
  if [ -s "$work/extract" ]; then
    tree="$tree" dest="releases/$rel" failed="$work/failed" xargs -d '"'\\n' sh -c \\
      '{ git --git-dir=repo --literal-pathspecs archive --format=tar \""'$tree" -- "$@" || echo x > "$failed"; } | tar -x -f - -C "$dest" || echo x > "$failed"'"' \\
      sh < \""'$work/extract" || return 1
    [ ! -e "$work/failed" ] || return 1
  fi
}
if ! reuse log config/database.yml 2>/dev/null; then
  rm -rf "releases/$rel" "$work"
  mkdir "releases/$rel"
  { git --git-dir=repo archive --format=tar "$tree" || echo "git archive failed" > "$marker"; } | tar -x -f - -C "releases/$rel" || echo "tar failed" >> "$marker"
fi
rm -rf "$work"
(
hook=make
export DEPLOY_TO="$d" RELEASE="$rel" RELEASE_PATH="$d/releases/$rel" REVISION="$sha" ROLLBACK=
if [ -d "$RELEASE_PATH" ]; then cd "$RELEASE_PATH"; else cd "$d"; fi || exit 1
XTASK_DEPLOY_RUN=$hook; export XTASK_DEPLOY_RUN
exec sh -c '"'xtask_deploy_command="'$XTASK_DEPLOY_RUN; unset XTASK_DEPLOY_RUN; eval "$xtask_deploy_command"'"'
mark 2
  case "$prev" in ''|*[!0-9]*) return 1 ;; esac
  case "$prev_tree" in ''|*[!0-9a-f]*) return 1 ;; esac
  tr '\0' '\n' < "$work/new.z" > "$work/new" && tr '\0' '\n' < "$work/old.z" > "$work/old" || return 1
  printf '%s\n' "$@" > "$work/skip"
  LC_ALL=C work="$work" awk '
    FILENAME ~ /\/skip$/ { if ($0 != "") skip[n++] = $0; next }
    FILENAME ~ /\/old$/ { old[$0] = 1; gone[substr($0, index($0, "\t") + 1)] = 1; next }
    {
      at = index($0, "\t"); path = substr($0, at + 1); mode = substr($0, 1, 7); total++
      if (path ~ /(^|\/)\.gitattributes$/) { attributes = 1; if (!($0 in old)) bad = 1 }
      for (path in gone) if (path ~ /(^|\/)\.gitattributes$/) bad = 1
    }' "$work/skip" "$work/old" "$work/new" || return 1
    git --git-dir=repo grep -q -F -e export-subst -e export-ignore "$tree" -- .gitattributes '*/.gitattributes'
    [ $? = 1 ] || return 1
    grep -q -E '(^|[[:space:]])export-(subst|ignore)([[:space:]=]|$)' repo/info/attributes; [ $? = 1 ] || return 1
  fi
  (cd "releases/$prev" && xargs -d '\n' sh -c 'exec find "$@" -prune -printf "%i %y%m %T@ %p\n"' sh "$stamp" < "$work/all") > "$work/now" || return 1
  LC_ALL=C stamp="$stamp" awk '
    FILENAME ~ /\/tree\.[0-9]*$/ { if (FNR > 2) inode[substr($0, index($0, " ") + 1)] = $1; next }
    FILENAME ~ /\/expect$/ { expect[substr($0, 3)] = substr($0, 1, 1); wanted++; next }
    END { exit bad || found != wanted }' "$stamp" "$work/expect" "$work/now" || return 1
  (cd "releases/$prev" && xargs -d '\n' cp -P -l --parents -t "$d/releases/$rel" -- < "$work/all") || return 1
    tree="$tree" dest="releases/$rel" failed="$work/failed" xargs -d '\n' sh -c \
      '{ git --git-dir=repo --literal-pathspecs archive --format=tar "$tree" -- "$@" || echo x > "$failed"; } | tar -x -f - -C "$dest" || echo x > "$failed"' \
      sh < "$work/extract" || return 1
(
exec sh -c 'xtask_deploy_command=$XTASK_DEPLOY_RUN; unset XTASK_DEPLOY_RUN; eval "$xtask_deploy_command"'
)
mark 2
set -- ref 0123456789abcdef0123456789abcdef01234567 refs/heads/main
pushed="$d/.xtask-deploy/lock/$pushed_fifo"
all_here() {
  while [ "$#" -ge 3 ]; do
    [ "$(git --git-dir="$d/$1" rev-parse -q --verify "$2''^{commit}" 2>/dev/null)" = "$3" ] || return 1
    shift 3
tries=0
while :; do
  all_here "$@" && exit 0
  if [ -p "$pushed" ] && read -r line 0<>"$pushed"; then
      ok) exit 0 ;;
      failed) echo "the push did not go through" >&2; exit 1 ;;
    continue
  fi
  tries=$((tries + 1))
  if [ "$tries" -lt 100 ]; then pause=0.01; elif [ "$tries" -lt 300 ]; then pause=0.1; else pause=1; fi
  sleep "$pause" 2>/dev/null || sleep 1
done
)
    [ "$(git --git-dir="$d/$1" rev-parse -q --verify "$2^{commit}" 2>/dev/null)" = "$3" ] || return 1
log_line='"'Branch main (at 0123456789abcdef0123456789abcdef01234567) deployed as release 20261125041638 by alice'
switch_current() {
  if [ -e releases/current ] || [ -L releases/current ]; then rm -f releases/current; fi
  ln -s \""'$d/releases/$rel" releases/current
  mv -T releases/current current
}
cd "$d" || exit 1
if ! mv "$marker" "$marker.publishing" 2>/dev/null; then
  echo "release '"\\"'`$rel'"\\"'` is no longer being prepared (its deploy was interrupted and it was removed); current is unchanged" >&2
  exit 1
fi
previous=$(readlink current 2>/dev/null || true)
previous=${previous##*/}
printf '"'%s\\n' \""'$ours" "release=$rel" "previous=$previous" > "$d/.xtask-deploy/unconfirmed"
switch_current
echo "switched $rel"
rm -f "$marker.publishing"
printf '"'%s\\n' \""'$log_line" >> revisions.log
)
log_line='Branch main (at 0123456789abcdef0123456789abcdef01234567) deployed as release 20261125041638 by alice'
  ln -s "$d/releases/$rel" releases/current
  echo "release \`$rel\` is no longer being prepared (its deploy was interrupted and it was removed); current is unchanged" >&2
printf '%s\n' "$ours" "release=$rel" "previous=$previous" > "$d/.xtask-deploy/unconfirmed"
printf '%s\n' "$log_line" >> revisions.log
)
set -- 'set -eu
set -- log config
    echo "git is not installed on the server: install it (for example '"\\"'`apt-get install git'"\\"'`)" >&2
    echo "'"\\"'`$d'"\\"'` is not set up for deploys: run '"\\"'`cargo xtask deploy-setup'"\\"'` first" >&2
for dir in "$d" "$d/releases" "$d/shared" "$d/.xtask-deploy"; do
  if [ ! -d "$dir" ]; then mkdir -p "$dir"; echo "created $dir"; fi
done
for dir in "$@"; do
  dir="$d/shared/$dir"
  if [ ! -d "$dir" ]; then mkdir -p "$dir"; echo "created $dir"; fi
done
if [ -e "$d/repo" ]; then
  if [ "$(git --git-dir="$d/repo" rev-parse --is-bare-repository 2>/dev/null)" != true ]; then
    echo "'"\\"'`$d/repo'"\\"'` exists but is not a bare git repository: move it away and run deploy-setup again" >&2
    exit 1
  fi
else
  git init --quiet --bare "$d/repo"
  echo "created $d/repo"
fi
chmod go= "$d/repo" "$d/.xtask-deploy"
set -eu
    echo "\`$d/repo\` exists but is not a bare git repository: move it away and run deploy-setup again" >&2
set -- "set -u
state=\""'$d/.xtask-deploy"
  { while IFS= read -r line || [ -n "$line" ]; do printf '"'%s %s\\n' \""'$2" "$line"; done < "$1"; } 2>/dev/null
      '"''|*["'!0-9]*) unnamed=$((unnamed + 1)); gone=$([ "$unnamed" -ge 20 ] && echo 1) ;;
  printf '"'%s rolled back to release %s\\n' \""'$user" "$previous" >> "$d/revisions.log"
      case "$name" in '"''|*["'!0-9]*) continue ;; esac
      printf '"'%s\\n' \""'$name" >> "$state/bad.new"
confirm_deploy
set -- 'set -u
    git --git-dir="$d/repo" log --no-walk=unsorted --ignore-missing --format='"'subject %H %s' \""'$@" -- 2>/dev/null || true
  fi
}
report_subjects
report_lock
if [ -f "$d/revisions.log" ]; then each_line "$d/revisions.log" log; fi
report_unconfirmed
exit 0
set -- file config/database.yml dir log
printf '"'platform machine %s\\n' \""'$(uname -m)"
  case $v in '"'glibc '*) printf 'platform glibc %s\\n' \""'${v#glibc }" ;; esac
  if [ -e "$f" ]; then printf '"'platform interp %s\\n' \""'$f"; fi
done
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
files=0
dirs=0
while [ "$#" -ge 2 ]; do
  case "$1" in
    file) [ -e "$d/shared/$2" ] || echo "missing-file $files"; files=$((files + 1)) ;;
    dir) [ -d "$d/shared/$2" ] || echo "missing-dir $dirs"; dirs=$((dirs + 1)) ;;
  esac
  shift 2
done
free=$(df -Pk "$p" 2>/dev/null | awk '"'NR == 2 { print "'$4 }'"')
size=0
if [ -d \""'$d/current/" ]; then
  size=$(du -sk --apparent-size "$d/current/" 2>/dev/null || du -sk "$d/current/" 2>/dev/null)
  size=${size%%[!0-9]*}
fi
repo=$(du -sk "$d/repo" 2>/dev/null)
repo=${repo%%[!0-9]*}
echo "disk ${free:-unknown} ${size:-0} ${repo:-unknown}"
if [ -L "$d/current" ] && target=$(cd -P "$d/current" 2>/dev/null && pwd -P); then
  echo "current $target"
  rev=-
  { read -r rev < "$target/REVISION"; } 2>/dev/null || true
  echo "release ${target##*/} ${rev:--}"
fi
exit 0
free=$(df -Pk "$p" 2>/dev/null | awk 'NR == 2 { print $4 }')
size=0
if [ -d "$d/current/" ]; then
force=0
lock="$state/lock"
if [ "$force" != 1 ] && [ -d "$lock" ] && holder_alive; then each_line "$lock/info" holder; exit "$exit_locked"; fi
release_lock
force=0
case "$(readlink "$d/current" 2>/dev/null)" in
  */releases/"$rel") echo "release $rel is current; kept" ;;
  *) rm -rf "$d/releases/$rel" "$d/.xtask-deploy/tree.$rel" ;;
esac
rm -f "$d/.xtask-deploy/preparing.$rel"
release=20261125041638
previous=20261125041000
user=alice
go_back
go_back
  while [ \""'$restart_index" -lt "$restart_count" ]; do
    eval "restart_hook='"\\"'$restart_$restart_index"
    ( cd "$d/releases/$rel" && rev=- && { read -r rev < REVISION; } 2>/dev/null; export DEPLOY_TO="$d" RELEASE="$rel" RELEASE_PATH="$d/releases/$rel" REVISION="$rev" ROLLBACK=1; XTASK_DEPLOY_RUN=$restart_hook; export XTASK_DEPLOY_RUN; exec timeout -k 1 "$restart_limit" sh -c '"'xtask_deploy_command="'$XTASK_DEPLOY_RUN; unset XTASK_DEPLOY_RUN; eval "$xtask_deploy_command"'"' ) </dev/null >&2 || echo \"hook-failed "'$restart_index $?"
run_restart_hooks
check='curl -fsS localhost:8080/health'
timeout=30
interval=1
healthy=@@xtask-deploy-healthy
unhealthy=@@xtask-deploy-unhealthy
health_output='the health check did not pass'
t0k3n# shellcheck shell=sh disable=SC2154 # its values are set by the header before it
cd \""'$d/releases/$rel" || exit 1
log=$(mktemp) || exit 1
trap '"'rm -f \""'$log"; exit 143'"' TERM INT HUP
command -v services_down >/dev/null 2>&1 || services_down() { return 1; }
stop_tree() {
  kill -STOP \""'$1" 2>/dev/null
  for child in $(pgrep -P "$1" 2>/dev/null); do stop_tree "$child"; done
  kill -KILL "$1" 2>/dev/null
}
now_ms() {
  n=$(date +%s%N)
  case "$n" in *[!0-9]*|'"'') echo "'$(( $(date +%s) * 1000 )) ;; *) echo $(( n / 1000000 )) ;; esac
}
start=$(now_ms)
deadline=$(( start + timeout * 1000 ))
  ( XTASK_DEPLOY_RUN=$check; export XTASK_DEPLOY_RUN; exec sh -c '"'xtask_deploy_command="'$XTASK_DEPLOY_RUN; unset XTASK_DEPLOY_RUN; eval "$xtask_deploy_command"'"' ) >\""'$log" 2>&1 </dev/null &
  try=$!
  late=0
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
  if down=$(services_down); then
    echo "$unhealthy $tries $(( $(now_ms) - start ))"
    printf '"'%s: service "'`%s` stopped during it (%s)'"\\n' \""'$health_output" "$down" "$(services_state "$down")" >&2
    rm -f "$log"
  if [ "$status" -eq 0 ] && [ "$late" -eq 0 ]; then
    rm -f "$log"
    echo "$healthy $tries $(( $(now_ms) - start ))"
  [ "$(now_ms)" -lt "$deadline" ] || break
  sleep "$interval"
done
echo "$unhealthy $tries $(( $(now_ms) - start ))"
last=$(tail -c 2000 "$log")
[ -n "$last" ] || last="(it printed nothing)"
printf '"'%s within %ss (%s tries); its last output:\\n%s\\n' \""'$health_output" "$timeout" "$tries" "$last" >&2
rm -f "$log"
exit 1
cd "$d/releases/$rel" || exit 1
trap 'rm -f "$log"; exit 143' TERM INT HUP
  kill -STOP "$1" 2>/dev/null
  case "$n" in *[!0-9]*|'') echo $(( $(date +%s) * 1000 )) ;; *) echo $(( n / 1000000 )) ;; esac
  ( XTASK_DEPLOY_RUN=$check; export XTASK_DEPLOY_RUN; exec sh -c 'xtask_deploy_command=$XTASK_DEPLOY_RUN; unset XTASK_DEPLOY_RUN; eval "$xtask_deploy_command"' ) >"$log" 2>&1 </dev/null &
    printf '%s: service `%s` stopped during it (%s)\n' "$health_output" "$down" "$(services_state "$down")" >&2
printf '%s within %ss (%s tries); its last output:\n%s\n' "$health_output" "$timeout" "$tries" "$last" >&2
set -eu
to='"''
mark_left=1
if [ ! -L current ]; then echo "'"\\"'`$d/current'"\\"'` does not exist: nothing to roll back" >&2; exit 1; fi
from=$(basename "$(readlink current)")
if [ -n "$to" ]; then
  rel=$to
  if [ ! -d "releases/$rel" ]; then echo "release '"\\"'`$rel'"\\"'` does not exist in '"\\"'`$d/releases'"\\"'`: '"\\"'`cargo xtask releases'"\\"'` lists them" >&2; exit 1; fi
  if [ "$rel" = "$from" ]; then echo "release '"\\"'`$rel'"\\"'` is already current" >&2; exit 1; fi
else
  rel=""
  for candidate in $(ls -1 releases | grep -E '"'"'^[0-9]{14}$'"' | sort -r); do
    [ \""'$candidate" -lt "$from" ] || continue
    if grep -qxF "$candidate" "$state/bad" 2>/dev/null; then continue; fi
    rel=$candidate
    break
  done
  if [ -z "$rel" ]; then
    echo "no earlier release that is not marked bad to roll back to (current: $from): pass --to <release>; '"\\"'`cargo xtask releases'"\\"'` lists them" >&2
fi
if [ "$mark_left" = 1 ]; then
  echo "$from" >> "$state/bad"
  echo "marked $from"
fi
unmark=$rel
rewrite_marks
if [ -e "$state/unconfirmed" ]; then rm -f "$state/unconfirmed"; fi
printf '"'%s rolled back to release %s\\n' \""'$user" "$rel" >> revisions.log
rev=-
{ read -r rev < "releases/$rel/REVISION"; } 2>/dev/null || true
echo "rolled-back $from $rel"
echo "revision ${rev:--}"
mark 1
mark 2
set -eu
to=''
if [ ! -L current ]; then echo "\`$d/current\` does not exist: nothing to roll back" >&2; exit 1; fi
  if [ ! -d "releases/$rel" ]; then echo "release \`$rel\` does not exist in \`$d/releases\`: \`cargo xtask releases\` lists them" >&2; exit 1; fi
  if [ "$rel" = "$from" ]; then echo "release \`$rel\` is already current" >&2; exit 1; fi
  for candidate in $(ls -1 releases | grep -E '^[0-9]{14}$' | sort -r); do
    [ "$candidate" -lt "$from" ] || continue
    echo "no earlier release that is not marked bad to roll back to (current: $from): pass --to <release>; \`cargo xtask releases\` lists them" >&2
fi
printf '%s rolled back to release %s\n' "$user" "$rel" >> revisions.log
mark 2
set -- "set -eu
unmark=''
set -eu
( require_git ) >/dev/null 2>&1 || echo nogit
( require_setup ) >/dev/null 2>&1 || echo unset
for marker in "$state"/preparing.*; do
  [ -f "$marker" ] && echo "unfinished ${marker##*/preparing.}"
done
if [ -f "$d/repo/HEAD" ]; then
  git --git-dir="$d/repo" for-each-ref --format='"'ref %(objectname) %(refname)' 2>/dev/null
fi
if [ -f \""'$d/repo/shallow" ]; then each_line "$d/repo/shallow" shallow; fi
exit 0
  git --git-dir="$d/repo" for-each-ref --format='ref %(objectname) %(refname)' 2>/dev/null
fi
exit 0
set -- "d=/srv/app
app=app
user=u
mode=verify
set -- user app.service '# Written by xtask-deploy for "'`app` in `/srv/app`: `cargo xtask deploy-setup` and deploys rewrite it.
[Unit]
Description=app: app
StartLimitIntervalSec=0

[Service]
Type=exec
WorkingDirectory=/srv/app/current
ExecStart=/bin/sh -c "set -a; [ ! -r '"'\"\\\\\\\"\"'"'$$0'"'\"\\\\\\\" ] || . \\\\\\\"\"'"'$$0'"'\"\\\\\\\"; set +a; exec \\\\\\\"\"'"'$$@'"'\"\\\\\\\"\\\" /srv/app/shared/.secrets.env /srv/app/current/target/release/app
Restart=on-failure
RestartSec=1
TimeoutStopSec=30

[Install]
WantedBy=default.target\" user app.socket '# Written by xtask-deploy for "'`app` in `/srv/app`: `cargo xtask deploy-setup` and deploys rewrite it.
[Unit]
Description=app: app'"'\"'s listeners

[Socket]
ListenStream=127.0.0.1:8080

[Install]
WantedBy=sockets.target\"
mkdir -p \""'$d/.xtask-deploy" && printf '"'%s\\n' \"d=/srv/app
app=app
user=u
mode=restore
set --
services=app:user:socket
system_services=''
settle=10
: \\\"\"'"'${XDG_RUNTIME_DIR:=/run/user/$(id -u)}"
export XDG_RUNTIME_DIR
sc() {
_scope=$1
shift
if [ "$_scope" = user ]; then systemctl --user "$@"; else systemctl "$@"; fi
}
privileged() {
_scope=$1
shift
if [ "$_scope" = user ] || [ "$(id -u)" -eq 0 ]; then
sc "$_scope" "$@"
else
sudo -n /usr/bin/systemctl "$@"
fi
}
journal() {
_scope=$1
_unit=$2
shift 2
if [ "$_scope" = user ]; then
if journalctl --user -q -n 1 -u "$_unit" 2>/dev/null | grep -q .; then
journalctl --user -u "$_unit" "$@"
else
journalctl --user-unit "$_unit" "$@"
fi
else
journalctl -u "$_unit" "$@"
fi
}
unit_dir() {
if [ "$1" = user ]; then echo "${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"; else echo /etc/systemd/system; fi
}
units_out=$(mktemp) || exit 1
(
header="# Written by xtask-deploy for '"'\"\\\\\"'"'`$app'"'\"\\\\\"'"'` in '"'\"\\\\\"'"'`$d'"'\"\\\\\"'"'`:"
problems=
problem() {
echo "$1"
problems="$problems
$2"
}
if ! command -v systemctl >/dev/null 2>&1; then
echo "no-systemctl"
[ "$mode" != verify ] || echo "this server has no systemctl: services need systemd" >&2
exit 1
fi
ours() {
IFS= read -r first <"$1" 2>/dev/null && case "$first" in "$header"*) return 0 ;; esac
return 1
}
keep=
if [ "$mode" = apply ]; then
previous=$(sed -n '"'\"'s/\"'"'^previous=//p'"'\"' \\\"\"'"'$state/unconfirmed" 2>/dev/null)
if [ -n "$previous" ]; then keep="$state/units/$previous"; fi
for kept in "$state"/units/*; do
[ -d "$kept" ] && [ ! -d "$d/releases/${kept##*/}" ] && rm -rf "$kept"
done
fi
if [ "$mode" = restore ]; then
keep="$state/units/$RELEASE"
[ -f "$keep/.list" ] || exit 0
set --
while IFS='"'\"' ' read -r scope file; do
set -- \\\"\"'"'$@" "$scope" "$file" "$(cat "$keep/$file")"
case "$file" in
*.service)
name=${file%.service}
if grep -qxF "$scope $name.socket" "$keep/.list"; then socket=socket; else socket=-; fi
echo "kept-service $name:$scope:$socket"
;;
esac
done <"$keep/.list"
fi
reload_user=0
reload_system=0
enable_user=
enable_system=
wanted=
while [ $# -ge 3 ]; do
scope=$1
file=$2
text=$3
shift 3
wanted="$wanted $scope:$file"
dir=$(unit_dir "$scope")
if [ -e "$dir/$file" ] && ! ours "$dir/$file"; then
problem "unit-foreign $file" "'"'\"\\\\\"'"'`$dir/$file'"'\"\\\\\"'"'` is not a unit of '"'\"\\\\\"'"'`$app'"'\"\\\\\"'"'` (its first line is not '"'\"\\\\\"'"'`$header'"'\"\\\\\"'"'`...): rename the service, or remove that unit"
continue
fi
if [ "$scope" = system ] && [ "$(id -u)" -ne 0 ]; then
if [ "$(cat "$dir/$file" 2>/dev/null)" != "$text" ]; then
problem "unit-differs $file" "the system unit '"'\"\\\\\"'"'`$file'"'\"\\\\\"'"'` is not installed as configured: '"'\"\\\\\"'"'`cargo xtask deploy-setup'"'\"\\\\\"'"'` prints the root steps"
fi
case "$file" in
*.service)
sudo -n -l /usr/bin/systemctl restart "$file" >/dev/null 2>&1 ||
problem "sudo-missing $file" "no sudo rule lets '"'\"\\\\\"'"'`$user'"'\"\\\\\"'"'` run '"'\"\\\\\"'"'`/usr/bin/systemctl restart $file'"'\"\\\\\"'"'`: '"'\"\\\\\"'"'`cargo xtask deploy-setup'"'\"\\\\\"'"'` prints it"
;;
esac
continue
fi
if [ "$(cat "$dir/$file" 2>/dev/null)" != "$text" ]; then
case "$mode" in
check | verify) echo "stale $file" ;;
*)
if [ -n "$keep" ] && [ ! -e "$keep/.list" ]; then
mkdir -p "$keep" || exit 1
: >"$keep/.list.new"
for unit in "$(unit_dir user)"/* "$(unit_dir system)"/*; do
if [ ! -f "$unit" ] || ! ours "$unit"; then continue; fi
case "$unit" in "$(unit_dir user)"/*) kind=user ;; *) kind=system ;; esac
[ "$kind" = user ] || [ "$(id -u)" -eq 0 ] || continue
cp "$unit" "$keep/${unit##*/}" && echo "$kind ${unit##*/}" >>"$keep/.list.new" || exit 1
done
mv "$keep/.list.new" "$keep/.list" || exit 1
fi
mkdir -p "$dir" || exit 1
printf '"'\"'%s\\\\n' \\\"\"'"'$text" >"$dir/.$file.new" && mv -f "$dir/.$file.new" "$dir/$file" || exit 1
echo "unit-written $scope $file"
case "$file" in *.socket) echo "socket-changed ${file%.socket}" ;; esac
if [ "$scope" = user ]; then reload_user=1; else reload_system=1; fi
;;
esac
fi
if [ "$scope" = user ]; then enable_user="$enable_user $file"; else enable_system="$enable_system $file"; fi
done
for scope in user system; do
[ "$scope" = user ] || [ "$(id -u)" -eq 0 ] || continue
for unit in "$(unit_dir "$scope")"/*.service "$(unit_dir "$scope")"/*.socket; do
if [ ! -f "$unit" ] || ! ours "$unit"; then continue; fi
file=${unit##*/}
case " $wanted " in *" $scope:$file "*) continue ;; esac
case "$mode" in
check | verify) echo "stale $file" ;;
*)
sc "$scope" disable --now --no-reload --quiet "$file" 2>/dev/null
rm -f "$unit" || exit 1
echo "unit-removed $scope $file"
case "$file" in *.socket) echo "socket-changed ${file%.socket}" ;; esac
if [ "$scope" = user ]; then reload_user=1; else reload_system=1; fi
;;
esac
done
done
if [ "$reload_user" -eq 1 ]; then systemctl --user daemon-reload || exit 1; fi
if [ "$reload_system" -eq 1 ]; then systemctl daemon-reload || exit 1; fi
if [ -n "$enable_user" ] && [ "$mode" != check ] && [ "$mode" != verify ]; then
systemctl --user enable --no-reload --quiet $enable_user || exit 1
fi
if [ -n "$enable_system" ] && [ "$mode" != check ] && [ "$mode" != verify ]; then
systemctl enable --no-reload --quiet $enable_system || exit 1
fi
if [ -n "$enable_user" ] && [ "$(loginctl show-user "$(id -un)" -p Linger --value 2>/dev/null)" != yes ]; then
if [ "$mode" = check ] || [ "$mode" = verify ] || ! loginctl enable-linger >/dev/null 2>&1; then
problem "linger-off" "linger is off for '"'\"\\\\\"'"'`$user'"'\"\\\\\"'"'`, so its services stop when its last login ends: as root run '"'\"\\\\\"'"'`loginctl enable-linger $user'"'\"\\\\\"'"'`"
fi
fi
if [ "$mode" = verify ] && [ -n "$problems" ]; then
printf '"'\"'%s\\\\n' \\\"\"'"'${problems#?}" >&2
exit 1
) >"$units_out" || { cat "$units_out" >&2; rm -f "$units_out"; exit 1; }
changed_sockets=$(sed -n '"'\"'s/\"'"'^socket-changed //p'"'\"' \\\"\"'"'$units_out" | tr '"'\"'\\\\n' ' ')
kept=\"'"'$(sed -n '"'\"'s/\"'"'^kept-service //p'"'\"' \\\"\"'"'$units_out" | tr '"'\"'\\\\n' ' ')
rm -f \\\"\"'"'$units_out"
if [ -n "$kept" ]; then
for word in $system_services; do
case " $kept " in *" $word "*) ;; *) kept="$kept $word" ;; esac
done
services=$kept
fi
since=$(date '"'\"'+%Y-%m-%d %H:%M:%S')
explain() {
name=\"'"'$1
scope=$2
state=$(sc "$scope" show -p ActiveState --value "$name.service" 2>/dev/null)
sub=$(sc "$scope" show -p SubState --value "$name.service" 2>/dev/null)
code=$(sc "$scope" show -p ExecMainCode --value "$name.service" 2>/dev/null)
status=$(sc "$scope" show -p ExecMainStatus --value "$name.service" 2>/dev/null)
case "$code" in
1) how="exited with status $status" ;;
2 | 3) how="was killed by signal $status" ;;
*) how="ended (code $code, status $status)" ;;
esac
echo "service '"'\"\\\\\"'"'`$name'"'\"\\\\\"'"'` did not stay up after its restart: it is $state ($sub); its process $how; its lines since the restart:" >&2
journal "$scope" "$name.service" --since "$since" -n 15 --no-pager -o cat >&2 2>/dev/null
}
watched=
for entry in $services; do
IFS=: read -r name scope socket <<END
$entry
END
if [ "$scope" = user ] && [ "$socket" != - ]; then
case " $changed_sockets " in
*" $name "*) renew=1 ;;
*) if sc user is-active --quiet "$name.socket"; then renew=0; else renew=1; fi ;;
esac
if [ "$renew" -eq 1 ]; then
sc user stop "$name.service" "$name.socket" 2>/dev/null
if ! sc user start "$name.socket"; then
echo "service '"'\"\\\\\"'"'`$name'"'\"\\\\\"'"'`: its socket '"'\"\\\\\"'"'`$name.socket'"'\"\\\\\"'"'` did not start:" >&2
journal user "$name.socket" --since "$since" -n 5 --no-pager -o cat >&2 2>/dev/null
exit 1
fi
fi
fi
if ! privileged "$scope" restart "$name.service"; then
explain "$name" "$scope"
exit 1
fi
pid=$(sc "$scope" show -p MainPID --value "$name.service")
watched="$watched $name:$scope:$pid"
done
tick=0
while [ "$tick" -lt "$settle" ]; do
sleep 0.1
tick=$((tick + 1))
for entry in $watched; do
IFS=: read -r name scope pid <<END
$entry
END
now=$(sc "$scope" show -p MainPID --value "$name.service")
if [ "$now" != "$pid" ] || [ "$now" = 0 ] || ! sc "$scope" is-active --quiet "$name.service"; then
explain "$name" "$scope"
exit 1
fi
done
done
exit 0
'"' > \""'$d/.xtask-deploy/services-restore.sh.pending" || exit 1
: "${XDG_RUNTIME_DIR:=/run/user/$(id -u)}"
export XDG_RUNTIME_DIR
sc() {
_scope=$1
shift
if [ "$_scope" = user ]; then systemctl --user "$@"; else systemctl "$@"; fi
}
privileged() {
_scope=$1
shift
if [ "$_scope" = user ] || [ "$(id -u)" -eq 0 ]; then
sc "$_scope" "$@"
else
sudo -n /usr/bin/systemctl "$@"
fi
}
journal() {
_scope=$1
_unit=$2
shift 2
if [ "$_scope" = user ]; then
if journalctl --user -q -n 1 -u "$_unit" 2>/dev/null | grep -q .; then
journalctl --user -u "$_unit" "$@"
else
journalctl --user-unit "$_unit" "$@"
fi
else
journalctl -u "$_unit" "$@"
fi
}
unit_dir() {
if [ "$1" = user ]; then echo "${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"; else echo /etc/systemd/system; fi
}
header="# Written by xtask-deploy for '"\\"'`$app'"\\"'` in '"\\"'`$d'"\\"'`:"
problems=
problem() {
echo "$1"
problems="$problems
$2"
}
if ! command -v systemctl >/dev/null 2>&1; then
echo "no-systemctl"
[ "$mode" != verify ] || echo "this server has no systemctl: services need systemd" >&2
exit 1
fi
ours() {
IFS= read -r first <"$1" 2>/dev/null && case "$first" in "$header"*) return 0 ;; esac
return 1
}
keep=
if [ "$mode" = apply ]; then
previous=$(sed -n '"'s/"'^previous=//p'"' \""'$state/unconfirmed" 2>/dev/null)
if [ -n "$previous" ]; then keep="$state/units/$previous"; fi
for kept in "$state"/units/*; do
[ -d "$kept" ] && [ ! -d "$d/releases/${kept##*/}" ] && rm -rf "$kept"
done
fi
if [ "$mode" = restore ]; then
keep="$state/units/$RELEASE"
[ -f "$keep/.list" ] || exit 0
set --
while IFS='"' ' read -r scope file; do
set -- \""'$@" "$scope" "$file" "$(cat "$keep/$file")"
case "$file" in
*.service)
name=${file%.service}
if grep -qxF "$scope $name.socket" "$keep/.list"; then socket=socket; else socket=-; fi
echo "kept-service $name:$scope:$socket"
;;
esac
done <"$keep/.list"
fi
reload_user=0
reload_system=0
enable_user=
enable_system=
wanted=
while [ $# -ge 3 ]; do
scope=$1
file=$2
text=$3
shift 3
wanted="$wanted $scope:$file"
dir=$(unit_dir "$scope")
if [ -e "$dir/$file" ] && ! ours "$dir/$file"; then
problem "unit-foreign $file" "'"\\"'`$dir/$file'"\\"'` is not a unit of '"\\"'`$app'"\\"'` (its first line is not '"\\"'`$header'"\\"'`...): rename the service, or remove that unit"
continue
fi
if [ "$scope" = system ] && [ "$(id -u)" -ne 0 ]; then
if [ "$(cat "$dir/$file" 2>/dev/null)" != "$text" ]; then
problem "unit-differs $file" "the system unit '"\\"'`$file'"\\"'` is not installed as configured: '"\\"'`cargo xtask deploy-setup'"\\"'` prints the root steps"
fi
case "$file" in
*.service)
sudo -n -l /usr/bin/systemctl restart "$file" >/dev/null 2>&1 ||
problem "sudo-missing $file" "no sudo rule lets '"\\"'`$user'"\\"'` run '"\\"'`/usr/bin/systemctl restart $file'"\\"'`: '"\\"'`cargo xtask deploy-setup'"\\"'` prints it"
;;
esac
continue
fi
if [ "$(cat "$dir/$file" 2>/dev/null)" != "$text" ]; then
case "$mode" in
check | verify) echo "stale $file" ;;
*)
if [ -n "$keep" ] && [ ! -e "$keep/.list" ]; then
mkdir -p "$keep" || exit 1
: >"$keep/.list.new"
for unit in "$(unit_dir user)"/* "$(unit_dir system)"/*; do
if [ ! -f "$unit" ] || ! ours "$unit"; then continue; fi
case "$unit" in "$(unit_dir user)"/*) kind=user ;; *) kind=system ;; esac
[ "$kind" = user ] || [ "$(id -u)" -eq 0 ] || continue
cp "$unit" "$keep/${unit##*/}" && echo "$kind ${unit##*/}" >>"$keep/.list.new" || exit 1
done
mv "$keep/.list.new" "$keep/.list" || exit 1
fi
mkdir -p "$dir" || exit 1
printf '"'%s\\n' \""'$text" >"$dir/.$file.new" && mv -f "$dir/.$file.new" "$dir/$file" || exit 1
echo "unit-written $scope $file"
case "$file" in *.socket) echo "socket-changed ${file%.socket}" ;; esac
if [ "$scope" = user ]; then reload_user=1; else reload_system=1; fi
;;
esac
fi
if [ "$scope" = user ]; then enable_user="$enable_user $file"; else enable_system="$enable_system $file"; fi
done
for scope in user system; do
[ "$scope" = user ] || [ "$(id -u)" -eq 0 ] || continue
for unit in "$(unit_dir "$scope")"/*.service "$(unit_dir "$scope")"/*.socket; do
if [ ! -f "$unit" ] || ! ours "$unit"; then continue; fi
file=${unit##*/}
case " $wanted " in *" $scope:$file "*) continue ;; esac
case "$mode" in
check | verify) echo "stale $file" ;;
*)
sc "$scope" disable --now --no-reload --quiet "$file" 2>/dev/null
rm -f "$unit" || exit 1
echo "unit-removed $scope $file"
case "$file" in *.socket) echo "socket-changed ${file%.socket}" ;; esac
if [ "$scope" = user ]; then reload_user=1; else reload_system=1; fi
;;
esac
done
done
if [ "$reload_user" -eq 1 ]; then systemctl --user daemon-reload || exit 1; fi
if [ "$reload_system" -eq 1 ]; then systemctl daemon-reload || exit 1; fi
if [ -n "$enable_user" ] && [ "$mode" != check ] && [ "$mode" != verify ]; then
systemctl --user enable --no-reload --quiet $enable_user || exit 1
fi
if [ -n "$enable_system" ] && [ "$mode" != check ] && [ "$mode" != verify ]; then
systemctl enable --no-reload --quiet $enable_system || exit 1
fi
if [ -n "$enable_user" ] && [ "$(loginctl show-user "$(id -un)" -p Linger --value 2>/dev/null)" != yes ]; then
if [ "$mode" = check ] || [ "$mode" = verify ] || ! loginctl enable-linger >/dev/null 2>&1; then
problem "linger-off" "linger is off for '"\\"'`$user'"\\"'`, so its services stop when its last login ends: as root run '"\\"'`loginctl enable-linger $user'"\\"'`"
fi
fi
if [ "$mode" = verify ] && [ -n "$problems" ]; then
printf '"'%s\\n' \""'${problems#?}" >&2
exit 1
set -- user app.service '# Written by xtask-deploy for `app` in `/srv/app`: `cargo xtask deploy-setup` and deploys rewrite it.
ExecStart=/bin/sh -c "set -a; [ ! -r '"\\\""'$$0'"\\\" ] || . \\\""'$$0'"\\\"; set +a; exec \\\""'$$@'"\\\"\" /srv/app/shared/.secrets.env /srv/app/current/target/release/app
WantedBy=default.target" user app.socket '# Written by xtask-deploy for `app` in `/srv/app`: `cargo xtask deploy-setup` and deploys rewrite it.
[Unit]
Description=app: app'"'s listeners
WantedBy=sockets.target"
mkdir -p "$d/.xtask-deploy" && printf '%s\n' "d=/srv/app
: \""'${XDG_RUNTIME_DIR:=/run/user/$(id -u)}"
changed_sockets=$(sed -n '"'s/"'^socket-changed //p'"' \""'$units_out" | tr '"'\\n' ' ')
kept="'$(sed -n '"'s/"'^kept-service //p'"' \""'$units_out" | tr '"'\\n' ' ')
rm -f \""'$units_out"
since=$(date '"'+%Y-%m-%d %H:%M:%S')
name="'$1
echo "service '"\\"'`$name'"\\"'` did not stay up after its restart: it is $state ($sub); its process $how; its lines since the restart:" >&2
echo "service '"\\"'`$name'"\\"'`: its socket '"\\"'`$name.socket'"\\"'` did not start:" >&2
' > "$d/.xtask-deploy/services-restore.sh.pending" || exit 1
header="# Written by xtask-deploy for \`$app\` in \`$d\`:"
previous=$(sed -n 's/^previous=//p' "$state/unconfirmed" 2>/dev/null)
while IFS=' ' read -r scope file; do
set -- "$@" "$scope" "$file" "$(cat "$keep/$file")"
problem "unit-foreign $file" "\`$dir/$file\` is not a unit of \`$app\` (its first line is not \`$header\`...): rename the service, or remove that unit"
problem "unit-differs $file" "the system unit \`$file\` is not installed as configured: \`cargo xtask deploy-setup\` prints the root steps"
problem "sudo-missing $file" "no sudo rule lets \`$user\` run \`/usr/bin/systemctl restart $file\`: \`cargo xtask deploy-setup\` prints it"
printf '%s\n' "$text" >"$dir/.$file.new" && mv -f "$dir/.$file.new" "$dir/$file" || exit 1
problem "linger-off" "linger is off for \`$user\`, so its services stop when its last login ends: as root run \`loginctl enable-linger $user\`"
printf '%s\n' "${problems#?}" >&2
exit 0
mode=setup
exit 0
mode=check
exit 0
set -- 'd=/srv/app
mode=apply
set -- user app.service '"'# Written by xtask-deploy for "'`app` in `/srv/app`: `cargo xtask deploy-setup` and deploys rewrite it.
[ "'! -f "$d/.xtask-deploy/services-restore.sh.pending" ] || mv -f "$d/.xtask-deploy/services-restore.sh.pending" "$d/.xtask-deploy/services-restore.sh"
system_services='"''
[ ! -f "$d/.xtask-deploy/services-restore.sh.pending" ] || mv -f "$d/.xtask-deploy/services-restore.sh.pending" "$d/.xtask-deploy/services-restore.sh"
exit 0
changed_sockets=$(sed -n 's/^socket-changed //p' "$units_out" | tr '\n' ' ')
kept=$(sed -n 's/^kept-service //p' "$units_out" | tr '\n' ' ')
rm -f "$units_out"
since=$(date '+%Y-%m-%d %H:%M:%S')
name=$1
echo "service \`$name\` did not stay up after its restart: it is $state ($sub); its process $how; its lines since the restart:" >&2
echo "service \`$name\`: its socket \`$name.socket\` did not start:" >&2
current=$(readlink "$d/current" 2>/dev/null) && echo "current ${current##*/}"
sc "$scope" show -p ActiveState -p SubState -p MainPID -p ActiveEnterTimestamp -p MemoryCurrent -p NRestarts '"\\
\""'$name.service" 2>/dev/null | while IFS= read -r line; do echo "service $name $line"; done
pid=$(sc "$scope" show -p MainPID --value "$name.service" 2>/dev/null)
if [ -n "$pid" ] && [ "$pid" != 0 ]; then
cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null) && echo "service $name Release=${cwd##*/}"
fi
if [ "$socket" != - ]; then echo "service $name Socket=$(sc "$scope" is-active "$name.socket" 2>/dev/null)"; fi
sc "$scope" show -p ActiveState -p SubState -p MainPID -p ActiveEnterTimestamp -p MemoryCurrent -p NRestarts \
"$name.service" 2>/dev/null | while IFS= read -r line; do echo "service $name $line"; done