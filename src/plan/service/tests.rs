use expect_test::expect;

use crate::config::ServiceScope;

use super::root::*;
use super::unit::*;
use super::*;
use crate::plan::{deploy_plan, restarts, tests::lock, tests::release, Phase};

fn config_with(services: serde_json::Value) -> Config {
    let metadata = serde_json::json!({ "deploy": {
        "deploy_to": "/srv/my app",
        "servers": [{ "host": "a", "user": "deploy", "roles": ["web"] }, { "host": "b", "user": "deploy", "roles": ["worker"] }],
        "hooks": { "after_publish": [{ "remote": "touch restarted" }] },
        "services": services,
    }});
    let defaults = crate::config::Defaults { package_name: Some("shop".into()), ..crate::config::Defaults::from_env(None, None) };
    Config::from_metadata(&metadata, "package.metadata", std::path::Path::new("/app/Cargo.toml"), &defaults).unwrap()
}

fn two_services() -> Config {
    config_with(serde_json::json!({
        "web": {
            "command": "target/release/shop --port 8080 --greeting 'hello world' --cost 100%",
            "listen": ["127.0.0.1:8080", "[::1]:8080"],
            "env": { "RUST_LOG": "info", "PRICE": "$5" },
            "roles": ["web"],
            "notify": true,
        },
        "worker": { "command": "/usr/bin/env shop-worker", "scope": "system", "stop_timeout": 5, "roles": ["worker"] },
    }))
}

