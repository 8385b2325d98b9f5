# shellcheck shell=sh disable=SC2154 # its values are set by the header before it
# Removes the unfinished release of a failed deploy, unless it became current, with the record
# of its tree and its preparing marker. Expects: `d`, `rel`.
case "$(readlink "$d/current" 2>/dev/null)" in
  */releases/"$rel") echo "release $rel is current; kept" ;;
  *) rm -rf "$d/releases/$rel" "$d/.xtask-deploy/tree.$rel" ;;
esac
rm -f "$d/.xtask-deploy/preparing.$rel"
