//! The scripts of a release's life on a server: prepare (extract the pushed commit, with no path
//! written through a link of the tree), the hooks, publish (switch `current`), discard; and the
//! read-only ones, inspect (`releases`) and deploy-check.

use crate::config::{Cache, Config, Reuse};
use crate::plan::{Release, SubmoduleRelease};
use crate::shell::{quote, RemoteScript};

use super::layout::platform_probe;
use super::{LOCK_HELPERS, REPORT, REQUIRE, STATE};
use super::STATE_DIR;

/// Makes `releases/<name>` from the pushed commit (never from a branch name): its files (by
/// `git archive`, or through `shared/cached-copy`), the submodules', `REVISION`, and the links
/// to `shared/`. A missing linked file is refused before anything is made; if anything fails,
/// the unfinished release is removed. With `reuse = "link"` (and `cache = "archive"`), the
/// files unchanged since the current release are its own, hard-linked (see `REUSE`), every
/// file is read-only, and the release's tree is recorded for the next one.
pub fn prepare_script(config: &Config, release: &Release, submodules: &[SubmoduleRelease]) -> RemoteScript {
    let mut checks = String::new();
    for file in &config.linked_files {
        // The quoted name goes outside the double quotes: inside them its single quotes would be
        // literal, and a `$(...)` in it would run.
        checks.push_str(&format!("[ -e \"$d/shared\"/{file} ] || missing=\"$missing \"{file}\n", file = quote(file)));
    }
    // The tree's `.gitattributes` must not drop or rewrite build output (`export-ignore`,
    // `export-subst`, line endings, filters): `info/attributes` comes first and unsets them.
    let attributes = match release.release_commit {
        Some(_) => config
            .artifacts
            .iter()
            .flat_map(|path| {
                // A directory that is `export-ignore` hides what is below it: its parents too.
                let parents = path.match_indices('/').map(|(at, _)| (format!("/{}", &path[..at]), "-export-ignore"));
                parents.chain([(format!("/{path}"), ARTIFACT_ATTRIBUTES), (format!("/{path}/**"), ARTIFACT_ATTRIBUTES)])
            })
            .map(|(pattern, attributes)| {
                let plain = !pattern.contains(|c: char| c.is_whitespace() || c == '"' || c == '\\');
                let pattern = if plain {
                    pattern.to_string()
                } else {
                    format!("\"{}\"", pattern.replace('\\', "\\\\").replace('"', "\\\""))
                };
                quote(&format!("{pattern} {attributes}"))
            })
            .collect::<Vec<String>>()
            .join(" "),
        None => String::new(),
    };
    let write_attributes = |git_dir: &str| match attributes.is_empty() {
        true => String::new(),
        false => format!("mkdir -p {git_dir}/info && printf '%s\\n' {attributes} > {git_dir}/info/attributes\n"),
    };
    const ARCHIVE: &str = r#"{ git --git-dir=repo archive --format=tar "$tree" || echo "git archive failed" > "$marker"; } | tar -x -f - -C "releases/$rel" || echo "tar failed" >> "$marker""#;
    // `reuse = "link"` makes the releases of `cache = "archive"`: each tree is recorded, and
    // the files of every release are read-only (see `REUSE`).
    let link = config.reuse == Reuse::Link && config.cache == Cache::Archive;
    let extract = match config.cache {
        // With submodules, the release is extracted whole (a submodule's files are not reused).
        Cache::Archive if link && submodules.is_empty() => {
            // A linked path is replaced by a link to `shared/`: never reused (any path it
            // begins is left to the extraction, which costs only time).
            let linked: String = config
                .linked_dirs
                .iter()
                .chain(&config.linked_files)
                .map(|path| format!(" {}", quote(path)))
                .collect();
            write_attributes("repo")
                + &format!(
                    "{ATTRIBUTES}\n{REUSE}\n\
                     if ! reuse{linked} 2>/dev/null; then\n  rm -rf \"releases/$rel\" \"$work\"\n  mkdir \"releases/$rel\"\n  {ARCHIVE}\nfi\n\
                     rm -rf \"$work\""
                )
        }
        Cache::Archive if link => write_attributes("repo") + ATTRIBUTES + "\n" + ARCHIVE,
        Cache::Archive => write_attributes("repo") + ARCHIVE,
        Cache::CachedCopy => {
            r#"cc="$d/shared/cached-copy"
if [ ! -d "$cc/.git" ]; then git clone --quiet --no-checkout "$d/repo" "$cc"; fi
# Its history is the code's, as private as `repo/`; the releases are copied out of it.
chmod go= "$cc"
"#
            .to_string()
                + &write_attributes("\"$cc/.git\"")
                + r#"git -C "$cc" fetch --quiet "$d/repo" "+refs/heads/*:refs/remotes/xtask-deploy/*" "+refs/xtask-deploy/*:refs/remotes/xtask-deploy-build/*"
git -C "$cc" checkout --quiet --force --detach "$tree"
git -C "$cc" clean --quiet -d -f -f -x
{ tar -C "$cc" --exclude=./.git -cf - . || echo "copy failed" > "$marker"; } | tar -x -f - -C "releases/$rel" || echo "tar failed" >> "$marker""#
        }
    };
    let mut extract_submodules = String::new();
    for submodule in submodules {
        // A well-formed tree has a directory there; a link (a malformed tree with the path
        // twice) would take the submodule's files wherever it points.
        let what = format!("submodule `{}`", submodule.path);
        let fix = "the deployed tree is malformed (`git fsck --strict` names the problem): fix the commit";
        extract_submodules.push_str(&format!(
            "no_link {path} yes {what} {fix}\n\
             mkdir -p \"releases/$rel\"/{path}\n\
             {{ git --git-dir={repo} archive --format=tar {commit} || echo failed > \"$marker\"; }} \
             | tar -x -f - -C \"releases/$rel\"/{path} || echo failed >> \"$marker\"\n",
            path = quote(&submodule.path),
            what = quote(&what),
            fix = quote(fix),
            repo = quote(&submodule.repo),
            commit = quote(&submodule.commit),
        ));
    }
    // No path the deploy writes passes through a link of the tree. A link at a linked path
    // itself is fine: it is removed (not followed) and replaced.
    let mut no_links = String::new();
    for (key, paths) in [("linked_dirs", &config.linked_dirs), ("linked_files", &config.linked_files)] {
        for path in paths {
            let what = format!("the link to `shared/{path}` (`{key}`)");
            let fix = format!("make it a directory in the commit, or remove `{path}` from `{key}`");
            no_links.push_str(&format!("no_link {} no {} {}\n", quote(path), quote(&what), quote(&fix)));
        }
    }
    // Each command only when needed: a process started per linked path adds up.
    let mut links = String::new();
    for path in config.linked_dirs.iter().chain(&config.linked_files) {
        let parent = match path.rsplit_once('/') {
            Some((parent, _)) => {
                format!("[ -d \"releases/$rel\"/{0} ] || mkdir -p \"releases/$rel\"/{0}\n", quote(parent))
            }
            None => String::new(),
        };
        links.push_str(&format!(
            "if [ -e \"releases/$rel\"/{path} ] || [ -L \"releases/$rel\"/{path} ]; then rm -rf \"releases/$rel\"/{path}; fi\n\
             {parent}ln -s \"$d/shared\"/{path} \"releases/$rel\"/{path}\n",
            path = quote(path)
        ));
    }
    let text = format!(
        r#"set -eu
d={deploy_to}
rel={name}
sha={sha}
tree={tree}
cd "$d"
if [ -e "releases/$rel" ]; then echo "release \`$rel\` already exists in \`$d/releases\`" >&2; exit 1; fi
missing=""
{checks}if [ -n "$missing" ]; then
  echo "linked file(s) missing in \`$d/shared\`:$missing: create them on the server before deploying" >&2; exit 1
fi
marker="$d/{STATE_DIR}/preparing.$rel"
# The marker tells an interrupted deploy's clean-up that this release is unfinished: written
# before the release's directory exists, so that a deploy killed at any moment leaves no
# release without it. Until the release is made, an extraction that fails writes into it.
: > "$marker"
{trap}
mkdir "releases/$rel"
{NO_LINK}
{extract}
{extract_submodules}if [ -s "$marker" ]; then
  if ! git --git-dir=repo cat-file -e "$tree^{{commit}}" 2>/dev/null; then
    echo "commit \`$tree\` is not in \`$d/repo\`: the push did not arrive" >&2; exit 1
  fi
  echo "could not extract \`$tree\` into \`releases/$rel\`" >&2; exit 1
fi
no_link REVISION yes '`REVISION`' 'remove `REVISION` from the commit (the deploy writes that file)'
{no_links}if [ -d "releases/$rel/REVISION" ]; then
  echo "\`REVISION\` is a directory in the deployed commit: the deploy writes that file; remove it from the commit and deploy again" >&2; exit 1
fi
printf '%s\n' "$sha" > "releases/$rel/REVISION"
{links}{seal}trap - EXIT
"#,
        deploy_to = quote(&config.deploy_to),
        name = quote(&release.name),
        sha = quote(&release.sha),
        tree = quote(release.files_commit()),
        trap = match link {
            true => RECORD,
            false => r#"trap 'rm -rf "releases/$rel" "$marker"' EXIT"#,
        },
        seal = match link {
            true => SEAL,
            false => "",
        },
    );
    RemoteScript { name: "prepare", text }
}

