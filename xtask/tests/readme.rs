//! The README's tables and examples against the code: the exit codes, the JSON example, the CI
//! recipe's commands and every `cargo xtask` command it shows.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use xtask_deploy::exit;

const README: &str = include_str!("../../README.md");

/// The text after `<!-- marker` up to the end of the block or table that follows it.
fn section(marker: &str) -> &'static str {
    let start = README.find(&format!("<!-- {marker}")).unwrap_or_else(|| panic!("README marks `{marker}`"));
    let rest = &README[start..];
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
fn every_command_the_readme_shows_exists() {
    let mut shown = BTreeSet::new();
    for (_, rest) in README.match_indices("cargo xtask ").map(|(at, _)| README.split_at(at + "cargo xtask ".len())) {
        let word: String = rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '-').collect();
        if !word.is_empty() {
            shown.insert(word);
        }
    }
    assert!(shown.len() >= 8, "{shown:?}");
    for command in shown {
        assert!(xtask(&[&command, "--help"]).status.success(), "the README shows `cargo xtask {command}`");
    }
}
