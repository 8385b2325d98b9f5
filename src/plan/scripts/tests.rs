//! The scripts' text, and the scripts and snippets run by a local `sh` in a temporary
//! `deploy_to`: no server needed.

use std::collections::BTreeSet;

use super::daemon::{ACCESS_HOOK, ACCESS_HOOK_CALL, CHECKED_GIT};
use super::release::{ARTIFACT_ATTRIBUTES, NO_LINK};
use super::*;
use crate::plan::rollback::{marks_script, rollback_script, RollbackTo};
use crate::plan::tests::{config, lock, release};
use crate::plan::{Release, SubmoduleRelease};
use crate::shell::{quote, RemoteScript};

fn submodule() -> SubmoduleRelease {
    SubmoduleRelease {
        path: "libs/$(evil)".into(),
        repo: "repo/modules/it's".into(),
        commit: "89abcdef0123456789abcdef0123456789abcdef".into(),
    }
}

/// A daemon for the keeper to start, with a submodule's repository of an awkward name.
fn keeper_daemon() -> KeeperDaemon {
    KeeperDaemon { ports: vec![40000, 40001], max_seconds: 600, submodule_repos: vec!["repo/modules/it's".into()] }
}

#[test]
fn every_script_quotes_a_hostile_deploy_to() {
    let hostile = "/srv/it's $(rm -rf ~) `x`";
    let cfg = config(hostile);
    let release = release();
    for script in [
        setup_script(&cfg),
        keeper_script(&cfg, &lock(), &[crate::plan::Restart::hook("systemctl restart it")], Some(&keeper_daemon()), None),
        confirm_script(&cfg, "t0k3n"),
        inspect_script(&cfg),
        unlock_script(&cfg, Some("t"), false),
        prepare_script(&cfg, &release, &[submodule()]),
        hook_script(&cfg, &release, "after_update", "echo hi"),
        discard_script(&cfg, &release),
        publish_script(&cfg, &release, "t0k3n"),
        rollback_script(&cfg, RollbackTo::Release { name: "20261125041638", mark_left: true }, "alice", &[crate::plan::Restart::hook("x")], "@@m"),
        marks_script(&cfg, Some("20261125041638")),
    ] {
        assert!(script.text.contains(&format!("d={}\n", quote(hostile))), "{}", script.name);
        // The value appears once, inside that quoted assignment, and nowhere else.
        assert_eq!(script.text.matches("rm -rf ~").count(), 1, "{}", script.name);
    }
}

/// The preflight of a deploy whose keeper starts the daemon, for `submodule_repos`.
fn preflight_with_daemon(submodule_repos: &[&str]) -> String {
    let daemon = KeeperDaemon {
        ports: vec![40123],
        max_seconds: 900,
        submodule_repos: submodule_repos.iter().map(|repo| repo.to_string()).collect(),
    };
    keeper_script(&config("/srv/x"), &lock(), &[], Some(&daemon), None).text
}

#[test]
fn daemon_listens_on_loopback_only_and_serves_one_repo() {
    let script = preflight_with_daemon(&[]);
    assert!(script.contains("--listen=127.0.0.1 --port=\"$port\" --strict-paths"), "{script}");
    assert!(script.contains("--enable=receive-pack --disable=upload-pack --disable=upload-archive"));
    assert!(script.contains("timeout -k 1 \"$daemon_max\" $checked_git daemon"), "{script}");
    assert!(script.contains(&format!("--access-hook='{ACCESS_HOOK_CALL}'")), "{script}");
    assert!(script.contains("\ndaemon_ports=40123\ndaemon_max=900\n"), "{script}");
    assert!(script.contains("  set -- \"$d/repo\"\n"), "{script}");
}

