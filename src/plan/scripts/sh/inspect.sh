# shellcheck shell=sh disable=SC2154 # its values are set by the script it is part of
# `releases`' look at a server, changing nothing: its state, the commits' subjects, the lock,
# `revisions.log` (a `log` line each) and the release a deploy switched to and did not confirm.
# Expects: `d`, `state`, the lock helpers, `require_setup` and the reports.
require_setup
report_state
report_subjects
report_lock
if [ -f "$d/revisions.log" ]; then each_line "$d/revisions.log" log; fi
report_unconfirmed
exit 0
