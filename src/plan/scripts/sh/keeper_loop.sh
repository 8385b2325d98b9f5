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
