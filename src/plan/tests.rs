use super::*;

pub(crate) fn config(deploy_to: &str) -> Config {
    let metadata = serde_json::json!({ "deploy": {
        "deploy_to": deploy_to,
        "keep_releases": 2,
        "servers": [{ "host": "h", "user": "u" }],
    }});
    let defaults = crate::config::Defaults {
        package_name: Some("hello".into()),
        user: None,
        home: None,
        env_auth: Default::default(),
        ssh_config: None,
        stage: None,
        target_dir: None,
    };
    Config::from_metadata(&metadata, "package.metadata", std::path::Path::new("/app/Cargo.toml"), &defaults)
        .unwrap()
}

pub(crate) fn release() -> Release {
    Release {
        name: "20261125041638".into(),
        sha: "0123456789abcdef0123456789abcdef01234567".into(),
        branch: "main".into(),
        user: "alice".into(),
        release_commit: None,
    }
}

pub(crate) fn lock() -> LockInfo {
    LockInfo {
        user: "alice".into(),
        host: "laptop".into(),
        since: "2026-11-25T04:16:38Z".into(),
        sha: release().sha,
        message: "hotfix\nfor #12".into(),
        token: "t0k3n".into(),
    }
}

#[test]
fn release_name_is_utc_timestamp_and_stays_unique() {
    let now = UtcSecond::parse_compact("20261125041638").unwrap();
    assert_eq!(release_name(now, []), "20261125041638");
    assert_eq!(release_name(now, ["20261125041000"]), "20261125041638");
    assert_eq!(release_name(now, ["20261125041638"]), "20261125041639");
    assert_eq!(release_name(now, ["20261125041700", "junk"]), "20261125041701");
}

#[test]
fn revision_log_line_uses_capistrano_wording() {
    assert_eq!(
        revision_log_line(&release()),
        "Branch main (at 0123456789abcdef0123456789abcdef01234567) deployed as release 20261125041638 by alice"
    );
}

#[test]
fn server_state_is_parsed() {
    let state = parse_state(
        "release 20261125041639 bbbb\nrelease 20261125041638 aaaa\nrelease notes x\n\
         current /srv/x/releases/20261125041639\nreaped 42\nbad 20261125041637\nholder user=bob\n\
         holder message=a=b\nstale user=carol\nlog Branch main\nunconfirmed 20261125041639\n",
    );
    assert_eq!(state.unconfirmed.as_deref(), Some("20261125041639"));
    assert_eq!(parse_state("release 20261125041639 bbbb\n").unconfirmed, None);
    assert_eq!(
        state.releases,
        vec![("20261125041638".into(), "aaaa".into()), ("20261125041639".into(), "bbbb".into())]
    );
    assert_eq!(state.current_release(), Some("20261125041639"));
    assert_eq!(state.current_sha(), Some("bbbb"));
    assert_eq!(state.reaped, vec!["42"]);
    assert_eq!(state.bad, vec!["20261125041637"]);
    assert_eq!(state.holder, vec![("user".into(), "bob".into()), ("message".into(), "a=b".into())]);
    assert_eq!(state.stale, vec![("user".into(), "carol".into())]);
    assert_eq!(state.log, vec!["Branch main"]);
}

#[test]
fn deploying_a_commit_whose_release_is_marked_bad_warns_with_the_fix() {
    let (good, bad) = ("a".repeat(40), "b".repeat(40));
    let state = parse_state(&format!(
        "release 20261125041637 {bad}\nrelease 20261125041638 {good}\nrelease 20261125041639 {bad}\n\
         bad 20261125041637\nbad 20261125041639\nbad 20261125041600\ncurrent /srv/x/releases/20261125041638\n"
    ));
    let warning = bad_commit_warning(&state, &bad, "deploy@web1:22").expect("its releases are marked bad");
    assert_eq!(
        warning,
        "commit bbbbbbbbbbbb was rolled back on `deploy@web1:22` before (release 20261125041637, \
         20261125041639, marked bad there): deploying it again may bring back what the rollback undid \
         (`cargo xtask releases --unmark 20261125041639` clears the mark)"
    );
    assert_eq!(bad_commit_warning(&state, &good, "deploy@web1:22"), None, "its release is not marked");
    assert_eq!(bad_commit_warning(&state, &"c".repeat(40), "deploy@web1:22"), None, "never deployed");
    let unmarked = RemoteState { bad: vec![], ..state };
    assert_eq!(bad_commit_warning(&unmarked, &bad, "deploy@web1:22"), None, "marks cleared");
}

