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
