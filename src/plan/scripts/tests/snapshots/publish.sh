set -eu
d=/srv/app
rel=20261125041638
cd "$d"
# Claim the release: an interrupted deploy's clean-up removes only unclaimed ones.
marker="$d/.xtask-deploy/preparing.$rel"
if ! mv "$marker" "$marker.publishing" 2>/dev/null; then
  echo "release \`$rel\` is no longer being prepared (its deploy was interrupted and it was removed); current is unchanged" >&2
  exit 1
fi
previous=$(readlink current 2>/dev/null || true)
previous=${previous##*/}
printf '%s\n' 'token=t0k3n' 'release=20261125041638' "previous=$previous" > "$d/.xtask-deploy/unconfirmed"
if [ -e releases/current ] || [ -L releases/current ]; then rm -f releases/current; fi
ln -s "$d/releases/$rel" releases/current
mv -T releases/current current
echo "switched $rel"
rm -f "$marker.publishing"
printf '%s\n' 'Branch main (at 0123456789abcdef0123456789abcdef01234567) deployed as release 20261125041638 by alice' >> revisions.log
