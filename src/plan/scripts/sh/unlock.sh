# shellcheck shell=sh disable=SC2154 # its values are set by the header before it
# `cargo xtask unlock`: removes the deploy lock, printing its holder as `removed <key>=<value>`
# lines. Unless `force` is 1, a lock whose holder is alive (its deploy's SSH connection, or the
# keeper going back after it) is left in place: its holder is printed as `holder <key>=<value>`
# lines, and it exits `$exit_locked`.
# Expects: `state`, `force`, `exit_locked`, `ours` (only a deploy's own lock, when set), the lock
# helpers, `drop_lock` and `release_lock`. Sets: `lock`.
lock="$state/lock"
if [ "$force" != 1 ] && [ -d "$lock" ] && holder_alive; then each_line "$lock/info" holder; exit "$exit_locked"; fi
release_lock
