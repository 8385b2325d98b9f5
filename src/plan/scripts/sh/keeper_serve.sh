# shellcheck shell=sh disable=SC2154 # its values are set by the header before it
# After the server's state (`REPORT_STATE`): what the push goes on, the refs and the shallow
# commits of `repo/`. Expects: `d`, `each_line`.
# What the push goes on: it sends its commands without waiting for git to list them again.
git --git-dir="$d/repo" for-each-ref --format='ref %(objectname) %(refname)' 2>/dev/null
if [ -f "$d/repo/shallow" ]; then each_line "$d/repo/shallow" shallow; fi