#[test]
fn both_transports_check_what_they_receive_and_their_processes_are_still_found() {
    let checked = CHECKED_GIT;
    assert!(checked.contains("-c receive.fsckObjects=true") && checked.contains("-c receive.shallowUpdate=true"));
    assert!(preflight_with_daemon(&[]).contains("$checked_git daemon --verbose"));
    let exec = receive_pack_script(&config("/srv/x"), "repo", false).text;
    assert!(exec.contains("\n$checked_git receive-pack \"$repo\"\n"), "{exec}");
    assert!(exec.contains(&format!("\nchecked_git={}\n", quote(checked))), "{exec}");
    // The preflight and the lock keeper find them by command line (and those of older versions).
    let preflight = keeper_script(&config("/srv/x"), &lock(), &[], None, None).text;
    assert!(preflight.contains("*\"$checked_git daemon\"*\"$d/repo\"*"), "{preflight}");
    assert!(preflight.contains(&format!("\nchecked_git={}\n", quote(checked))), "{preflight}");
    assert!(preflight.contains("*\"git daemon\"*\"$d/repo\"*") && preflight.contains("*\"git \"*\"receive-pack\"*"));
}

#[test]
fn submodules_are_served_created_and_extracted_quoted() {
    let daemon = preflight_with_daemon(&["repo/modules/a b"]);
    assert!(daemon.contains(&format!("\ndaemon_submodules={}\n", quote("repo/modules/a b"))), "{daemon}");
    assert!(daemon.contains("if [ ! -d \"$d/$r\" ] && ! git init --quiet --bare \"$d/$r\""), "{daemon}");
    assert!(daemon.contains("    set -- \"$@\" \"$d/$r\"\n"), "{daemon}");
    let prepare = prepare_script(&config("/srv/x"), &release(), &[submodule()]);
    assert!(prepare.text.contains("mkdir -p \"releases/$rel\"/'libs/$(evil)'\n"), "{}", prepare.text);
    let archive = format!(
        "git --git-dir={} archive --format=tar 89abcdef0123456789abcdef0123456789abcdef",
        quote("repo/modules/it's")
    );
    assert!(prepare.text.contains(&archive), "{}", prepare.text);
    assert!(prepare.text.find("libs/$(evil)").unwrap() < prepare.text.find("if [ -s \"$marker\" ]").unwrap());
}

#[test]
fn release_is_made_from_the_sha_and_published_atomically() {
    let prepare = prepare_script(&config("/srv/x"), &release(), &[]);
    assert!(prepare.text.contains("sha=0123456789abcdef0123456789abcdef01234567\n"));
    assert!(prepare.text.contains("tree=0123456789abcdef0123456789abcdef01234567\n"), "without build output");
    assert!(prepare.text.contains("archive --format=tar \"$tree\""));
    assert!(prepare.text.contains("printf '%s\\n' \"$sha\" > \"releases/$rel/REVISION\""));
    // With build output, the files come from the release commit; REVISION still names the source.
    let build = Release { release_commit: Some("fedcba9876543210fedcba9876543210fedcba98".into()), ..release() };
    let prepare = prepare_script(&config("/srv/x"), &build, &[]);
    assert!(prepare.text.contains("sha=0123456789abcdef0123456789abcdef01234567\n"));
    assert!(prepare.text.contains("tree=fedcba9876543210fedcba9876543210fedcba98\n"));
    let publish = publish_script(&config("/srv/x"), &release(), "t0k3n").text;
    assert!(publish.find("ln -s").unwrap() < publish.find("mv -T releases/current current").unwrap());
    let switch = publish.find("\nswitch_current\n").unwrap();
    let log = publish.find(">> revisions.log").unwrap();
    assert!(switch < log, "{publish}");
    // The marker that holds the release unconfirmed (with this deploy's token) is written
    // before the switch.
    assert!(publish.contains(&format!("\nours={}\n", quote("token=t0k3n"))), "{publish}");
    let marker = publish.find("printf '%s\\n' \"$ours\" \"release=$rel\" \"previous=$previous\" >").unwrap();
    assert!(marker < switch, "{publish}");
}