/// For `reuse = "link"`, where the release's tree is recorded (`$record`) and where its lists
/// are made while it is made (`$work`): both go if it fails, as the release does. The records
/// of releases that are gone (pruned, discarded, removed by hand) go too.
const RECORD: &str = concat!(
    r#"record="$d/"#,
    state_dir!(),
    r#"/tree.$rel"
work="$d/"#,
    state_dir!(),
    r#"/reuse.$rel"
trap 'rm -rf "releases/$rel" "$marker" "$record" "$work"' EXIT
for r in "${record%/*}"/tree.*; do
  if [ -f "$r" ] && [ ! -d "releases/${r##*/tree.}" ]; then rm -f "$r"; fi
done"#
);

/// For `reuse = "link"`, after the release is made: its files become read-only (those already
/// read-only are left alone: a file shared with an older release is never touched), so that
/// an app writing into one in place fails instead of changing every release that shares it;
/// then it is recorded, for the next release to reuse its files: its tree, `$attributes`, and
/// the inode of each of its files. One `find` does both; where it fails (a `find` without
/// `-printf`, not GNU's) there is no record, so nothing is reused, and a plain `find` makes the
/// files read-only. The record's time and the inodes tell which of its files were written or
/// replaced since (`REUSE`). Its directories stay writable.
const SEAL: &str = include_str!("sh/seal.sh");

