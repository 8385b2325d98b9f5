//! The README's and the guide's tables and examples against the code: the exit codes, the JSON
//! example, the CI recipe's commands, every `cargo xtask` command they show, and their links.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use xtask_deploy::exit;

/// The README and the guide beside it (`docs/`), by path from the repository's root.
const PAGES: &[(&str, &str)] = &[
    ("README.md", include_str!("../../../README.md")),
    ("docs/README.md", include_str!("../../../docs/README.md")),
    ("docs/commands.md", include_str!("../../../docs/commands.md")),
    ("docs/configuration.md", include_str!("../../../docs/configuration.md")),
    ("docs/deploy.md", include_str!("../../../docs/deploy.md")),
    ("docs/build-output.md", include_str!("../../../docs/build-output.md")),
    ("docs/services.md", include_str!("../../../docs/services.md")),
    ("docs/health-checks.md", include_str!("../../../docs/health-checks.md")),
    ("docs/fleets.md", include_str!("../../../docs/fleets.md")),
    ("docs/ci.md", include_str!("../../../docs/ci.md")),
    ("docs/troubleshooting.md", include_str!("../../../docs/troubleshooting.md")),
    ("docs/performance.md", include_str!("../../../docs/performance.md")),
];

/// The one page that holds `<!-- marker`, from the marker on.
fn marked(marker: &str) -> &'static str {
    let needle = format!("<!-- {marker}");
    let mut holding = PAGES.iter().filter_map(|(_, text)| text.find(&needle).map(|at| &text[at..]));
    let found = holding.next().unwrap_or_else(|| panic!("no page marks `{marker}`"));
    assert!(holding.next().is_none(), "two pages mark `{marker}`");
    found
}

/// The text after `<!-- marker` up to the end of the block or table that follows it.
fn section(marker: &str) -> &'static str {
    let rest = marked(marker);
    let rest = &rest[rest.find('\n').unwrap() + 1..];
    let end = rest.find("\n\n").unwrap_or(rest.len());
    let block = &rest[..end];
    if block.starts_with("```") {
        let body = &rest[rest.find('\n').unwrap() + 1..];
        &body[..body.find("```").unwrap()]
    } else {
        block
    }
}

fn xtask(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xtask")).args(args).stdin(Stdio::null()).output().unwrap()
}

#[test]
fn the_exit_code_table_is_the_code() {
    let documented: BTreeSet<(u8, String)> = section("exit-codes")
        .lines()
        .skip(2)
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            (cells[1].parse().unwrap(), cells[2].trim_matches('`').to_string())
        })
        .collect();
    let actual: BTreeSet<(u8, String)> = [
        (exit::SUCCESS, "SUCCESS"),
        (exit::LOCAL, "LOCAL"),
        (exit::USAGE, "USAGE"),
        (exit::UP_TO_DATE, "UP_TO_DATE"),
        (exit::CONFIG, "CONFIG"),
        (exit::CONNECT, "CONNECT"),
        (exit::LOCKED, "LOCKED"),
        (exit::REMOTE, "REMOTE"),
        (exit::PARTIAL, "PARTIAL"),
        (exit::CHECK_FAILED, "CHECK_FAILED"),
        (exit::ROLLED_BACK, "ROLLED_BACK"),
        (exit::INTERRUPTED, "INTERRUPTED"),
        (exit::TERMINATED, "TERMINATED"),
    ]
    .into_iter()
    .map(|(code, name)| (code, name.to_string()))
    .collect();
    assert_eq!(documented, actual);
    assert_eq!(actual.iter().map(|(code, _)| code).collect::<BTreeSet<_>>().len(), actual.len(), "codes are distinct");
    // clap's own code for a wrong command line is the documented one.
    assert_eq!(xtask(&["deploy", "--no-such-flag"]).status.code(), Some(i32::from(exit::USAGE)));
}

