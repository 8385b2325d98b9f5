# shellcheck shell=sh disable=SC2154,SC2034,SC2086 # values set and read by the other pieces; words split on purpose
# The lock keeper's first lines (see `keeper_script` in lock.rs, which puts keeper_take.sh,
# keeper_serve.sh and keeper_loop.sh after it, with state.sh first). Expects: `d`,
# `require_git`, `require_setup`.
# The deployer may vanish at any time: a write to its channel must fail, not kill this shell
# before it cleans up (a handler, not an ignored signal: the commands it starts get the default).
trap 'gone=1' PIPE
require_git
require_setup