/// What `repo/info/attributes` holds, as `$attributes`: a release reuses the files of one made
/// with the same (they may change how a file is written).
const ATTRIBUTES: &str =
    "if [ -f repo/info/attributes ]; then attributes=$(cksum < repo/info/attributes); else attributes=none; fi";

/// `reuse PATH...`, for the prepare script with `reuse = "link"`: makes `releases/$rel` from
/// the release `current` points at, when that one was made so (its record, `tree.<name>` in the
/// state directory: its commit, still in `repo/`, and its files' inodes): each file unchanged
/// since (same path, mode and blob) becomes a hard link of its own, and only the rest is
/// extracted from `$tree`. No path that a PATH (a linked path) begins is reused.
///
/// Returns 1 whenever anything is off, and the caller extracts the whole tree instead: no such
/// release or record, its commit gone, a path with a newline, a `.gitattributes` changed or
/// `export-subst`/`export-ignore` in play, most of the tree changed, a tool missing or failing
/// (a `cp` without `--parents`, a `find` without `-printf`), and a file of the previous release
/// missing, replaced since it was made (another inode than the record's, which also tells a
/// directory on the way to it replaced by a link), written since (its time after the
/// record's), or of another type or mode. `$work` holds the lists, one line a path.
///
/// The steps: the two commits' listings (`ls-tree -z`: a line in them is a path with a newline),
/// as lines; an `awk` makes `all` (the paths reused: the same line, mode, blob and path, in
/// both; a file or a link; neither `REVISION` nor under a PATH; each from `./`, so that none
/// reads as an option), `expect` (their types: `f`, `x` executable, `l`) and `extract` (the
/// others), and fails when a `.gitattributes` was added, changed or removed, or most of the tree
/// is to be extracted. Then one `find -printf` prints each reused file's inode, type, mode and
/// time in the previous release (and the record's time, first), and an `awk` checks them against
/// the record and `expect`; then `cp -l --parents` links them, and `git archive` of the paths to
/// extract (one archive per invocation, as `xargs` may split the paths) writes the rest. The
/// lists go to `xargs -d '\n'` (GNU's, as `cp --parents` is: elsewhere the tree is extracted
/// whole), which takes every other character as it is. The script's text travels on
/// every deploy: its comments are here.
const REUSE: &str = include_str!("sh/reuse.sh");

/// `no_link PATH LAST WHAT FIX`, for the prepare script: stops it when a directory on the way
/// to PATH in the release (and PATH itself, when LAST is `yes`) is a symbolic link. Only the
/// deployed tree can have put one there, and writing WHAT through it would land outside the
/// release: in `shared/`, another release, or anywhere the deploy user can write. The message
/// names the link, where it points, and FIX. Shell builtins only, but for the message.
pub(super) const NO_LINK: &str = include_str!("sh/no_link.sh");

