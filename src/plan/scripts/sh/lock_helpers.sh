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