#[test]
fn linked_files_are_checked_before_the_release_is_made() {
    let mut cfg = config("/srv/x");
    cfg.linked_files = vec!["config/database.yml".into()];
    cfg.linked_dirs = vec!["log".into()];
    let prepare = prepare_script(&cfg, &release(), &[]).text;
    let check = prepare.find("[ -e \"$d/shared\"/config/database.yml ]").unwrap();
    assert!(check < prepare.find("mkdir \"releases/$rel\"").unwrap());
    assert!(prepare.contains("ln -s \"$d/shared\"/log \"releases/$rel\"/log"));
    // Setup makes the linked directories and the linked files' parents in `shared/`.
    let dir = tempfile::tempdir().unwrap();
    cfg.deploy_to = dir.path().join("app it's").display().to_string();
    let out = std::process::Command::new("sh").arg("-c").arg(setup_script(&cfg).text).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for made in ["shared/log", "shared/config", "releases", "repo/objects"] {
        assert!(dir.path().join("app it's").join(made).is_dir(), "{made}");
    }
}

#[test]
fn a_batch_stops_at_the_first_failing_script_and_marks_the_others() {
    let ok = RemoteScript { name: "ok", text: "set -eu\necho one".into() };
    // `set -e` must still stop this script at `false`, inside the batch.
    let failing = RemoteScript { name: "failing", text: "set -eu\nfalse\necho not-reached".into() };
    let never = RemoteScript { name: "never", text: "echo never".into() };
    let batch = batch_script(&[&ok, &failing, &never], "@@m-1f");
    let out = std::process::Command::new("sh").arg("-c").arg(&batch.text).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    // Each step is marked as it starts, on both streams; the one after the failure is not.
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "\n@@m-1f 0\none\n\n@@m-1f 1\n");
    assert_eq!(String::from_utf8(out.stderr).unwrap(), "\n@@m-1f 0\n\n@@m-1f 1\n");
    let all = std::process::Command::new("sh").arg("-c").arg(batch_script(&[&ok], "@@m-1f").text).output();
    assert_eq!(String::from_utf8(all.unwrap().stdout).unwrap(), "\n@@m-1f 0\none\n\n@@m-1f 1\n");
}

#[test]
fn publish_claims_the_prepared_release_before_switching() {
    let publish = publish_script(&config("/srv/x"), &release(), "t0k3n").text;
    let claim = publish.find("mv \"$marker\" \"$marker.publishing\"").unwrap();
    assert!(claim < publish.find("\nswitch_current\n").unwrap(), "{publish}");
    assert!(publish.find("switch_current() {").unwrap() < claim, "defined before, run after the claim");
    let prepare = prepare_script(&config("/srv/x"), &release(), &[]).text;
    assert!(prepare.contains("marker=\"$d/.xtask-deploy/preparing.$rel\"\n"), "{prepare}");
    assert!(prepare.contains("\n: > \"$marker\"\n"), "{prepare}");
}

#[test]
fn a_deploy_removes_only_its_own_lock_and_unlock_removes_any() {
    let own = unlock_script(&config("/srv/x"), Some("abc"), true).text;
    assert!(own.contains(&format!("\nours={}\n", quote("token=abc"))), "{own}");
    assert!(own.contains("has_line \"$ours\" \"$lock/info\""), "{own}");
    let any = unlock_script(&config("/srv/x"), None, true).text;
    assert!(!any.contains("token="), "{any}");
}

