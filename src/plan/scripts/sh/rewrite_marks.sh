# shellcheck shell=sh disable=SC2154 # its values are set by the script it is part of
# `rewrite_marks`: rewrites `$state/bad` keeping each mark once, only of releases that exist,
# and not the mark of `$unmark` (printing `unmarked <name>` when it had one).
# Expects: `d`, `state`, `unmark`. Sets: `kept`, `cleared`, `name`.
rewrite_marks() {
  if [ -f "$state/bad" ]; then
    kept=" "
    cleared=""
    true > "$state/bad.new"
    while IFS= read -r name || [ -n "$name" ]; do
      case "$name" in ''|*[!0-9]*) continue ;; esac
      if [ "$name" = "$unmark" ]; then cleared=$name; continue; fi
      [ -d "$d/releases/$name" ] || continue
      case "$kept" in *" $name "*) continue ;; esac
      kept="$kept$name "
      printf '%s\n' "$name" >> "$state/bad.new"
    done < "$state/bad"
    mv -f "$state/bad.new" "$state/bad"
    if [ -n "$cleared" ]; then echo "unmarked $cleared"; fi
  fi
}
