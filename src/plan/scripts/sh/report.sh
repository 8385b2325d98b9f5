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