/// Runs a remote hook command with `sh` in the release directory (in `deploy_to` while the
/// release does not exist yet), with `DEPLOY_TO`, `RELEASE`, `RELEASE_PATH` and `REVISION` set.
/// Its stdout and stderr are its own: in a batch, each step's output is kept apart (see
/// [`batch_script`](super::batch_script)), so what a hook prints is shown as its own and never read as what our
/// scripts print.
pub fn hook_script(config: &Config, release: &Release, phase: &'static str, command: &str) -> RemoteScript {
    let header = crate::shell::header(&[
        ("d", &config.deploy_to),
        ("rel", &release.name),
        ("sha", &release.sha),
        ("hook", command),
    ]);
    RemoteScript { name: phase, text: [header.as_str(), HOOK].concat() }
}

/// A remote hook's shell (see [`hook_script`]).
const HOOK: &str = include_str!("sh/hook.sh");

/// Removes the unfinished release of a failed deploy, unless it became current.
pub fn discard_script(config: &Config, release: &Release) -> RemoteScript {
    let header = crate::shell::header(&[("d", &config.deploy_to), ("rel", &release.name)]);
    RemoteScript { name: "discard", text: ["set -u\n", &header, DISCARD].concat() }
}

/// The discard's shell (see [`discard_script`]).
const DISCARD: &str = include_str!("sh/discard.sh");

/// Switches `current` to the release atomically (`ln -s` to `releases/current`, then `mv -T`,
/// as Capistrano 3) and appends to `revisions.log`; it prints `switched <release>` once
/// `current` moved. Pruning is the keeper's, once the deploy is confirmed (see
/// `keeper::confirm_function`).
///
/// Before it switches, it writes the [`UNCONFIRMED`](crate::plan::confirm::UNCONFIRMED) marker with
/// this deploy's `token` and the release `current` pointed at: until the deployer confirms, the
/// lock keeper goes back to that release if the deployer is lost.
pub fn publish_script(config: &Config, release: &Release, token: &str) -> RemoteScript {
    let header = crate::shell::header(&[
        ("d", &config.deploy_to),
        ("rel", &release.name),
        ("log_line", &crate::plan::revision_log_line(release)),
    ]);
    let ours = super::keeper::ours(token);
    RemoteScript { name: "publish", text: ["set -eu\n", &header, &ours, SWITCH_CURRENT, PUBLISH].concat() }
}

/// The publish's shell (see [`publish_script`]).
const PUBLISH: &str = include_str!("sh/publish.sh");

/// Reports the server's state without changing anything, for `releases`: also
/// `unconfirmed <release>` when a deploy switched to `release` and has not confirmed it (the
/// marker [`UNCONFIRMED`](crate::plan::confirm::UNCONFIRMED)), and `subject <sha> <subject>` for each
/// release's commit that `repo/` has.
pub fn inspect_script(config: &Config) -> RemoteScript {
    let text = [
        "set -u\n",
        &crate::shell::header(&[("d", &config.deploy_to)]),
        STATE,
        REQUIRE,
        LOCK_HELPERS,
        REPORT,
        INSPECT,
    ]
    .concat();
    RemoteScript { name: "inspect", text }
}

/// The end of [`inspect_script`].
const INSPECT: &str = include_str!("sh/inspect.sh");

/// Gathers what `deploy-check` judges, changing nothing (a probe directory is made and removed
/// at once to learn whether `deploy_to`, or its nearest existing parent, is writable). Prints
/// `writable yes|no <dir>`, `git [<version>]`, `unset <part>` for each part setup makes that is
/// missing, `missing-file <index>` and `missing-dir <index>` for linked paths absent from
/// `shared/`, the lock's `holder`/`stale` lines, `disk <free KiB> <current release KiB>`, and
/// the current release as `current <path>` and `release <name> <sha>` (for the health check).
pub fn check_script(config: &Config) -> RemoteScript {
    let files = config.linked_files.iter().flat_map(|file| ["file", file.as_str()]);
    let linked: Vec<&str> = files.chain(config.linked_dirs.iter().flat_map(|dir| ["dir", dir.as_str()])).collect();
    let text = [
        "set -u\n",
        &crate::shell::header(&[("d", &config.deploy_to)]),
        &crate::shell::arguments(&linked),
        STATE,
        LOCK_HELPERS,
        REPORT,
        &platform_probe(config),
        CHECK,
    ]
    .concat();
    RemoteScript { name: "deploy-check", text }
}

/// What `deploy-check` gathers (see [`check_script`]), with its header of what it expects.
const CHECK: &str = include_str!("sh/check.sh");

/// The attributes `info/attributes` gives build output, so that `git archive` and a checkout
/// write it byte for byte, whatever the tree's `.gitattributes` say.
pub(super) const ARTIFACT_ATTRIBUTES: &str = "-export-ignore -export-subst -text -ident -filter -working-tree-encoding";

/// Points `current` at `releases/$rel` atomically, from inside `$d`.
pub(in crate::plan) const SWITCH_CURRENT: &str = include_str!("sh/switch_current.sh");
