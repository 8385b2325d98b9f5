set -eu
d=/srv/app
rel=20261125041638
sha=0123456789abcdef0123456789abcdef01234567
tree=fedcba9876543210fedcba9876543210fedcba98
cd "$d"
if [ -e "releases/$rel" ]; then echo "release \`$rel\` already exists in \`$d/releases\`" >&2; exit 1; fi
missing=""
[ -e "$d/shared"/config/database.yml ] || missing="$missing "config/database.yml
if [ -n "$missing" ]; then
  echo "linked file(s) missing in \`$d/shared\`:$missing: create them on the server before deploying" >&2; exit 1
fi
marker="$d/.xtask-deploy/preparing.$rel"
# The marker tells an interrupted deploy's clean-up that this release is unfinished: written
# before the release's directory exists, so that a deploy killed at any moment leaves no
# release without it. Until the release is made, an extraction that fails writes into it.
: > "$marker"
record="$d/.xtask-deploy/tree.$rel"
work="$d/.xtask-deploy/reuse.$rel"
trap 'rm -rf "releases/$rel" "$marker" "$record" "$work"' EXIT
for r in "${record%/*}"/tree.*; do
  if [ -f "$r" ] && [ ! -d "releases/${r##*/tree.}" ]; then rm -f "$r"; fi
done
mkdir "releases/$rel"
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

mkdir -p repo/info && printf '%s\n' '/target -export-ignore' '/target/release -export-ignore' '/target/release/app -export-ignore -export-subst -text -ident -filter -working-tree-encoding' '/target/release/app/** -export-ignore -export-subst -text -ident -filter -working-tree-encoding' > repo/info/attributes
if [ -f repo/info/attributes ]; then attributes=$(cksum < repo/info/attributes); else attributes=none; fi
{ git --git-dir=repo archive --format=tar "$tree" || echo "git archive failed" > "$marker"; } | tar -x -f - -C "releases/$rel" || echo "tar failed" >> "$marker"
no_link vendor/lib yes 'submodule `vendor/lib`' 'the deployed tree is malformed (`git fsck --strict` names the problem): fix the commit'
mkdir -p "releases/$rel"/vendor/lib
{ git --git-dir=repo/modules/lib archive --format=tar 89abcdef0123456789abcdef0123456789abcdef || echo failed > "$marker"; } | tar -x -f - -C "releases/$rel"/vendor/lib || echo failed >> "$marker"
if [ -s "$marker" ]; then
  if ! git --git-dir=repo cat-file -e "$tree^{commit}" 2>/dev/null; then
    echo "commit \`$tree\` is not in \`$d/repo\`: the push did not arrive" >&2; exit 1
  fi
  echo "could not extract \`$tree\` into \`releases/$rel\`" >&2; exit 1
fi
no_link REVISION yes '`REVISION`' 'remove `REVISION` from the commit (the deploy writes that file)'
no_link log no 'the link to `shared/log` (`linked_dirs`)' 'make it a directory in the commit, or remove `log` from `linked_dirs`'
no_link config/database.yml no 'the link to `shared/config/database.yml` (`linked_files`)' 'make it a directory in the commit, or remove `config/database.yml` from `linked_files`'
if [ -d "releases/$rel/REVISION" ]; then
  echo "\`REVISION\` is a directory in the deployed commit: the deploy writes that file; remove it from the commit and deploy again" >&2; exit 1
fi
printf '%s\n' "$sha" > "releases/$rel/REVISION"
if [ -e "releases/$rel"/log ] || [ -L "releases/$rel"/log ]; then rm -rf "releases/$rel"/log; fi
ln -s "$d/shared"/log "releases/$rel"/log
if [ -e "releases/$rel"/config/database.yml ] || [ -L "releases/$rel"/config/database.yml ]; then rm -rf "releases/$rel"/config/database.yml; fi
[ -d "releases/$rel"/config ] || mkdir -p "releases/$rel"/config
ln -s "$d/shared"/config/database.yml "releases/$rel"/config/database.yml
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
trap - EXIT
