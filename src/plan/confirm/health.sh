# shellcheck shell=sh disable=SC2154 # its values are set by the header before it
# The health check: tries `$check` in the release until it exits 0 or `$timeout` seconds have
# passed. A try still running at the timeout is stopped with everything it started; so is one
# running when the step is stopped (its deployer was lost).
# Expects: `d`, `rel`, `sha`, `check` (the command), `timeout` and `interval` (seconds), the
# words `healthy`, `unhealthy` and `health_output`, and `services_down` and `services_state`
# when the services are watched (then a service that stopped fails the check at once).
# Prints `$healthy <tries> <ms>` and exits 0, or `$unhealthy <tries> <ms>` and exits 1, with the
# last try's output on stderr after `$health_output`.
cd "$d/releases/$rel" || exit 1
export DEPLOY_TO="$d" RELEASE="$rel" RELEASE_PATH="$d/releases/$rel" REVISION="$sha" ROLLBACK=
log=$(mktemp) || exit 1
# Tries run in the step's process group: stopped with the step (its deployer was lost), the
# whole group goes, tries included.
trap 'rm -f "$log"; exit 143' TERM INT HUP
# Without the services' watch, none is ever down.
command -v services_down >/dev/null 2>&1 || services_down() { return 1; }
# Freezes a process and everything below it (so that none starts more), then kills them all.
stop_tree() {
  kill -STOP "$1" 2>/dev/null
  for child in $(pgrep -P "$1" 2>/dev/null); do stop_tree "$child"; done
  kill -KILL "$1" 2>/dev/null
}
# Milliseconds since the epoch (busybox's `date` has no %N: whole seconds then).
now_ms() {
  n=$(date +%s%N)
  case "$n" in *[!0-9]*|'') echo $(( $(date +%s) * 1000 )) ;; *) echo $(( n / 1000000 )) ;; esac
}
start=$(now_ms)
deadline=$(( start + timeout * 1000 ))
tries=0
while :; do
  tries=$((tries + 1))
  # The command is on no command line (see `RUN_EXPORTED`).
  ( XTASK_DEPLOY_RUN=$check; export XTASK_DEPLOY_RUN; exec sh -c 'xtask_deploy_command=$XTASK_DEPLOY_RUN; unset XTASK_DEPLOY_RUN; eval "$xtask_deploy_command"' ) >"$log" 2>&1 </dev/null &
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
    echo "$unhealthy $tries $(( $(now_ms) - start ))"
    # shellcheck disable=SC2016 # the backquotes are words of the message
    printf '%s: service `%s` stopped during it (%s)\n' "$health_output" "$down" "$(services_state "$down")" >&2
    rm -f "$log"
    exit 1
  fi
  # A try stopped at the timeout failed, whatever it exited with.
  if [ "$status" -eq 0 ] && [ "$late" -eq 0 ]; then
    rm -f "$log"
    echo "$healthy $tries $(( $(now_ms) - start ))"
    exit 0
  fi
  [ "$(now_ms)" -lt "$deadline" ] || break
  sleep "$interval"
done
echo "$unhealthy $tries $(( $(now_ms) - start ))"
last=$(tail -c 2000 "$log")
[ -n "$last" ] || last="(it printed nothing)"
printf '%s within %ss (%s tries); its last output:\n%s\n' "$health_output" "$timeout" "$tries" "$last" >&2
rm -f "$log"
exit 1
