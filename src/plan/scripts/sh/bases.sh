# shellcheck shell=sh disable=SC2154 # its values are set by the header the deployer writes
# Sends what a deployer that lacks the server's build output needs to make its own as deltas
# against it (a fresh CI clone has none of it): the release commit `tip` (still the server's
# `refs/xtask-deploy/release`), every tree of it (so that unchanged files are not sent again),
# and the blobs under the artifact paths that the deployer does not hold already.
# Expects: `d`, `tip`, `have` (the blob ids of the deployer's release commit under those paths,
# space-separated), and the artifact paths as positional parameters.
# Prints a pack on stdout; exits 3, printing nothing there and why on stderr, when the tip
# moved or is gone.
cd "$d/repo" || exit 3
now=$(git rev-parse -q --verify 'refs/xtask-deploy/release^{commit}') || { echo "it has no release commit" >&2; exit 3; }
[ "$now" = "$tip" ] || { echo "its newest release commit is $now now, not $tip" >&2; exit 3; }
{
  echo "$tip"
  git rev-parse "$tip^{tree}"
  git ls-tree -r -d "$tip" | while read -r _ _ id _; do echo "$id"; done
  # The path after each blob lets pack-objects find like files to make deltas between.
  git --literal-pathspecs ls-tree -r "$tip" -- "$@" | while read -r _ type id path; do
    [ "$type" = blob ] || continue
    case " $have " in *" $id "*) continue ;; esac
    printf '%s %s\n' "$id" "$path"
  done
} | git pack-objects --stdout -q
