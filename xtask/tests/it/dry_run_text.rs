//! The text `deploy --dry-run` prints, as snapshots (`expect-test`): given a server and an app,
//! when I ask for a dry run (before setup, with a deploy to make, with the lock held and a server
//! down), then it prints what `snapshots/dry_run_*.txt` holds, once what varies from run to run
//! is replaced by placeholders (see [`placeholders`]). A change to what the dry run says shows
//! as a diff of those files in review. `UPDATE_EXPECT=1 cargo test -p xtask --test it
//! dry_run_text` rewrites them.

use expect_test::expect_file;

use crate::cli_support::stderr_of;
use crate::lifecycle::hold_lock;
use crate::support::World;

/// What the world's `deploy --dry-run` printed, once it exited 0. Without `-v`: the scripts `-v`
/// adds are snapshot by the library's unit tests (`src/plan/scripts/tests/snapshots/`).
fn dry_run(world: &World) -> String {
    let output = world.command(env!("CARGO_BIN_EXE_xtask"), &["deploy", "--dry-run"]).output().unwrap();
    assert!(output.status.success(), "{}", stderr_of(&output));
    String::from_utf8(output.stdout).unwrap()
}

/// `text` with what differs from one run to the next replaced by fixed placeholders:
/// - each `(value, placeholder)` of `known`, in that order (the test names its server's dir,
///   port and user, and the releases and commits it made, so the snapshot tells them apart);
/// - then any other release name (14 digits, a UTC time) by `<release>`;
/// - then any other SHA (40 hex digits, or 12 as the status lines shorten them) by `<sha>`.
///
/// The text has no durations or byte counts to replace: the dry run counts objects, which a
/// test's commits fix.
fn placeholders(text: &str, known: &[(String, String)]) -> String {
    let mut text = text.to_string();
    for (value, placeholder) in known {
        text = text.replace(value.as_str(), placeholder);
    }
    let mut out = String::new();
    let mut word = String::new();
    for c in text.chars().chain(std::iter::once('\n')) {
        if c.is_ascii_alphanumeric() {
            word.push(c);
            continue;
        }
        let digits = word.chars().all(|c| c.is_ascii_digit());
        let hex = word.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'));
        out.push_str(match word.len() {
            14 if digits => "<release>",
            12 | 40 if hex => "<sha>",
            _ => &word,
        });
        out.push(c);
        word.clear();
    }
    out.pop();
    out
}

/// `sha` and its first 12 digits, to replace by `<sha {name}>` and `<short {name}>`: the whole
/// SHA first, as its short form is a prefix of it.
fn commit(sha: &str, name: &str) -> [(String, String); 2] {
    [(sha.to_string(), format!("<sha {name}>")), (sha[..12].to_string(), format!("<short {name}>"))]
}

#[test]
fn the_dry_run_says_what_the_snapshots_hold() {
    let world = World::with_config(
        "build = [\"true\"]\nkeep_releases = 2\nlinked_dirs = [\"log\"]\n\
         [package.metadata.deploy.hooks]\nafter_publish = [{ remote = \"echo restarted\" }]",
    );
    let user = world.server.user().to_string();
    let mut known = vec![
        (world.server.dir().display().to_string(), "<server dir>".to_string()),
        (format!("{user}@127.0.0.1:{}", world.server.port()), "<user>@127.0.0.1:<port>".to_string()),
    ];

    // Before setup: the deploy would stop at the server.
    let head = world.app.repo().head().unwrap().target().unwrap().to_string();
    let before_setup: Vec<_> = known.iter().cloned().chain(commit(&head, "head")).collect();
    expect_file!["snapshots/dry_run_before_setup.txt"].assert_eq(&placeholders(&dry_run(&world), &before_setup));

    // Two releases on the server and a new commit: a deploy would make a third, pruning the first.
    world.setup();
    let first = world.deploy();
    world.commit("src/main.rs", "fn main() {}\n");
    let second = world.deploy();
    let new = world.commit("assets/data.txt", "other data\n");
    known.extend(commit(&first.sha, "first"));
    known.extend(commit(&second.sha, "second"));
    known.extend(commit(&new, "new"));
    known.push((first.release.clone(), "<release first>".to_string()));
    known.push((second.release.clone(), "<release second>".to_string()));
    expect_file!["snapshots/dry_run_ready.txt"].assert_eq(&placeholders(&dry_run(&world), &known));

    // The lock held by another deploy, and a second server nobody listens for.
    hold_lock(&world.deploy_to, "dave", "ci-7");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let quoted_user = xtask_deploy::loopback::toml_string(&user);
    world.edit_manifest(|manifest| {
        manifest
            + &format!(
                "\n[[package.metadata.deploy.servers]]\nhost = \"127.0.0.1\"\nport = {closed}\nuser = {quoted_user}\n"
            )
    });
    world.app.commit_all("a second server").unwrap();
    known.push((format!("{user}@127.0.0.1:{closed}"), "<user>@127.0.0.1:<closed port>".to_string()));
    known.push((format!("127.0.0.1:{closed}"), "127.0.0.1:<closed port>".to_string()));
    let text = placeholders(&dry_run(&world), &known);
    expect_file!["snapshots/dry_run_locked_and_unreachable.txt"].assert_eq(&text);
}