/// Runs `text` with `sh -c`, with `args` as `$0 $1...`; returns (status, stdout, stderr).
fn sh(text: &str, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new("sh").arg("-c").arg(text).args(args).output().unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

#[test]
fn the_access_hook_lets_in_only_a_push_whose_connection_the_deploy_user_opened() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (_server, peer) = listener.accept().unwrap();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    // As git daemon runs it: `sh -c '<hook> "$@"' '<hook>' <service> <path> <host> <canon> <ip> <port>`.
    let hook = |service: &str| {
        let mut command = std::process::Command::new("sh");
        command.arg("-c").arg(format!("{ACCESS_HOOK_CALL} \"$@\"")).arg(ACCESS_HOOK_CALL);
        command.args([service, "/srv/x/repo", "", "", "", ""]).env("XTASK_DEPLOY_ACCESS_HOOK", ACCESS_HOOK);
        command
    };
    let run = |service: &str, remote: &str, uid: u32| {
        let out = hook(service)
            .env("REMOTE_ADDR", "127.0.0.1")
            .env("REMOTE_PORT", remote)
            .env("XTASK_DEPLOY_PORT", port.to_string())
            .env("XTASK_DEPLOY_UID", uid.to_string())
            .output()
            .unwrap();
        (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap())
    };
    let ours = peer.port().to_string();
    assert_eq!(run("receive-pack", &ours, uid).0, 0, "our own connection");
    assert_eq!(run("receive-pack", &ours, uid).0, 0, "the same connection, asked again");
    assert_eq!(run("upload-pack", &ours, uid).0, 1, "only pushes are let in");
    assert_eq!(run("receive-pack", &ours, uid + 1), (1, "not a connection of this deploy\n".into()), "another user's");
    // The daemon's own end of the connection, a port nobody connects from, and garbage.
    for other in [port.to_string(), "1".into(), "".into(), "x".into(), format!("{ours} 1"), format!("0{ours}x")] {
        assert_eq!(run("receive-pack", &other, uid), (1, "not a connection of this deploy\n".into()), "{other:?}");
    }
    let elsewhere = hook("receive-pack")
        .env("REMOTE_ADDR", "10.0.0.1")
        .env("REMOTE_PORT", &ours)
        .env("XTASK_DEPLOY_PORT", port.to_string())
        .env("XTASK_DEPLOY_UID", uid.to_string())
        .status()
        .unwrap();
    assert_eq!(elsewhere.code(), Some(1), "not from 127.0.0.1");
}

#[test]
fn a_lock_is_released_only_by_its_token_and_reports_its_holder() {
    let dir = tempfile::tempdir().unwrap();
    let deploy_to = dir.path().to_str().unwrap();
    let lock = dir.path().join(STATE_DIR).join("lock");
    let take = || {
        std::fs::create_dir_all(&lock).unwrap();
        // The last line has no newline: it still counts.
        std::fs::write(lock.join("info"), "user=alice\ntoken=abc").unwrap();
    };
    take();
    for other in ["ab", "abcd", "ABC"] {
        let (status, stdout, _) = sh(&unlock_script(&config(deploy_to), Some(other), true).text, &[]);
        assert_eq!((status, stdout.as_str()), (0, "the lock is not ours; left in place\n"), "token {other}");
        assert!(lock.exists());
    }
    let (status, stdout, _) = sh(&unlock_script(&config(deploy_to), Some("abc"), true).text, &[]);
    assert_eq!((status, stdout.as_str()), (0, "removed user=alice\nremoved token=abc\n"));
    assert!(!lock.exists());
    take();
    let (_, stdout, _) = sh(&unlock_script(&config(deploy_to), None, true).text, &[]);
    assert_eq!(stdout, "removed user=alice\nremoved token=abc\n");
    assert!(!lock.exists());

    // Without force, a live holder's lock stays (this test is its "connection"); a dead
    // one's goes.
    let pid = std::process::id();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let start = stat.rsplit(") ").next().unwrap().split_whitespace().nth(19).unwrap().to_string();
    std::fs::create_dir_all(&lock).unwrap();
    std::fs::write(lock.join("info"), format!("user=alice\nconnection={pid} {start}\n")).unwrap();
    let (status, stdout, _) = sh(&unlock_script(&config(deploy_to), None, false).text, &[]);
    assert_eq!(
        (status, stdout.as_str()),
        (EXIT_LOCKED, format!("holder user=alice\nholder connection={pid} {start}\n").as_str())
    );
    assert!(lock.exists(), "a live deploy's lock is left in place");
    std::fs::write(lock.join("info"), "user=gone\nconnection=1 0\n").unwrap();
    let (status, stdout, _) = sh(&unlock_script(&config(deploy_to), None, false).text, &[]);
    assert_eq!((status, stdout.as_str()), (0, "removed user=gone\nremoved connection=1 0\n"));
    assert!(!lock.exists(), "a dead deploy's lock is removed");
}

