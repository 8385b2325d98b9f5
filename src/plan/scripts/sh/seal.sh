# shellcheck shell=sh disable=SC2154 # its values are set by the script it is part of
# For `reuse = "link"`, after the release is made: its files become read-only (a file shared with
# an older release is never touched), then it is recorded for the next release to reuse: its
# tree, `$attributes`, and the inode of each of its files (see `SEAL` in release.rs).
# Expects: `rel`, `tree`, `record`, `attributes`, the working directory `$d`.
if ! { printf '%s\n' "$tree" "$attributes" && find "releases/$rel" \( -type f -o -type l \) -printf '%i ./%P\n' \
  \( -type f \( -perm -0200 -o -perm -0020 -o -perm -0002 \) -exec chmod a-w {} + \); } > "$record" 2>/dev/null; then
  rm -f "$record"
  find "releases/$rel" -type f \( -perm -0200 -o -perm -0020 -o -perm -0002 \) -exec chmod a-w {} +
fi