#[test]
fn a_listening_service_gets_a_socket_unit_and_starts_through_current() {
    let config = two_services();
    let files = unit_files(&config, 0);
    let names: Vec<&str> = files.iter().map(|file| file.name.as_str()).collect();
    assert_eq!(names, ["web.service", "web.socket"], "server a runs only `web` (roles)");
    expect![[r##"
        # Written by xtask-deploy for `shop` in `/srv/my app`: `cargo xtask deploy-setup` and deploys rewrite it.
        [Unit]
        Description=shop: web
        StartLimitIntervalSec=0

        [Service]
        Type=notify
        WorkingDirectory=/srv/my app/current
        ExecStart=/bin/sh -c "set -a; [ ! -r \"$$0\" ] || . \"$$0\"; set +a; exec \"$$@\"" "/srv/my app/shared/.secrets.env" "/srv/my app/current/target/release/shop" --port 8080 --greeting "hello world" --cost 100%%
        Environment=PRICE=$5
        Environment=RUST_LOG=info
        Restart=on-failure
        RestartSec=1
        TimeoutStopSec=30

        [Install]
        WantedBy=default.target"##]]
    .assert_eq(&files[0].text);
    expect![[r#"
        # Written by xtask-deploy for `shop` in `/srv/my app`: `cargo xtask deploy-setup` and deploys rewrite it.
        [Unit]
        Description=shop: web's listeners

        [Socket]
        ListenStream=127.0.0.1:8080
        ListenStream=[::1]:8080

        [Install]
        WantedBy=sockets.target"#]]
    .assert_eq(&files[1].text);
}

#[test]
fn a_system_service_runs_as_the_deploy_user_and_an_absolute_program_stays_as_written() {
    let config = two_services();
    let files = unit_files(&config, 1);
    assert_eq!(files.len(), 1, "no socket without `listen`");
    assert_eq!(files[0].scope, ServiceScope::System);
    let text = &files[0].text;
    assert!(text.contains(" /usr/bin/env shop-worker\n"), "{text}");
    assert!(text.contains("\nUser=deploy\n") && text.contains("\nWantedBy=multi-user.target"), "{text}");
    assert!(text.contains("\nType=exec\n") && text.contains("\nTimeoutStopSec=5\n"), "{text}");
}

#[test]
fn unit_words_are_quoted_as_systemd_reads_them() {
    assert_eq!(unit_word("plain"), "plain");
    assert_eq!(unit_word("two words"), "\"two words\"");
    assert_eq!(unit_word(r#"say "hi" \o/"#), r#""say \"hi\" \\o/""#);
    assert_eq!(unit_word("100%"), "100%%");
    assert_eq!(unit_word("$HOME"), "$$HOME");
    assert_eq!(unit_word(""), "\"\"");
    assert_eq!(unit_word("a;b"), "\"a;b\"");
}

#[test]
fn going_back_restarts_the_services_before_the_hooks() {
    let config = two_services();
    let what: Vec<String> = restarts(&config, 0).into_iter().map(|restart| restart.what).collect();
    assert_eq!(what, ["the services' restart", "touch restarted"]);
    let without = config_without_services();
    let what: Vec<String> = restarts(&without, 0).into_iter().map(|restart| restart.what).collect();
    assert_eq!(what, ["touch restarted"], "without services, going back runs the hooks as before");
}

fn config_without_services() -> Config {
    config_with(serde_json::json!({}))
}

#[test]
fn units_are_written_before_the_switch_and_the_services_restart_right_after_it() {
    let config = two_services();
    for server in [0, 1] {
        let plan = deploy_plan(&config.on(&config.servers[server]), server, &release(), &[], &lock());
        let phases: Vec<Phase> = plan.steps.iter().map(|step| step.phase).collect();
        assert_eq!(
            phases,
            [Phase::Push, Phase::Prepare, Phase::Units, Phase::Publish, Phase::Restart, Phase::AfterPublish],
            "every server's plan has the same steps"
        );
    }
    let only_web = config_with(serde_json::json!({ "web": { "command": "app", "roles": ["web"] } }));
    let plan = deploy_plan(&only_web.on(&only_web.servers[1]), 1, &release(), &[], &lock());
    let skipped: Vec<Phase> = plan.steps.iter().filter(|step| !step.on_this_server).map(|step| step.phase).collect();
    assert_eq!(skipped, [Phase::Units, Phase::Restart], "a server that runs no service skips both");
    let plain = deploy_plan(&config_without_services(), 0, &release(), &[], &lock());
    assert!(!plain.steps.iter().any(|step| matches!(step.phase, Phase::Units | Phase::Restart)), "a stage without services deploys as before");
}

#[test]
fn the_scripts_carry_their_values_in_a_quoted_header_and_no_comment() {
    let config = two_services();
    let units = units_script(&config, 0, UnitsMode::Verify).text;
    assert!(
        units.starts_with("d='/srv/my app'\napp=shop\nuser=deploy\nmode=verify\nset -- user web.service '# Written"),
        "{units}"
    );
    let restart = restart_command(&config, 0, RestartMode::Restore).unwrap();
    assert!(restart.starts_with("d='/srv/my app'\napp=shop\nuser=deploy\nmode=restore\nset --\nservices=web:user:socket\nsystem_services=''\nsettle=10\n"), "{restart}");
    assert!(!restart.lines().any(|line| line.trim_start().starts_with('#')), "comments are not sent");
    assert!(sudoers_file("my.app", "deploy").starts_with("xtask-deploy-my_app-deploy-"), "sudo skips files whose name has a dot");
    assert!(!sudoers_file("my.app", "deploy").contains('.'));
    assert_ne!(sudoers_file("my.app", "deploy"), sudoers_file("my_app", "deploy"), "no two apps share a rule's file");
    assert_ne!(sudoers_file("shop", "api-deploy"), sudoers_file("shop-api", "deploy"));
}

#[test]
fn roots_steps_are_made_here_from_the_config_whatever_the_server_says() {
    let config = two_services();
    // The server names a unit that is not the app's and one that is: only the app's count.
    let files = unit_files(&config, 1);
    let report = UnitsReport::parse("unit-differs ../../etc/passwd\nunit-differs worker.service\nsudo-missing worker.service\n", &files);
    assert_eq!(report.differs, ["worker.service"]);
    let problems = report.problems(&config, 1);
    assert_eq!(problems.len(), 1, "{problems:?}");
    let steps = problems[0].split_once(":\n").unwrap().1;
    expect![[r#"
        set -e
        test -x /usr/bin/systemctl
        if [ -e /etc/systemd/system/worker.service ] && [ "$(head -c 54 /etc/systemd/system/worker.service)" != '# Written by xtask-deploy for `shop` in `/srv/my app`:' ]; then echo '/etc/systemd/system/worker.service is not a unit of this app: left alone' >&2; exit 1; fi
        cat > /etc/systemd/system/worker.service <<'XTASK_DEPLOY_UNIT'
        # Written by xtask-deploy for `shop` in `/srv/my app`: root installs it from the steps `cargo xtask deploy-setup` prints.
        [Unit]
        Description=shop: worker
        StartLimitIntervalSec=0

        [Service]
        Type=exec
        WorkingDirectory=/srv/my app/current
        ExecStart=/bin/sh -c "set -a; [ ! -r \"$$0\" ] || . \"$$0\"; set +a; exec \"$$@\"" "/srv/my app/shared/.secrets.env" /usr/bin/env shop-worker
        Restart=on-failure
        RestartSec=1
        TimeoutStopSec=5
        User=deploy

        [Install]
        WantedBy=multi-user.target
        XTASK_DEPLOY_UNIT
        /usr/bin/systemctl daemon-reload
        /usr/bin/systemctl enable worker.service
        printf '%s\n' 'deploy ALL=(root) NOPASSWD: /usr/bin/systemctl restart worker.service' > /etc/sudoers.d/xtask-deploy-shop-deploy-81559d2d.new
        visudo -cf /etc/sudoers.d/xtask-deploy-shop-deploy-81559d2d.new && chmod 0440 /etc/sudoers.d/xtask-deploy-shop-deploy-81559d2d.new && mv /etc/sudoers.d/xtask-deploy-shop-deploy-81559d2d.new /etc/sudoers.d/xtask-deploy-shop-deploy-81559d2d"#]]
    .assert_eq(steps);
}

#[test]
fn linger_and_foreign_units_are_named_with_the_fix() {
    let config = two_services();
    let files = unit_files(&config, 0);
    let report = UnitsReport::parse("linger-off\nunit-foreign web.socket\nstale web.service\n", &files);
    let problems = report.problems(&config, 0).join("\n");
    assert!(problems.contains("as root run `loginctl enable-linger deploy`"), "{problems}");
    assert!(problems.contains("a unit `web.socket` is there and is not one of `shop`'s"), "{problems}");
    assert_eq!(report.stale, ["web.service"], "a unit a deploy rewrites is no problem");
}

#[test]
fn going_back_runs_what_the_deploy_kept_on_the_server_not_a_long_command_line() {
    assert!(RESTORE_FILE.starts_with(&format!("{STATE_DIR}/")), "the file lives in the private state directory");
    let config = two_services();
    let lock = crate::plan::tests::lock();
    let with = crate::plan::keeper_script(&config, &lock, &crate::plan::restarts(&config, 0), None, None);
    let without = crate::plan::keeper_script(&config, &lock, &[], None, None);
    // The keeper's command line carries a line for the services, whatever they are, and one for
    // the `after_publish` hook.
    assert!(with.text.len() - without.text.len() < 1024, "{} more bytes", with.text.len() - without.text.len());
    let verify = units_script(&config, 0, UnitsMode::Verify).text;
    assert!(verify.contains(&format!("> \"$d/{RESTORE_FILE}.pending\"")), "the step before the switch leaves it");
    let apply = restart_command(&config, 0, RestartMode::Apply).unwrap();
    assert!(apply.contains(&format!("mv -f \"$d/{RESTORE_FILE}.pending\" \"$d/{RESTORE_FILE}\"")), "the restart puts it in force");
    assert!(!units_script(&config, 0, UnitsMode::Check).text.contains(RESTORE_FILE), "deploy-check writes nothing");
}