#[test]
fn a_commit_that_did_not_arrive_is_named_and_nothing_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let deploy_to = dir.path().to_str().unwrap();
    let init = crate::local::git().args(["init", "-q", "--bare"]).arg(dir.path().join("repo")).status();
    assert!(init.unwrap().success());
    std::fs::create_dir_all(dir.path().join("releases")).unwrap();
    std::fs::create_dir_all(dir.path().join(STATE_DIR)).unwrap();
    let (status, _, stderr) = sh(&prepare_script(&config(deploy_to), &release(), &[]).text, &[]);
    assert_eq!(status, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("commit `{}` is not in `{deploy_to}/repo`: the push did not arrive", release().sha))
    );
    assert_eq!(std::fs::read_dir(dir.path().join("releases")).unwrap().count(), 0, "the release was removed");
    assert_eq!(std::fs::read_dir(dir.path().join(STATE_DIR)).unwrap().count(), 0, "the marker was removed");
}

#[test]
fn no_path_is_written_through_a_link_but_a_link_at_its_end_may_be_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("releases/20261125041638");
    std::fs::create_dir_all(release.join("b/c")).unwrap();
    std::os::unix::fs::symlink("/elsewhere", release.join("a")).unwrap();
    std::os::unix::fs::symlink("../../x", release.join("b/c/l")).unwrap();
    let script = format!("cd \"$0\" && rel=20261125041638\n{NO_LINK}\nno_link \"$1\" \"$2\" WHAT FIX\necho fine");
    let run = |path: &str, last: &str| sh(&script, &[dir.path().to_str().unwrap(), path, last]);
    for (path, last) in [("a", "no"), ("b/c/l", "no"), ("b/c/new/deeper", "no"), ("b/c", "yes"), ("new", "yes")] {
        assert_eq!(run(path, last), (0, "fine\n".into(), String::new()), "{path} {last}");
    }
    let through = |link: &str, target: &str| {
        format!(
            "`{link}` is a symbolic link in the deployed commit (to `{target}`): the deploy would write WHAT \
             through it, outside the release; FIX, and deploy again\n"
        )
    };
    for (path, last, link, target) in
        [("a/x", "no", "a", "/elsewhere"), ("a", "yes", "a", "/elsewhere"), ("b/c/l", "yes", "b/c/l", "../../x")]
    {
        assert_eq!(run(path, last), (1, String::new(), through(link, target)), "{path} {last}");
    }
}