#[test]
fn the_json_example_is_json_with_documented_events() {
    let documented: BTreeSet<String> = section("json-events")
        .lines()
        .skip(2)
        .map(|row| row.split('|').nth(1).unwrap().trim().trim_matches('`').to_string())
        .collect();
    let example = section("json-example");
    assert!(example.lines().count() >= 5);
    for line in example.lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}"));
        assert_eq!(value["schema"], xtask_deploy::report::JSON_SCHEMA);
        let event = value["event"].as_str().unwrap();
        assert!(documented.contains(event), "`{event}` is not in the events table");
    }
}

#[test]
fn the_ci_recipe_uses_real_flags_and_variables() {
    let recipe = section("ci-recipe");
    // It checks out the app alone: the dependency on this library resolves without a checkout
    // of it (the template's `git` dependency, checked in the adoption test).
    assert_eq!(recipe.matches("actions/checkout").count(), 1, "{recipe}");
    assert!(!recipe.contains("repository:"), "{recipe}");
    for name in [xtask_deploy::config::ENV_SSH_KEY, xtask_deploy::config::ENV_KNOWN_HOSTS] {
        assert!(recipe.contains(&format!("{name}:")), "the recipe does not set `{name}`");
    }
    let commands: Vec<&str> =
        recipe.lines().filter_map(|line| line.split_once("cargo xtask ").map(|(_, rest)| rest)).collect();
    assert!(commands.len() >= 2, "{commands:?}");
    for command in commands {
        let subcommand = command.split_whitespace().next().unwrap();
        let help = xtask(&[subcommand, "--help"]);
        assert!(help.status.success(), "`{subcommand}` is not a command");
        let help = String::from_utf8_lossy(&help.stdout).to_string();
        for flag in command.split_whitespace().filter(|word| word.starts_with("--")) {
            assert!(help.contains(flag), "`cargo xtask {subcommand}` has no `{flag}`:\n{help}");
        }
    }
}

#[test]
fn every_command_the_readme_and_the_guide_show_exists() {
    let mut shown = BTreeSet::new();
    for (_, text) in PAGES {
        for (at, _) in text.match_indices("cargo xtask ") {
            let rest = &text[at + "cargo xtask ".len()..];
            let word: String = rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '-').collect();
            if !word.is_empty() {
                shown.insert(word);
            }
        }
    }
    assert!(shown.len() >= 8, "{shown:?}");
    for command in shown {
        assert!(xtask(&[&command, "--help"]).status.success(), "a page shows `cargo xtask {command}`");
    }
}

/// The fenced block right after `<!-- marker -->`, with the indentation of its fence removed
/// (blocks inside a list item are indented).
fn code_block(marker: &str) -> String {
    let mut lines = marked(&format!("{marker} -->")).lines().skip(1);
    let fence = lines.next().unwrap_or_default();
    let indent = fence.len() - fence.trim_start().len();
    assert!(fence.trim_start().starts_with("```"), "a code block follows `{marker}`, not {fence:?}");
    let mut block = String::new();
    for line in lines.take_while(|line| line.trim() != "```") {
        block.push_str(line.get(indent..).unwrap_or(line.trim_start()));
        block.push('\n');
    }
    block
}

/// Runs `cargo` in `dir`, offline, with the shared target directory; panics with its output
/// when it fails.
fn cargo(dir: &Path, target: &Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "`cargo {}` in {} failed:\n{text}", args.join(" "), dir.display());
    text
}

/// A fresh repository as `cargo init` makes it, with this repository's Cargo.lock so that it
/// builds with the versions this repository is tested with (the git dependency of the template
/// is fetched from a `file://` URL: cargo is not offline).
fn fresh_repository(dir: &Path, name: &str) {
    fs::create_dir_all(dir).unwrap();
    let init = Command::new(env!("CARGO"))
        .args(["init", "--quiet", "--vcs", "none", "--name", name])
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(init.success());
    fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock"), dir.join("Cargo.lock")).unwrap();
}

