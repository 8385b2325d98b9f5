# shellcheck shell=sh disable=SC2154,SC2016 # its values are set by the script it is part of; the quoted code runs later
# `run_restart_hooks`: runs the restart hooks (the `after_publish` hooks) `restart_0` ...
# `restart_<restart_count - 1>` one after another in `$d/releases/$rel`, which a server went
# back to, each with the hooks' environment and `ROLLBACK=1`, within `restart_limit` seconds;
# a failing one prints `hook-failed <index> <status>` and the next still runs. Each runs under
# `timeout` in a process group of its own: a restart that has begun finishes even when the step
# that started it is stopped (the deployer was lost mid-way). Its command is on no command line
# (see `RUN_EXPORTED`).
# Expects: `d`, `rel`, `restart_count`, `restart_limit`, `restart_<index>`. Sets:
# `restart_index`, `restart_hook`.
run_restart_hooks() {
  restart_index=0
  while [ "$restart_index" -lt "$restart_count" ]; do
    eval "restart_hook=\$restart_$restart_index"
    ( cd "$d/releases/$rel" && rev=- && { read -r rev < REVISION; } 2>/dev/null; export DEPLOY_TO="$d" RELEASE="$rel" RELEASE_PATH="$d/releases/$rel" REVISION="$rev" ROLLBACK=1; XTASK_DEPLOY_RUN=$restart_hook; export XTASK_DEPLOY_RUN; exec timeout -k 1 "$restart_limit" sh -c 'xtask_deploy_command=$XTASK_DEPLOY_RUN; unset XTASK_DEPLOY_RUN; eval "$xtask_deploy_command"' ) </dev/null >&2 || echo "hook-failed $restart_index $?"
    restart_index=$((restart_index + 1))
  done
}