#[test]
fn subjects_are_read_for_full_shas_only() {
    let dir = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let out = crate::local::git().args(args).current_dir(dir.path()).output().unwrap();
        assert!(out.status.success(), "git {args:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    git(&["init", "-q", "--bare", "repo"]);
    let tree = git(&["--git-dir=repo", "mktree"]);
    let ident = ["-c", "user.name=t", "-c", "user.email=t@t"];
    let commit = git(&[&ident[..], &["--git-dir=repo", "commit-tree", &tree, "-m", "Fix it's \"quoted\""]].concat());
    let pwned = dir.path().join("pwned");
    let revisions = [
        commit.clone(),
        "f".repeat(40),
        format!("--output={}", pwned.display()),
        "HEAD".to_string(),
        commit[..12].to_string(),
    ];
    for (index, revision) in revisions.iter().enumerate() {
        let release = dir.path().join(format!("releases/2026010100000{index}"));
        std::fs::create_dir_all(&release).unwrap();
        std::fs::write(release.join("REVISION"), format!("{revision}\n")).unwrap();
    }
    let (status, stdout, _) = sh(&inspect_script(&config(dir.path().to_str().unwrap())).text, &[]);
    assert_eq!(status, 0);
    let subjects: Vec<&str> = stdout.lines().filter(|line| line.starts_with("subject ")).collect();
    assert_eq!(subjects, [format!("subject {commit} Fix it's \"quoted\"")]);
    assert!(!pwned.exists(), "a REVISION became an option of git");
}

#[test]
fn only_a_bare_repository_counts_as_set_up() {
    let dir = tempfile::tempdir().unwrap();
    let deploy_to = dir.path().to_str().unwrap();
    let git = |args: &[&str]| assert!(crate::local::git().args(args).status().unwrap().success());
    let inspect = inspect_script(&config(deploy_to)).text;
    assert_eq!(sh(&inspect, &[]).0, EXIT_NOT_SET_UP, "nothing there");
    std::fs::create_dir_all(dir.path().join("releases")).unwrap();
    let repo = dir.path().join("repo");
    git(&["init", "-q", repo.to_str().unwrap()]);
    let (status, _, stderr) = sh(&inspect, &[]);
    assert_eq!(status, EXIT_NOT_SET_UP, "a clone with a work tree in `repo/`");
    assert!(stderr.contains("run `cargo xtask deploy-setup` first"), "{stderr}");
    std::fs::remove_dir_all(&repo).unwrap();
    git(&["init", "-q", "--bare", repo.to_str().unwrap()]);
    assert_eq!(sh(&inspect, &[]), (0, String::new(), String::new()));
}

#[test]
fn build_output_is_exempt_from_the_trees_attributes_even_with_odd_names() {
    let mut cfg = config("/srv/x");
    cfg.artifacts = vec!["bin/my \"app\"".into(), "dist".into()];
    let build = Release { release_commit: Some("f".repeat(40)), ..release() };
    let prepare = prepare_script(&cfg, &build, &[]).text;
    let line = prepare.lines().find(|line| line.starts_with("mkdir -p repo/info")).expect("attributes written");
    let dir = tempfile::tempdir().unwrap();
    let (status, _, stderr) = sh(&format!("cd {} && {line}", quote(dir.path().to_str().unwrap())), &[]);
    assert_eq!(status, 0, "{stderr}");
    let written = std::fs::read_to_string(dir.path().join("repo/info/attributes")).unwrap();
    let all = ARTIFACT_ATTRIBUTES;
    assert_eq!(
        written,
        format!(
            "/bin -export-ignore\n\"/bin/my \\\"app\\\"\" {all}\n\"/bin/my \\\"app\\\"/**\" {all}\n/dist {all}\n/dist/** {all}\n"
        )
    );
    // Without build output, the repository's attributes are left alone (read, never written).
    assert!(!prepare_script(&cfg, &release(), &[]).text.contains("mkdir -p repo/info"));
}

#[test]
fn the_snippets_name_the_values_the_deployer_reads() {
    // The snippets' text is made from these constants; this pins what it says.
    let no_git = format!("{REQUIRE}require_git");
    let no_git = std::process::Command::new("/bin/sh").arg("-c").arg(no_git).env("PATH", "/nonexistent").output();
    assert_eq!(no_git.unwrap().status.code(), Some(EXIT_NO_GIT));
    let not_set_up = format!("d=/nonexistent\n{REQUIRE}require_setup");
    let not_set_up = std::process::Command::new("/bin/sh").arg("-c").arg(not_set_up).output();
    assert_eq!(not_set_up.unwrap().status.code(), Some(EXIT_NOT_SET_UP));
    let setup = setup_script(&config("/srv/x")).text;
    assert!(setup.contains(&format!("\nchmod go= \"$d/repo\" \"$d/{STATE_DIR}\"\n")), "{setup}");
    assert!(REPORT.contains(&format!("each_line \"$d/{STATE_DIR}/bad\" bad")), "{REPORT}");
    assert!(STATE.contains(&format!("state=\"$d/{STATE_DIR}\"")), "{STATE}");
    // The values themselves: servers set up by earlier versions have this state directory.
    assert_eq!((STATE_DIR, EXIT_NO_GIT, EXIT_NOT_SET_UP, EXIT_LOCKED), (".xtask-deploy", 3, 4, 5));
}

mod snapshots;

/// A `deploy_to` whose `repo/` has two commits (one file changed between them); their SHAs.
fn deploy_to_with_two_commits(dir: &std::path::Path) -> (String, String) {
    let work = dir.join("work");
    let git = |args: &[&str]| {
        let out = crate::local::git()
            .arg("-C")
            .arg(&work)
            .args(["-c", "user.name=t", "-c", "user.email=t@localhost"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    std::fs::create_dir_all(work.join("src")).unwrap();
    git(&["init", "-q"]);
    std::fs::write(work.join("src/kept.rs"), "kept\n").unwrap();
    std::fs::write(work.join("src/changed.rs"), "one\n").unwrap();
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "one"]);
    let one = git(&["rev-parse", "HEAD"]);
    std::fs::write(work.join("src/changed.rs"), "two\n").unwrap();
    git(&["commit", "-q", "-a", "-m", "two"]);
    let two = git(&["rev-parse", "HEAD"]);
    let clone = crate::local::git().args(["clone", "-q", "--bare"]).arg(&work).arg(dir.join("repo")).status();
    assert!(clone.unwrap().success());
    std::fs::create_dir_all(dir.join("releases")).unwrap();
    std::fs::create_dir_all(dir.join(STATE_DIR)).unwrap();
    (one, two)
}

#[test]
fn a_release_reuses_the_current_ones_files_unless_cp_lacks_parents() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = deploy_to_with_two_commits(dir.path());
    let cfg = config(dir.path().to_str().unwrap());
    // A `cp` that knows no `--parents`, as BusyBox's and BSD's.
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("cp"), "#!/bin/sh\nfor a; do [ \"$a\" = --parents ] && exit 1; done\nexec /bin/cp \"$@\"\n")
        .unwrap();
    std::fs::set_permissions(bin.join("cp"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let prepare = |name: &str, sha: &str, path: Option<&std::path::Path>| {
        let release = Release { name: name.into(), sha: sha.into(), ..release() };
        let mut path_var = std::env::var_os("PATH").unwrap();
        if let Some(first) = path {
            path_var = std::env::join_paths(std::iter::once(first.to_path_buf()).chain(std::env::split_paths(&path_var)))
                .unwrap();
        }
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(prepare_script(&cfg, &release, &[]).text)
            .env("PATH", path_var)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::os::unix::fs::symlink(dir.path().join("releases").join(name), dir.path().join("current.new")).unwrap();
        std::fs::rename(dir.path().join("current.new"), dir.path().join("current")).unwrap();
    };
    let file = |name: &str, path: &str| dir.path().join("releases").join(name).join(path);
    prepare("20260101000001", &one, None);
    prepare("20260101000002", &two, None);
    assert_eq!(std::fs::read_to_string(file("20260101000002", "src/changed.rs")).unwrap(), "two\n");
    let inode = |name: &str, path: &str| std::fs::metadata(file(name, path)).unwrap().ino();
    assert_eq!(inode("20260101000002", "src/kept.rs"), inode("20260101000001", "src/kept.rs"), "reused");
    assert_eq!(std::fs::read_to_string(file("20260101000001", "src/changed.rs")).unwrap(), "one\n");
    prepare("20260101000003", &one, Some(&bin));
    assert_eq!(std::fs::read_to_string(file("20260101000003", "src/changed.rs")).unwrap(), "one\n");
    assert_eq!(std::fs::read_to_string(file("20260101000003", "src/kept.rs")).unwrap(), "kept\n");
    assert_ne!(inode("20260101000003", "src/kept.rs"), inode("20260101000002", "src/kept.rs"), "extracted whole");
    assert!(!dir.path().join(STATE_DIR).join("reuse.20260101000003").exists(), "the lists are gone");
    let record = std::fs::read_to_string(dir.path().join(STATE_DIR).join("tree.20260101000003")).unwrap();
    let kept = inode("20260101000003", "src/kept.rs");
    assert_eq!(record.lines().collect::<Vec<_>>()[..2], [one.as_str(), "none"]);
    assert!(record.lines().any(|line| line == format!("{kept} ./src/kept.rs")), "{record}");
}

/// The keeper's jobs run their batch from `XTASK_DEPLOY_RUN` with the words of
/// [`crate::shell::RUN_EXPORTED`] (as the supervisor does: `shell`'s tests say so).
#[test]
fn the_keepers_jobs_run_an_exported_batch_as_run_exported_does() {
    let runner = crate::shell::RUN_EXPORTED.trim_start_matches("sh -c ").trim_matches('\'');
    let jobs = super::keeper::KEEPER_JOBS;
    assert!(jobs.contains(&format!("RUN_JOB='{runner}'")), "{jobs}");
}

/// The refs the tidying keeps releases by are the refs the push leaves out of its bases.
#[test]
fn the_tidying_keeps_releases_under_the_refs_the_push_leaves_out() {
    let tidy = include_str!("sh/tidy.sh");
    let kept = crate::transport::receive_pack::KEPT_REFS;
    assert!(tidy.contains(&format!("update {kept}$kind/$name")), "{tidy}");
    assert!(tidy.contains(&format!("for-each-ref --format='%(refname)' {kept} ")), "{tidy}");
}

#[test]
fn the_keeper_reads_every_word_the_deployer_says_and_no_other() {
    let preflight = preflight_with_daemon(&[]);
    let loop_start = preflight.find("lines_read=$((lines_read + 1))").expect("the keeper's loop");
    let start = loop_start + preflight[loop_start..].find("case \"$line\" in\n").expect("its case");
    let arms = &preflight[start..];
    let arms = &arms[arms.find('\n').unwrap() + 1..arms.find("\n  esac").unwrap()];
    let words: BTreeSet<String> = arms
        .lines()
        .filter_map(|line| line.trim_start().split_once(')').map(|(pattern, _)| pattern))
        .filter(|pattern| !pattern.starts_with("case") && !pattern.starts_with("''"))
        .map(|pattern| {
            // Each arm matches a word of the header: `"$say_run "*` reads `say_run=run`.
            let name = pattern.trim_matches(['"', '*']).trim().trim_start_matches('$');
            let line = preflight.lines().find(|line| line.starts_with(&format!("{name}="))).expect(name);
            line[name.len() + 1..].to_string()
        })
        .collect();
    let said: BTreeSet<String> = crate::protocol::Say::WORDS.iter().map(|word| word.to_string()).collect();
    assert_eq!(words, said, "the keeper's arms:\n{arms}");
}

#[test]
fn hooks_and_restart_hooks_run_their_command_from_the_environment_as_run_exported_does() {
    let run = crate::shell::RUN_EXPORTED;
    let hook = hook_script(&config("/srv/x"), &release(), "after_update", "echo hi").text;
    assert!(hook.contains(&format!("XTASK_DEPLOY_RUN=$hook; export XTASK_DEPLOY_RUN\nexec {run}\n")), "{hook}");
    let restart = crate::plan::confirm::RESTART_HOOKS;
    assert!(restart.contains(&format!("export XTASK_DEPLOY_RUN; exec timeout -k 1 \"$restart_limit\" {run} )")), "{restart}");
}