/// `xtask/Cargo.toml` as the README writes it: a `git` dependency pinned to a commit, whose URL
/// and commit are here a `file://` URL of `clone` (a clone of this repository: nothing else is
/// reachable here) and its HEAD.
fn xtask_manifest(clone: &Path) -> String {
    let manifest = code_block("template: xtask/Cargo.toml");
    let line =
        manifest.lines().find(|line| line.starts_with("xtask-deploy")).expect("the template depends on xtask-deploy");
    assert!(line.contains(" git = \"") && line.contains(" rev = \""), "a git dependency on a commit: {line}");
    let head = Command::new("git").arg("-C").arg(clone).args(["rev-parse", "HEAD"]).output().unwrap();
    let head = String::from_utf8(head.stdout).unwrap();
    let url = format!("file://{}", clone.display());
    manifest.replace(line, &format!("xtask-deploy = {{ git = {url:?}, rev = {:?} }}", head.trim()))
}

/// A clone of this repository (its committed HEAD) in `dir`, as a remote a git dependency can
/// name.
fn clone_of_this_repository(dir: &Path) -> std::path::PathBuf {
    let library = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let clone = dir.join("xtask-deploy-remote");
    let cloned = Command::new("git").args(["clone", "-q", "--no-local"]).arg(library).arg(&clone).status().unwrap();
    assert!(cloned.success());
    clone
}

/// The deploy commands every adopter's xtask has.
const DEPLOY_COMMANDS: [&str; 6] = ["deploy-setup", "deploy", "rollback", "releases", "unlock", "deploy-check"];

/// Every `--help` of `binary`'s `commands` succeeds and describes the command.
fn helps(binary: &Path, commands: &[&str]) {
    for command in commands {
        let output = Command::new(binary).args([command, "--help"]).stdin(Stdio::null()).output().unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "`{command} --help` failed: {}", String::from_utf8_lossy(&output.stderr));
        assert!(text.contains(&format!("cargo xtask {command}")), "`{command} --help` names its usage:\n{text}");
    }
}

