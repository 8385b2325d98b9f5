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
# shellcheck shell=sh disable=SC2154,SC2097,SC2098,SC2016 # values set by the script it is part of; awk and sh -c read the ones passed in their environment
# `reuse PATH...`, for the prepare script with `reuse = "link"`: makes `releases/$rel` from the
# release `current` points at, hard-linking each file unchanged since, and extracting only the
# rest from `$tree` (see `REUSE` in release.rs for every case where it returns 1, and the caller
# extracts the whole tree instead). No path that a PATH (a linked path) begins is reused.
# Expects: `d` (the working directory), `rel`, `tree`, `record`, `work`, `attributes`. Sets:
# `prev`, `stamp`, `prev_tree`, `prev_attributes`, `newlines`, `since`.
reuse() {
  prev=$(readlink current) || return 1
  prev=${prev##*/}
  case "$prev" in ''|*[!0-9]*) return 1 ;; esac
  stamp="${record%/*}/tree.$prev"
  [ -d "releases/$prev" ] && [ -f "$stamp" ] || return 1
  { read -r prev_tree && read -r prev_attributes; } < "$stamp" || return 1
  [ "$prev_attributes" = "$attributes" ] || return 1
  case "$prev_tree" in ''|*[!0-9a-f]*) return 1 ;; esac
  mkdir "$work" || return 1
  git --git-dir=repo ls-tree -r -z --full-tree "$tree" > "$work/new.z" || return 1
  git --git-dir=repo ls-tree -r -z --full-tree "$prev_tree" > "$work/old.z" || return 1
  newlines=$(cat "$work/new.z" "$work/old.z" | wc -l) && [ $((newlines)) -eq 0 ] || return 1
  tr '\0' '\n' < "$work/new.z" > "$work/new" && tr '\0' '\n' < "$work/old.z" > "$work/old" || return 1
  printf '%s\n' "$@" > "$work/skip"
  LC_ALL=C work="$work" awk '
    FILENAME ~ /\/skip$/ { if ($0 != "") skip[n++] = $0; next }
    FILENAME ~ /\/old$/ { old[$0] = 1; gone[substr($0, index($0, "\t") + 1)] = 1; next }
    {
      at = index($0, "\t"); path = substr($0, at + 1); mode = substr($0, 1, 7); total++
      delete gone[path]
      if (path ~ /(^|\/)\.gitattributes$/) { attributes = 1; if (!($0 in old)) bad = 1 }
      type = mode == "100644 " ? "f" : mode == "100755 " ? "x" : mode == "120000 " ? "l" : ""
      same = at > 0 && ($0 in old) && type != "" && path != "REVISION"
      for (i = 0; same && i < n; i++) if (substr(path, 1, length(skip[i])) == skip[i]) same = 0
      if (same) { print "./" path > (ENVIRON["work"] "/all"); print type " ./" path > (ENVIRON["work"] "/expect") }
      else { print path > (ENVIRON["work"] "/extract"); changed++ }
    }
    END {
      for (path in gone) if (path ~ /(^|\/)\.gitattributes$/) bad = 1
      if (attributes) print "" > (ENVIRON["work"] "/attributes")
      exit bad || changed * 2 > total || changed == total
    }' "$work/skip" "$work/old" "$work/new" || return 1
  if [ -f "$work/attributes" ]; then
    git --git-dir=repo grep -q -F -e export-subst -e export-ignore "$tree" -- .gitattributes '*/.gitattributes'
    [ $? = 1 ] || return 1
  fi
  if [ -f repo/info/attributes ]; then
    grep -q -E '(^|[[:space:]])export-(subst|ignore)([[:space:]=]|$)' repo/info/attributes; [ $? = 1 ] || return 1
  fi
  (cd "releases/$prev" && xargs -d '\n' sh -c 'exec find "$@" -prune -printf "%i %y%m %T@ %p\n"' sh "$stamp" < "$work/all") > "$work/now" || return 1
  LC_ALL=C stamp="$stamp" awk '
    FILENAME ~ /\/tree\.[0-9]*$/ { if (FNR > 2) inode[substr($0, index($0, " ") + 1)] = $1; next }
    FILENAME ~ /\/expect$/ { expect[substr($0, 3)] = substr($0, 1, 1); wanted++; next }
    {
      path = $0; for (i = 0; i < 3; i++) path = substr(path, index(path, " ") + 1)
      if (path == ENVIRON["stamp"]) { since = $3; next }
      kind = substr($2, 1, 1) == "l" ? "l" : substr($2, 1, 1) != "f" ? "?" : substr($2, 2, 1) ~ /[1357]/ ? "x" : "f"
      if (since == "" || inode[path] != $1 || expect[path] != kind || $3 + 0 > since + 0) bad = 1
      found++
    }
    END { exit bad || found != wanted }' "$stamp" "$work/expect" "$work/now" || return 1
  (cd "releases/$prev" && xargs -d '\n' cp -P -l --parents -t "$d/releases/$rel" -- < "$work/all") || return 1
  if [ -s "$work/extract" ]; then
    tree="$tree" dest="releases/$rel" failed="$work/failed" xargs -d '\n' sh -c \
      '{ git --git-dir=repo --literal-pathspecs archive --format=tar "$tree" -- "$@" || echo x > "$failed"; } | tar -x -f - -C "$dest" || echo x > "$failed"' \
      sh < "$work/extract" || return 1
    [ ! -e "$work/failed" ] || return 1
  fi
}

if ! reuse log config/database.yml 2>/dev/null; then
  rm -rf "releases/$rel" "$work"
  mkdir "releases/$rel"
  { git --git-dir=repo archive --format=tar "$tree" || echo "git archive failed" > "$marker"; } | tar -x -f - -C "releases/$rel" || echo "tar failed" >> "$marker"
fi
rm -rf "$work"
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
