# shellcheck shell=sh disable=SC2154 # its values are set by the script it is part of
# The end of `releases`' look at a server: `revisions.log`, a `log` line each.
# Expects: `d`, `each_line`.
if [ -f "$d/revisions.log" ]; then each_line "$d/revisions.log" log; fi
exit 0