/// "Add it to your repository", followed literally in a fresh repository with no xtask, then the
/// embed example as another repository's existing xtask: both build against this library, every
/// command's `--help` runs, and the adopter's `cargo test --workspace` passes.
#[test]
fn the_adoption_steps_work_in_a_fresh_repository() {
    // Outside this repository, so that cargo sees no workspace around them.
    let repos = tempfile::tempdir().unwrap();
    // Kept between runs: a rebuild after a change of the library is incremental.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("adopter-target");

    // The library is reached only through its git URL: nothing of it beside the repositories.
    let remote = tempfile::tempdir().unwrap();
    let clone = clone_of_this_repository(remote.path());
    let fresh = repos.path().join("fresh");
    fresh_repository(&fresh, "fresh-app");
    assert!(!fresh.join("../../xtask-deploy").exists() && !fresh.join("../xtask-deploy").exists());
    fs::create_dir_all(fresh.join("xtask/src")).unwrap();
    fs::create_dir_all(fresh.join(".cargo")).unwrap();
    fs::write(fresh.join("xtask/Cargo.toml"), xtask_manifest(&clone)).unwrap();
    let main = code_block("template: xtask/src/main.rs");
    assert!(main.lines().count() <= 40, "the template xtask is at most 40 lines:\n{main}");
    fs::write(fresh.join("xtask/src/main.rs"), main).unwrap();
    fs::write(fresh.join(".cargo/config.toml"), code_block("template: .cargo/config.toml")).unwrap();
    let manifest = fs::read_to_string(fresh.join("Cargo.toml")).unwrap();
    fs::write(fresh.join("Cargo.toml"), format!("{manifest}\n[workspace]\nmembers = [\"xtask\"]\n")).unwrap();
    // Through the alias, as a user types it.
    let help = cargo(&fresh, &target, &["xtask", "--help"]);
    assert!(help.starts_with("Usage: cargo xtask"), "no text of the library's leads the adopter's help:\n{help}");
    for command in DEPLOY_COMMANDS {
        assert!(help.contains(command), "`cargo xtask --help` lists {command}:\n{help}");
    }
    assert!(!help.contains("demo") && !help.contains("bench"), "an adopter's xtask has no demo or bench:\n{help}");
    helps(&target.join("debug/xtask"), &DEPLOY_COMMANDS);
    cargo(&fresh, &target, &["test", "--workspace", "--quiet"]);

    let existing = repos.path().join("existing");
    fresh_repository(&existing, "existing-app");
    fs::create_dir_all(existing.join("xtask/src")).unwrap();
    fs::write(existing.join("xtask/Cargo.toml"), xtask_manifest(&clone)).unwrap();
    fs::write(existing.join("xtask/src/main.rs"), code_block("embed-example")).unwrap();
    let manifest = fs::read_to_string(existing.join("Cargo.toml")).unwrap();
    fs::write(existing.join("Cargo.toml"), format!("{manifest}\n[workspace]\nmembers = [\"xtask\"]\n")).unwrap();
    cargo(&existing, &target, &["build", "--quiet", "--package", "xtask"]);
    let xtask = target.join("debug/xtask");
    helps(&xtask, &["dist"]);
    helps(&xtask, &DEPLOY_COMMANDS);
    let dist = Command::new(&xtask).args(["dist", "--out", "here"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&dist.stdout), "packaging into here\n", "the adopter's own command runs");
    // A deploy command runs through the library, with its exit code: no manifest table here.
    let deploy = Command::new(&xtask).args(["deploy-check", "--json"]).current_dir(&existing).output().unwrap();
    let stdout = String::from_utf8_lossy(&deploy.stdout);
    assert_eq!(
        deploy.status.code(),
        Some(i32::from(exit::CONFIG)),
        "{stdout}{}",
        String::from_utf8_lossy(&deploy.stderr)
    );
    assert!(
        stdout.lines().last().unwrap_or_default().contains("\"exit\""),
        "the JSON exit line ends stdout:\n{stdout}"
    );
    cargo(&existing, &target, &["test", "--workspace", "--quiet"]);
}

/// GitHub's anchor for a heading: lower case, spaces as `-`, punctuation other than `-` and `_`
/// dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a page's headings (outside code blocks).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut found = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            found.insert(anchor(line.trim_start_matches('#')));
        }
    }
    found
}

#[test]
fn every_page_of_the_guide_is_checked_and_every_link_between_pages_lands() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let on_disk: BTreeSet<String> = fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|entry| format!("docs/{}", entry.unwrap().file_name().to_string_lossy()))
        .chain(["README.md".to_string()])
        .collect();
    let checked: BTreeSet<String> = PAGES.iter().map(|(path, _)| path.to_string()).collect();
    assert_eq!(on_disk, checked, "a page of the guide that these tests do not read");
    let mut links = 0;
    for (path, text) in PAGES {
        let dir = Path::new(path).parent().unwrap();
        for (at, _) in text.match_indices("](") {
            let target = &text[at + 2..];
            let target = &target[..target.find(')').unwrap()];
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            links += 1;
            let (file, fragment) = target.split_once('#').unwrap_or((target, ""));
            let (page, page_text) = if file.is_empty() {
                (path.to_string(), text.to_string())
            } else {
                let joined = dir.join(file);
                let page = joined.components().fold(std::path::PathBuf::new(), |mut page, part| {
                    match part {
                        std::path::Component::ParentDir => {
                            page.pop();
                        }
                        other => page.push(other),
                    }
                    page
                });
                let text = fs::read_to_string(root.join(&page))
                    .unwrap_or_else(|err| panic!("{path} links to `{target}`, which is not there: {err}"));
                (page.display().to_string(), text)
            };
            if !fragment.is_empty() {
                assert!(
                    anchors(&page_text).contains(fragment),
                    "{path} links to `{target}`: {page} has no such heading"
                );
            }
        }
    }
    assert!(links >= 30, "{links} links");
}
