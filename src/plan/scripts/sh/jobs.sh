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
