set -eu
d=/srv/app
rel=20261125041638
log_line='Branch main (at 0123456789abcdef0123456789abcdef01234567) deployed as release 20261125041638 by alice'
ours='token=t0k3n'
# shellcheck shell=sh disable=SC2154 # its values are set by the script it is part of
# `switch_current`: switches `current` to `releases/$rel` atomically: `ln -s` to
# `releases/current`, then `mv -T`, as Capistrano 3. Expects: `rel`, the working directory `$d`.
switch_current() {
  if [ -e releases/current ] || [ -L releases/current ]; then rm -f releases/current; fi
  ln -s "$d/releases/$rel" releases/current
  mv -T releases/current current
}
# shellcheck shell=sh disable=SC2154 # its values are set by the header before it
# Publishes the release: claims it (an interrupted deploy's clean-up removes only unclaimed
# ones), writes the `unconfirmed` marker (this deploy's token, the release, and the one
# `current` pointed at, which the keeper goes back to until the deploy is confirmed), switches
# `current`, says `switched <release>`, and logs it in `revisions.log`.
# Expects: `d`, `rel`, `ours` (`token=<token>`), `log_line`, `switch_current`.
cd "$d" || exit 1
marker="$d/.xtask-deploy/preparing.$rel"
if ! mv "$marker" "$marker.publishing" 2>/dev/null; then
  echo "release \`$rel\` is no longer being prepared (its deploy was interrupted and it was removed); current is unchanged" >&2
  exit 1
fi
previous=$(readlink current 2>/dev/null || true)
previous=${previous##*/}
printf '%s\n' "$ours" "release=$rel" "previous=$previous" > "$d/.xtask-deploy/unconfirmed"
switch_current
echo "switched $rel"
rm -f "$marker.publishing"
printf '%s\n' "$log_line" >> revisions.log
