# shellcheck shell=sh disable=SC2154 # its values are set by the script it is part of
# `deploy --dry-run`'s look at a server, changing nothing there: no lock, no process left, no
# file written. Prints `nogit` without git, `unset` when setup was not done, the `release`,
# `current` and `bad` lines, the lock's `holder` or `stale` lines, `unfinished <release>` for
# each release an interrupted deploy left (the next deploy's keeper removes it),
# `unconfirmed <release>`, and `ref <sha> <refname>` for each ref of `repo/` (what a push would
# find there), and `shallow <sha>` for each shallow commit.
# Expects: `d`, `state`, the lock helpers, `require_git`, `require_setup` and the reports.
( require_git ) >/dev/null 2>&1 || echo nogit
( require_setup ) >/dev/null 2>&1 || echo unset
report_state
report_lock
report_unconfirmed
for marker in "$state"/preparing.*; do
  [ -f "$marker" ] && echo "unfinished ${marker##*/preparing.}"
done
if [ -f "$d/repo/HEAD" ]; then
  git --git-dir="$d/repo" for-each-ref --format='ref %(objectname) %(refname)' 2>/dev/null
fi
if [ -f "$d/repo/shallow" ]; then each_line "$d/repo/shallow" shallow; fi
exit 0
