# shellcheck shell=sh disable=SC2154 # its values are set by the script it is part of
# `switch_current`: switches `current` to `releases/$rel` atomically: `ln -s` to
# `releases/current`, then `mv -T`, as Capistrano 3. Expects: `rel`, the working directory `$d`.
switch_current() {
  if [ -e releases/current ] || [ -L releases/current ]; then rm -f releases/current; fi
  ln -s "$d/releases/$rel" releases/current
  mv -T releases/current current
}
