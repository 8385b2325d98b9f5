# shellcheck shell=sh disable=SC2154,SC2034 # `d` is set by the header before it; `state` is read by what follows
# The private state directory of `deploy_to` (the lock, the marks, the kept scripts).
# Expects: `d`. Sets: `state`.
state="$d/.xtask-deploy"