#[test]
fn lock_lines_are_single_lines_and_describe_hides_the_token() {
    let lines = lock().lines();
    assert!(lines.contains(&"message=hotfix for #12".to_string()));
    let holder: Vec<(String, String)> =
        lines.iter().map(|line| line.split_once('=').unwrap()).map(|(k, v)| (k.into(), v.into())).collect();
    let text = LockInfo::describe(&holder);
    assert_eq!(
        text,
        "alice on laptop since 2026-11-25T04:16:38Z (deploying 0123456789abcdef0123456789abcdef01234567): \"hotfix for #12\""
    );
}

#[test]
fn the_plan_orders_phases_like_capistrano() {
    let mut cfg = config("/srv/x");
    cfg.build = vec!["cargo build --release".into()];
    cfg.artifacts = vec!["target/release/hello".into()];
    cfg.hooks.before_update = vec![Hook::Local("cargo test".into())];
    cfg.hooks.after_update = vec![Hook::Remote("./migrate".into(), Default::default())];
    cfg.hooks.after_publish = vec![Hook::Remote("systemctl restart hello".into(), Default::default())];
    cfg.hooks.on_failure = vec![Hook::Local("notify".into())];
    let plan = deploy_plan(&cfg, 0, &release(), &[], &lock());
    let phases = |steps: &[Step]| -> Vec<&str> { steps.iter().map(|step| step.phase.as_str()).collect() };
    // The build and its checks that need no server come before the preflight takes the lock.
    assert_eq!(phases(&plan.build), ["build", "package"]);
    assert_eq!(plan.build[1].action, Action::Package);
    assert_eq!(
        phases(&plan.steps),
        ["check", "before_update", "push", "prepare", "after_update", "publish", "after_publish"]
    );
    assert_eq!(plan.steps[0].action, Action::CheckBinaries);
    assert_eq!(plan.on_failure, vec![Step::new(Phase::OnFailure, Action::Local("notify".into()))]);
    let preflight = &plan.preflight.text;
    assert!(preflight.contains("token=t0k3n"));
    let (taken, released) =
        (preflight.find("mkdir -m 700 \"$state/lock\"").unwrap(), preflight.rfind("\n  release_lock\n").unwrap());
    let release_lock = preflight.find("release_lock() {").unwrap();
    assert!(preflight[release_lock..].find("\n  drop_lock\n").is_some(), "release_lock drops the lock");
    let waits = preflight.find("while read -r line; do").unwrap();
    // Released by `end_deploy`, which runs once the loop over the channel's lines is over.
    let (ending, ends) = (preflight.find("end_deploy() {").unwrap(), preflight.rfind("\nend_deploy").unwrap());
    assert!(taken < waits && waits < ends, "the lock is held while the channel is open");
    assert!(ending < released && released < waits, "end_deploy releases the lock");
    // Or until the confirmation, which releases it once the deploy is done.
    let confirm = preflight.find("confirm_deploy() {").unwrap();
    let confirmed = preflight[confirm..].find("echo \"$answer_confirmed\"").unwrap() + confirm;
    assert!(preflight.contains("\nanswer_confirmed=@@xtask-deploy-confirmed\n"));
    let early = preflight.find("then drop_lock").unwrap();
    assert!(early == released || (confirm < early && early < confirmed), "the lock goes only at the end or confirmed");
    // Pruning waits for the confirmation, in the keeper: until then the server may go back.
    assert!(preflight.contains("\nkeep_releases=2\n"));
    let Action::Remote(publish) = &plan.steps[5].action else { panic!("publish is remote") };
    assert!(!publish.text.contains("rm -rf"), "{}", publish.text);
}
