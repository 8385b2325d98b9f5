# shellcheck shell=sh disable=SC2154,SC2016 # its values are set by the header before it; the quoted code runs in the hook's shell
# A remote hook: runs `$hook` with `sh` in the release directory (in `deploy_to` while the
# release does not exist yet), with DEPLOY_TO, RELEASE, RELEASE_PATH and REVISION set. Its
# command is on no command line (see `RUN_EXPORTED`); its stdout and stderr are its own.
# Expects: `d`, `rel`, `sha`, `hook`.
export DEPLOY_TO="$d" RELEASE="$rel" RELEASE_PATH="$d/releases/$rel" REVISION="$sha" ROLLBACK=
if [ -d "$RELEASE_PATH" ]; then cd "$RELEASE_PATH"; else cd "$d"; fi || exit 1
XTASK_DEPLOY_RUN=$hook; export XTASK_DEPLOY_RUN
exec sh -c 'xtask_deploy_command=$XTASK_DEPLOY_RUN; unset XTASK_DEPLOY_RUN; eval "$xtask_deploy_command"'
