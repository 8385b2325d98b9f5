# shellcheck shell=sh disable=SC2154,SC2016 # its values are set by the script it is part of; the backquotes are words of the message
# `no_link PATH LAST WHAT FIX`: exits 1 with a message when a directory on the way to PATH in
# the release (and PATH itself, when LAST is `yes`) is a symbolic link: writing WHAT through it
# would land outside the release. Shell builtins only, but for the message.
# Expects: `rel`, the working directory `$d`. Sets: `p`, `rest`.
no_link() {
  p="releases/$rel"
  rest=$1
  while [ -n "$rest" ]; do
    p="$p/${rest%%/*}"
    case "$rest" in */*) rest=${rest#*/} ;; *) rest="" ;; esac
    if [ -L "$p" ] && { [ -n "$rest" ] || [ "$2" = yes ]; }; then
      printf '`%s` is a symbolic link in the deployed commit (to `%s`): the deploy would write %s through it, outside the release; %s, and deploy again\n' \
        "${p#releases/"$rel"/}" "$(readlink "$p")" "$3" "$4" >&2
      exit 1
    fi
  done
}
