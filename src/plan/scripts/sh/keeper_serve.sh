# shellcheck shell=sh disable=SC2154 # its values are set by the header before it
# The server's state, and what the push goes on: the refs and the shallow commits of `repo/`.
# Expects: `d`, `state`, `each_line`, `report_state`.
report_state
# What the push goes on: it sends its commands without waiting for git to list them again.
git --git-dir="$d/repo" for-each-ref --format='ref %(objectname) %(refname)' 2>/dev/null
if [ -f "$d/repo/shallow" ]; then each_line "$d/repo/shallow" shallow; fi
