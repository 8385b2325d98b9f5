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
