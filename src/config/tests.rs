use std::time::Duration;

use super::*;

fn defaults() -> Defaults {
    Defaults {
        package_name: Some("hello".to_string()),
        user: Some("alice".to_string()),
        home: Some(PathBuf::from("/home/alice")),
        env_auth: EnvAuth::default(),
        ssh_config: None,
        stage: None,
        target_dir: None,
    }
}

/// Parses `[package.metadata]` written as TOML, the way cargo would hand it over.
fn parse(toml_text: &str) -> Result<Config, Error> {
    parse_with(toml_text, &defaults())
}

fn parse_with(toml_text: &str, defaults: &Defaults) -> Result<Config, Error> {
    let metadata: serde_json::Value = toml::from_str(toml_text).expect("test TOML is valid");
    Config::from_metadata(&metadata, "package.metadata", Path::new("/app/Cargo.toml"), defaults)
}

fn error_text(toml_text: &str) -> String {
    parse(toml_text).expect_err("config should be rejected").to_string()
}

#[test]
fn minimal_config_gets_documented_defaults() {
    let config = parse("[[deploy.servers]]\nhost = \"203.0.113.7\"\n").unwrap();
    assert_eq!(config.application, "hello");
    assert_eq!(config.deploy_to, "/var/www/hello");
    assert_eq!(config.keep_releases, 5);
    assert_eq!(config.revision, "HEAD");
    assert!(config.build.is_empty());
    assert!(config.submodules);
    assert_eq!(config.cache, Cache::Archive);
    assert_eq!(config.reuse, Reuse::Link);
    assert_eq!(
        config.servers,
        vec![Server {
            host: "203.0.113.7".into(),
            port: 22,
            user: "alice".into(),
            deploy_to: "/var/www/hello".into(),
            roles: vec![],
            alias: "203.0.113.7".into(),
            identity: None,
            gateway: None,
        }]
    );
    assert_eq!(config.ssh.identity, None);
    assert_eq!(config.ssh.known_hosts, PathBuf::from("/home/alice/.ssh/known_hosts"));
    assert_eq!(config.ssh.host_key_policy, HostKeyPolicy::Strict);
    assert_eq!(config.transport, TransportKind::Daemon);
    assert_eq!(config.timeouts.connect, Duration::from_secs(10));
    assert_eq!(config.timeouts.step, Duration::from_secs(600));
    assert_eq!(config.timeouts.push, Duration::from_secs(900));
}

#[test]
fn full_config_is_taken_as_written() {
    let config = parse(
        r#"
        [deploy]
        application = "web"
        deploy_to = "/srv/hello/"
        keep_releases = 3
        revision = "v1.2"
        build = ["cargo build --release --locked"]
        submodules = false
        linked_files = ["config/database.yml"]
        linked_dirs = ["log"]
        artifacts = ["target/release/hello"]
        cache = "cached-copy"
        reuse = "off"
        transport = "exec"
        [deploy.hooks]
        before_update = [{ local = "cargo test" }]
        after_update = [{ remote = "./bin/migrate" }]
        [[deploy.servers]]
        host = "a.example"
        port = 2222
        user = "deploy"
        [deploy.ssh]
        identity = "~/.ssh/id_ed25519"
        known_hosts = "keys/known_hosts"
        host_key_policy = "accept-new"
        [deploy.timeouts]
        connect = 3
        step = 60
        push = 120
        "#,
    )
    .unwrap();
    assert_eq!(config.application, "web");
    assert_eq!(config.deploy_to, "/srv/hello");
    assert_eq!(config.keep_releases, 3);
    assert_eq!(config.revision, "v1.2");
    assert_eq!(config.build, vec!["cargo build --release --locked".to_string()]);
    assert!(!config.submodules);
    assert_eq!(config.linked_files, vec!["config/database.yml".to_string()]);
    assert_eq!(config.linked_dirs, vec!["log".to_string()]);
    assert_eq!(config.artifacts, vec!["target/release/hello".to_string()]);
    assert_eq!(config.cache, Cache::CachedCopy);
    assert_eq!(config.reuse, Reuse::Off);
    assert_eq!(config.hooks.before_update, vec![Hook::Local("cargo test".into())]);
    assert_eq!(config.hooks.after_update, vec![Hook::Remote("./bin/migrate".into(), Scope::default())]);
    assert_eq!(config.servers[0].display_name(), "deploy@a.example:2222");
    assert_eq!(config.ssh.identity, Some(PathBuf::from("/home/alice/.ssh/id_ed25519")));
    assert_eq!(config.ssh.known_hosts, PathBuf::from("/app/keys/known_hosts"));
    assert_eq!(config.ssh.host_key_policy, HostKeyPolicy::AcceptNew);
    assert_eq!(config.transport, TransportKind::Exec);
    assert_eq!(
        config.timeouts,
        Timeouts {
            connect: Duration::from_secs(3),
            step: Duration::from_secs(60),
            push: Duration::from_secs(120),
            confirm: None,
            silence: Duration::from_secs(20),
        }
    );
}

#[test]
fn artifacts_under_target_are_read_from_cargos_target_directory() {
    let text = "[deploy]\nartifacts = [\"target/release/app\"]\n[[deploy.servers]]\nhost = \"a\"\n";
    let beside = parse(text).unwrap();
    assert_eq!(beside.target_dir, PathBuf::from("/app/target"), "without cargo's word: beside the manifest");
    let moved = parse_with(text, &Defaults { target_dir: Some("/cache/target".into()), ..defaults() }).unwrap();
    for (path, source) in [
        ("target/release/app", "/cache/target/release/app"),
        ("target", "/cache/target"),
        ("targets/app", "/app/targets/app"),
        ("dist/target/app", "/app/dist/target/app"),
    ] {
        assert_eq!(moved.artifact_source(path), PathBuf::from(source), "{path}");
    }
}

#[test]
fn mistyped_key_is_named_with_its_path_and_the_file() {
    let text = error_text("[deploy]\nkeep_release = 3\n[[deploy.servers]]\nhost = \"a\"\n");
    assert!(text.contains("/app/Cargo.toml"), "{text}");
    assert!(text.contains("unknown field `keep_release`"), "{text}");
    assert!(text.contains("expected one of"), "{text}");
    let text = error_text("[[deploy.servers]]\nhost = \"a\"\nprot = 22\n");
    assert!(text.contains("`package.metadata.deploy.servers[0]"), "{text}");
    assert!(text.contains("unknown field `prot`"), "{text}");
}

#[test]
fn a_misspelt_key_or_table_is_named_with_the_one_meant() {
    for (text, expected) in [
        ("[deploy]\nkeep_release = 3\n", "unknown field `keep_release`: did you mean `keep_releases`? expected"),
        ("[deploy]\ndefault_stag = \"a\"\n", "did you mean `default_stage`?"),
        (
            "[deploy.ssh]\nknown-hosts = \"k\"\n",
            "`package.metadata.deploy.ssh.known-hosts`: unknown field \
          `known-hosts`: did you mean `known_hosts`?",
        ),
        (
            "[deploy.stages.qa]\nrevison = \"v1\"\n",
            "`package.metadata.deploy.stages.qa.revison`: unknown field \
          `revison`: did you mean `revision`?",
        ),
    ] {
        let text = error_text(&format!("{text}[[deploy.servers]]\nhost = \"a\"\n"));
        assert!(text.contains(expected), "{text}");
    }
    let far = error_text("[deploy]\nstage_dir = 3\n[[deploy.servers]]\nhost = \"a\"\n");
    assert!(!far.contains("did you mean"), "nothing near: {far}");
    let nested = error_text("[deploy.ssh]\nstages = 1\n[[deploy.servers]]\nhost = \"a\"\n");
    assert!(!nested.contains("did you mean `stages`"), "`stages` is known at the top only: {nested}");
    for table in ["deploys", "deploy_", "Deploy", "depoly"] {
        let servers = format!("[[{table}.servers]]\nhost = \"a\"\n");
        let alone = parse(&servers).unwrap_err();
        assert_eq!(alone.exit_code(), crate::exit::CONFIG);
        let alone = alone.to_string();
        assert!(alone.contains("no `[package.metadata.deploy]` table in `/app/Cargo.toml`"), "{alone}");
        assert!(alone.contains(&format!("a `[package.metadata.{table}]`: did you mean")), "{alone}");
        let beside = error_text(&format!("[deploy]\n[[deploy.servers]]\nhost = \"b\"\n{servers}"));
        assert!(beside.contains("/app/Cargo.toml"), "{beside}");
        assert!(
            beside.contains(&format!(
                "`[package.metadata.{table}]` is not read: did you mean `[package.metadata.deploy]`"
            )),
            "{beside}"
        );
    }
    parse("[deployment]\nx = 1\n[deb]\ny = 2\n[deploy]\n[[deploy.servers]]\nhost = \"a\"\n")
        .expect("other tools' tables are not ours to judge");
}

#[test]
fn wrong_type_names_key_and_expected_type() {
    let text = error_text("[[deploy.servers]]\nhost = \"a\"\nport = \"22\"\n");
    assert!(text.contains("`package.metadata.deploy.servers[0].port`"), "{text}");
    assert!(text.contains("expected u16"), "{text}");
    let text = error_text("[deploy]\nkeep_releases = -1\n[[deploy.servers]]\nhost = \"a\"\n");
    assert!(text.contains("`package.metadata.deploy.keep_releases`"), "{text}");
}

#[test]
fn a_port_written_into_the_host_is_named() {
    let text = error_text("[deploy]\ndeploy_to = \"/srv/x\"\n[[deploy.servers]]\nhost = \"127.0.0.1:2222\"\n");
    assert!(text.contains("write `host = \"127.0.0.1\"` and `port = 2222`"), "{text}");
    // An IPv6 address is a host.
    let v6 = parse("[deploy]\ndeploy_to = \"/srv/x\"\n[[deploy.servers]]\nhost = \"::1\"\n");
    assert!(v6.is_ok(), "{v6:?}");
}

#[test]
fn missing_servers_and_missing_table_are_explained() {
    let text = error_text("[deploy]\ndeploy_to = \"/srv/x\"\n");
    assert!(text.contains("no servers"), "{text}");
    assert!(text.contains("[[package.metadata.deploy.servers]]"), "{text}");
    let text = error_text("[other]\nx = 1\n");
    assert!(text.contains("no `[package.metadata.deploy]` table"), "{text}");
    // Run from another package's directory (an xtask's), or with the table in the
    // workspace's metadata: both are named.
    assert!(text.contains("`--manifest-path`") && text.contains("[workspace.metadata.deploy]"), "{text}");
}

#[test]
fn bad_values_are_refused() {
    let relative = error_text("[deploy]\ndeploy_to = \"srv/x\"\n[[deploy.servers]]\nhost = \"a\"\n");
    assert!(relative.contains("must be an absolute path"), "{relative}");
    let root = error_text("[deploy]\ndeploy_to = \"/\"\n[[deploy.servers]]\nhost = \"a\"\n");
    assert!(root.contains("must not be `/`"), "{root}");
    let zero = error_text("[deploy]\nkeep_releases = 0\n[[deploy.servers]]\nhost = \"a\"\n");
    assert!(zero.contains("at least 1"), "{zero}");
    let empty_host = error_text("[[deploy.servers]]\nhost = \" \"\n");
    assert!(empty_host.contains("servers[0].host` is empty"), "{empty_host}");
    let escape = error_text("[deploy]\nlinked_files = [\"../../etc/passwd\"]\n[[deploy.servers]]\nhost = \"a\"\n");
    assert!(escape.contains("`package.metadata.deploy.linked_files` holds `../../etc/passwd`"), "{escape}");
    let overlap = error_text(
        "[deploy]\nlinked_dirs = [\"config\"]\nlinked_files = [\"config/database.yml\"]\n[[deploy.servers]]\nhost = \"a\"\n",
    );
    assert!(
        overlap.contains(
            "`package.metadata.deploy.linked_dirs` holds `config` and `linked_files` holds `config/database.yml`"
        ),
        "{overlap}"
    );
    let cache = error_text("[deploy]\ncache = \"copy\"\n[[deploy.servers]]\nhost = \"a\"\n");
    assert!(cache.contains("expected `archive`"), "{cache}");
    let reuse = error_text("[deploy]\nreuse = \"hardlink\"\n[[deploy.servers]]\nhost = \"a\"\n");
    assert!(
        reuse.contains("`package.metadata.deploy.reuse` is `hardlink`: expected `link` (unchanged files hard-linked"),
        "{reuse}"
    );
    assert!(reuse.contains("or `off` (every release extracted whole, files writable)"), "{reuse}");
    let hook = error_text(
        "[deploy.hooks]\nbefore_update = [{ local = \"a\", remote = \"b\" }]\n[[deploy.servers]]\nhost = \"a\"\n",
    );
    assert!(hook.contains("hooks.before_update[0]` must have exactly one"), "{hook}");
    let transport = error_text("[deploy]\ntransport = \"ssh\"\n[[deploy.servers]]\nhost = \"a\"\n");
    assert!(transport.contains("`package.metadata.deploy.transport` is `ssh`: expected `daemon`"), "{transport}");
    let policy = error_text("[deploy.ssh]\nhost_key_policy = \"no\"\n[[deploy.servers]]\nhost = \"a\"\n");
    assert!(policy.contains("`package.metadata.deploy.ssh.host_key_policy` is `no`"), "{policy}");
    let timeout = error_text("[deploy.timeouts]\nstep = 0\n[[deploy.servers]]\nhost = \"a\"\n");
    assert!(timeout.contains("`package.metadata.deploy.timeouts.step` is 0"), "{timeout}");
    let confirm = error_text("[deploy.timeouts]\nconfirm = 0\n[[deploy.servers]]\nhost = \"a\"\n");
    assert!(confirm.contains("`package.metadata.deploy.timeouts.confirm` is 0"), "{confirm}");
    let silence = error_text("[deploy.timeouts]\nsilence = 2\n[[deploy.servers]]\nhost = \"a\"\n");
    assert!(silence.contains("`package.metadata.deploy.timeouts.silence` is 2: give at least 5 seconds"), "{silence}");
}

#[test]
fn the_servers_own_deadline_and_the_silence_they_allow_are_read_or_left_to_their_defaults() {
    let config = parse("[deploy.timeouts]\nconfirm = 90\nsilence = 12\n[[deploy.servers]]\nhost = \"a\"\n").unwrap();
    assert_eq!(
        (config.timeouts.confirm, config.timeouts.silence),
        (Some(Duration::from_secs(90)), Duration::from_secs(12))
    );
    let config = parse("[[deploy.servers]]\nhost = \"a\"\n").unwrap();
    assert_eq!((config.timeouts.confirm, config.timeouts.silence), (None, Duration::from_secs(20)));
}

/// The `[package]` metadata of a whole manifest's text.
fn metadata_of(manifest: &str) -> serde_json::Value {
    let manifest: serde_json::Value = toml::from_str(manifest).expect("manifest is valid TOML");
    manifest["package"]["metadata"].clone()
}

/// The TOML block after `<!-- marker` in a page of the docs.
fn toml_block<'a>(page: &'a str, marker: &str) -> &'a str {
    let example = &page[page.find(&format!("<!-- {marker}")).unwrap_or_else(|| panic!("no `{marker}`"))..];
    let body = &example[example.find("```toml\n").unwrap() + 8..];
    &body[..body.find("```").unwrap()]
}

#[test]
fn the_guides_config_example_parses_as_documented() {
    let body = toml_block(include_str!("../../docs/configuration.md"), "config-example");
    let config =
        Config::from_metadata(&metadata_of(body), "package.metadata", Path::new("/app/Cargo.toml"), &defaults())
            .unwrap();
    assert_eq!(config.application, "hello");
    assert_eq!(config.deploy_to, "/srv/hello");
    assert_eq!(config.build, vec!["cargo build --release --locked".to_string()]);
    assert_eq!(config.servers[0].display_name(), "deploy@203.0.113.7:22");
    assert_eq!(config.ssh.identity, Some(PathBuf::from("/home/alice/.ssh/id_ed25519")));
    assert_eq!(config.stage.as_deref(), Some("production"));
    assert_eq!(config.servers[0].roles, ["app", "db"]);
    let gateway = config.servers[0].gateway.as_ref().expect("the example's gateway");
    assert_eq!(gateway.display_name(), "jump@bastion.example.com:22");
    assert_eq!(gateway.identity, Some(PathBuf::from("/home/alice/.ssh/bastion")));
    let healthcheck = config.healthcheck.as_ref().expect("the example's health check");
    assert_eq!(healthcheck.command, "curl -fsS http://127.0.0.1:8080/up");
    assert_eq!((healthcheck.timeout, healthcheck.interval), (Duration::from_secs(30), Duration::from_secs(1)));
    assert_eq!(healthcheck.scope.roles, ["app"]);
    assert_eq!(config.canary, 0);
    let staging = Config::from_metadata(
        &metadata_of(body),
        "package.metadata",
        Path::new("/app/Cargo.toml"),
        &Defaults { stage: Some("staging".into()), ..defaults() },
    )
    .unwrap();
    assert_eq!(staging.servers[0].host, "staging.example.com");
    assert_eq!(staging.servers[0].deploy_to, "/srv/hello-staging");
}

#[test]
fn the_readmes_minimal_config_parses_and_runs_a_service_behind_a_socket() {
    let body = toml_block(include_str!("../../README.md"), "minimal-config");
    let manifest = format!("[package]\nname = \"hello\"\n{body}");
    let config =
        Config::from_metadata(&metadata_of(&manifest), "package.metadata", Path::new("/app/Cargo.toml"), &defaults())
            .unwrap();
    assert_eq!((config.application.as_str(), config.deploy_to.as_str()), ("hello", "/srv/hello"));
    assert_eq!(config.servers[0].display_name(), "deploy@203.0.113.7:22");
    assert_eq!(config.services.len(), 1, "the example runs one service");
    assert_eq!(config.services[0].listen.len(), 1, "behind a socket systemd holds");
    assert!(config.healthcheck.is_some());
}

#[test]
fn this_repository_deploys_to_its_vagrant_vm() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let config = Config::from_metadata(
        &metadata_of(include_str!("../../Cargo.toml")),
        "package.metadata",
        &manifest,
        &defaults(),
    )
    .unwrap();
    assert_eq!(config.servers[0].host, "192.168.56.10");
    assert_eq!(config.servers[0].user, "vagrant");
    assert!(config.ssh.identity.unwrap().ends_with(".vagrant/machines/default/virtualbox/private_key"));
}

#[test]
fn workspace_section_is_named_in_errors() {
    let metadata: serde_json::Value = toml::from_str("[deploy]\nx = 1\n").unwrap();
    let err = Config::from_metadata(&metadata, "workspace.metadata", Path::new("/w/Cargo.toml"), &defaults())
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `x`"), "{err}");
}

#[test]
fn a_key_from_the_environment_never_shows_in_debug_output() {
    let mut defaults = defaults();
    defaults.env_auth.key = Some(Secret::new("-----BEGIN KEY-----\nc2VjcmV0LWtleS1ib2R5\n".to_string()));
    let config = parse_with("[deploy]\n[[deploy.servers]]\nhost = \"a\"\n", &defaults).unwrap();
    assert_eq!(config.ssh.env.key.as_ref().map(Secret::expose), Some("-----BEGIN KEY-----\nc2VjcmV0LWtleS1ib2R5\n"));
    let shown = format!("{config:?} {config:#?}");
    assert!(!shown.contains("c2VjcmV0LWtleS1ib2R5"), "{shown}");
    assert!(shown.contains("<redacted>"));
}

#[test]
fn a_server_may_have_its_own_deploy_to() {
    let config = parse(
        "[deploy]\ndeploy_to = \"/srv/a\"\n[[deploy.servers]]\nhost = \"a\"\n[[deploy.servers]]\nhost = \"b\"\ndeploy_to = \"/opt/b/\"\n",
    )
    .unwrap();
    assert_eq!(config.servers[0].deploy_to, "/srv/a");
    assert_eq!(config.servers[1].deploy_to, "/opt/b");
    assert_eq!(config.on(&config.servers[1]).deploy_to, "/opt/b");
    let err = parse("[deploy]\n[[deploy.servers]]\nhost = \"a\"\ndeploy_to = \"rel\"\n").unwrap_err();
    assert!(
        err.to_string().contains("`package.metadata.deploy.servers[0].deploy_to` must be an absolute path"),
        "{err}"
    );
}

const STAGED: &str = r#"
    [deploy]
    deploy_to = "/srv/hello"
    default_stage = "staging"
    [deploy.ssh]
    known_hosts = "keys/known_hosts"
    [[deploy.servers]]
    host = "localhost"
    [deploy.stages.staging]
    keep_releases = 2
    [[deploy.stages.staging.servers]]
    host = "staging.example"
    [deploy.stages.production]
    deploy_to = "/srv/prod"
    ssh = { identity = "~/.ssh/prod" }
    [[deploy.stages.production.servers]]
    host = "web1.example"
    roles = ["app", "web"]
    [[deploy.stages.production.servers]]
    host = "db1.example"
    roles = ["app", "db"]
"#;

fn stage(name: Option<&str>) -> Result<Config, Error> {
    parse_with(STAGED, &Defaults { stage: name.map(str::to_string), ..defaults() })
}

#[test]
fn a_stage_overrides_top_level_keys_and_merges_tables() {
    let staging = stage(None).unwrap();
    assert_eq!(staging.stage.as_deref(), Some("staging"), "the default stage");
    assert_eq!(staging.keep_releases, 2);
    assert_eq!(staging.deploy_to, "/srv/hello", "kept from the top level");
    assert_eq!(staging.servers.iter().map(|s| s.host.as_str()).collect::<Vec<_>>(), ["staging.example"]);
    let production = stage(Some("production")).unwrap();
    assert_eq!(production.deploy_to, "/srv/prod");
    assert_eq!(production.keep_releases, 5);
    assert_eq!(production.servers.len(), 2, "the stage's list replaces the top-level one");
    assert_eq!(production.servers[1].roles, ["app", "db"]);
    assert_eq!(production.servers[1].deploy_to, "/srv/prod");
    assert_eq!(production.ssh.identity, Some(PathBuf::from("/home/alice/.ssh/prod")));
    assert_eq!(production.ssh.known_hosts, PathBuf::from("/app/keys/known_hosts"), "merged, not replaced");
}

#[test]
fn unknown_or_missing_stages_are_explained() {
    let unknown = stage(Some("prod")).unwrap_err().to_string();
    assert!(unknown.contains("unknown stage `prod`: known stages are `production`, `staging`"), "{unknown}");
    let typo = stage(Some("prodution")).unwrap_err();
    assert_eq!(typo.exit_code(), crate::exit::CONFIG);
    assert!(typo.to_string().contains("unknown stage `prodution`: did you mean `production`?"), "{typo}");
    let default = parse(&STAGED.replace("default_stage = \"staging\"", "default_stage = \"stagign\""));
    let default = default.unwrap_err().to_string();
    assert!(default.contains("unknown stage `stagign` (`default_stage`): did you mean `staging`?"), "{default}");
    let no_default = parse(&STAGED.replace("default_stage = \"staging\"", "")).unwrap_err().to_string();
    assert!(no_default.contains("name a stage with `--stage <name>`"), "{no_default}");
    assert!(no_default.contains("`production`, `staging`"), "{no_default}");
    let none =
        parse_with("[[deploy.servers]]\nhost = \"a\"\n", &Defaults { stage: Some("production".into()), ..defaults() })
            .unwrap_err()
            .to_string();
    assert!(none.contains("unknown stage `production`: there are no stages"), "{none}");
    let typo = parse(&format!("{STAGED}\n[deploy.stages.qa]\nkeep_release = 1\n")).unwrap_err().to_string();
    assert!(typo.contains("`package.metadata.deploy.stages.qa.keep_release`"), "a typo in any stage: {typo}");
}

#[test]
fn hooks_pick_servers_by_role_and_once() {
    let config = parse_with(
        &format!(
            "{STAGED}\n[deploy.hooks]\nafter_update = [{{ remote = \"./migrate\", roles = [\"app\"], once = true }}, \
             {{ remote = \"./warm\", roles = [\"web\"] }}]\n"
        ),
        &Defaults { stage: Some("production".into()), ..defaults() },
    )
    .unwrap();
    let [Hook::Remote(_, migrate), Hook::Remote(_, warm)] = &config.hooks.after_update[..] else {
        panic!("{:?}", config.hooks.after_update)
    };
    assert!(migrate.once);
    let runs = |scope: &Scope| runs_on(&config, scope);
    assert_eq!(runs(migrate), [true, false], "once: on the first server with the role");
    assert_eq!(runs(warm), [true, false]);
    assert_eq!(runs(&Scope::default()), [true, true]);
    let db_only = config.clone().select(&[], &["db".to_string()]).unwrap();
    assert_eq!(runs_on(&db_only, migrate), [true], "after `--roles db`, the first `app` server left is db1");
    let missing = error_text(
        "[deploy.hooks]\nafter_update = [{ remote = \"x\", roles = [\"db\"] }]\n[[deploy.servers]]\nhost = \"a\"\nroles = [\"app\"]\n",
    );
    assert!(missing.contains("runs on role `db`, which no server has"), "{missing}");
    assert!(missing.contains("roles in use: `app`"), "{missing}");
    let local = error_text(
        "[deploy.hooks]\nafter_update = [{ local = \"x\", once = true }]\n[[deploy.servers]]\nhost = \"a\"\n",
    );
    assert!(local.contains("`roles` and `once` pick servers for a `remote` hook"), "{local}");
    let bad_role = error_text("[[deploy.servers]]\nhost = \"a\"\nroles = [\"a b\"]\n");
    assert!(bad_role.contains("`package.metadata.deploy.servers[0].roles` holds `a b`"), "{bad_role}");
}

fn runs_on(config: &Config, scope: &Scope) -> Vec<bool> {
    (0..config.servers.len()).map(|i| scope.includes(&config.servers, i)).collect()
}

#[test]
fn hosts_and_roles_select_servers() {
    let production = stage(Some("production")).unwrap();
    let hosts = |names: &[&str], roles: &[&str]| {
        let owned = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        production
            .clone()
            .select(&owned(names), &owned(roles))
            .map(|config| config.servers.iter().map(|server| server.host.clone()).collect::<Vec<_>>())
    };
    assert_eq!(hosts(&[], &[]).unwrap(), ["web1.example", "db1.example"]);
    assert_eq!(hosts(&[], &["db"]).unwrap(), ["db1.example"]);
    assert_eq!(hosts(&["web1.example"], &["app"]).unwrap(), ["web1.example"]);
    let unknown = hosts(&["web2.example"], &[]).unwrap_err().to_string();
    assert!(unknown.contains("no server is `web2.example`"), "{unknown}");
    assert!(unknown.contains("`web1.example`, `db1.example`"), "{unknown}");
    let role = hosts(&[], &["cache"]).unwrap_err().to_string();
    assert!(role.contains("no server has role `cache`"), "{role}");
    assert!(role.contains("`app`, `db`, `web`"), "{role}");
    let neither = hosts(&["web1.example"], &["db"]).unwrap_err().to_string();
    assert!(neither.contains("no server has both"), "{neither}");
}

#[test]
fn ssh_config_fills_what_the_deploy_config_leaves_out() {
    let ssh_config = "Host web1\n  HostName 10.0.0.5\n  Port 2200\n  User deploy\n  IdentityFile /keys/web1\n\
                      Host db1\n  HostName 10.0.0.6\n  ProxyJump ops@bastion:2222\n\
                      Host bastion\n  HostName 203.0.113.9\n  IdentityFile /keys/bastion\n\
                      Host *\n  User nobody\n  Port 22\n";
    let defaults = Defaults { ssh_config: Some(SshConfig::parse(ssh_config, None)), ..defaults() };
    let config = parse_with(
        "[[deploy.servers]]\nhost = \"web1\"\n[[deploy.servers]]\nhost = \"web1\"\nport = 22\nuser = \"root\"\n\
         [[deploy.servers]]\nhost = \"db1\"\n",
        &defaults,
    )
    .unwrap();
    let web1 = &config.servers[0];
    assert_eq!((web1.host.as_str(), web1.port, web1.user.as_str()), ("10.0.0.5", 2200, "deploy"));
    assert_eq!(web1.alias, "web1");
    assert_eq!(web1.identity, Some(PathBuf::from("/keys/web1")));
    assert_eq!(web1.gateway, None);
    let explicit = &config.servers[1];
    assert_eq!((explicit.port, explicit.user.as_str()), (22, "root"), "the deploy config wins");
    let db1 = &config.servers[2];
    assert_eq!(db1.user, "nobody", "first match wins, as in OpenSSH");
    let jump = db1.gateway.as_ref().expect("ProxyJump is the gateway");
    assert_eq!((jump.host.as_str(), jump.port, jump.user.as_str()), ("203.0.113.9", 2222, "ops"));
    assert_eq!(jump.identity, Some(PathBuf::from("/keys/bastion")));
    let with_identity =
        parse_with("[deploy.ssh]\nidentity = \"/keys/mine\"\n[[deploy.servers]]\nhost = \"web1\"\n", &defaults)
            .unwrap();
    assert_eq!(with_identity.servers[0].identity, Some(PathBuf::from("/keys/mine")));
    let looping =
        Defaults { ssh_config: Some(SshConfig::parse("Host *\n  ProxyJump bastion\n", None)), ..defaults.clone() };
    let err = parse_with("[[deploy.servers]]\nhost = \"web1\"\n", &looping).unwrap_err().to_string();
    assert!(err.contains("more than 8 `ProxyJump` hosts"), "{err}");
    let bad_port = Defaults { ssh_config: Some(SshConfig::parse("Port ssh\n", None)), ..defaults.clone() };
    let err = parse_with("[[deploy.servers]]\nhost = \"web1\"\n", &bad_port).unwrap_err().to_string();
    assert!(err.contains("`package.metadata.deploy.servers[0].host` has `Port ssh` in `~/.ssh/config`"), "{err}");
}

#[test]
fn a_gateway_has_its_own_user_port_and_key() {
    let config = parse(
        "[deploy.ssh]\nidentity = \"/keys/app\"\n[deploy.gateway]\nhost = \"bastion\"\nport = 2222\nuser = \"jump\"\n\
         identity = \"/keys/jump\"\n[[deploy.servers]]\nhost = \"10.0.0.5\"\n",
    )
    .unwrap();
    let server = &config.servers[0];
    assert_eq!(server.identity, Some(PathBuf::from("/keys/app")));
    let gateway = server.gateway.as_ref().unwrap();
    assert_eq!(gateway.display_name(), "jump@bastion:2222");
    assert_eq!(gateway.identity, Some(PathBuf::from("/keys/jump")));
    let typo = error_text("[deploy.gateway]\nhost = \"b\"\nprot = 1\n[[deploy.servers]]\nhost = \"a\"\n");
    assert!(typo.contains("`package.metadata.deploy.gateway.prot`: unknown field `prot`"), "{typo}");
}

#[test]
fn a_gateway_list_and_a_proxy_jump_of_several_hops_make_one_chain() {
    // The config's own list: the first hop is reached first, each with its own user and port.
    let config = parse(
        "[[deploy.gateway]]\nhost = \"outer\"\nuser = \"a\"\n[[deploy.gateway]]\nhost = \"inner\"\nport = 2222\n\
         [[deploy.servers]]\nhost = \"10.0.0.5\"\n",
    )
    .unwrap();
    let last = config.servers[0].gateway.as_ref().expect("reached through the last hop");
    assert_eq!((last.host.as_str(), last.port), ("inner", 2222));
    let first = last.gateway.as_ref().expect("which is reached through the first");
    assert_eq!((first.host.as_str(), first.user.as_str(), first.gateway.is_none()), ("outer", "a", true));
    let typo = error_text("[[deploy.gateway]]\nhost = \"b\"\n[[deploy.gateway]]\nhost = \"c\"\nprot = 1\n[[deploy.servers]]\nhost = \"a\"\n");
    assert!(typo.contains("`package.metadata.deploy.gateway[1].prot`: unknown field `prot`"), "{typo}");
    let empty = error_text("[deploy]\ngateway = []\n[[deploy.servers]]\nhost = \"a\"\n");
    assert!(empty.contains("`package.metadata.deploy.gateway` is an empty list"), "{empty}");
    // `ProxyJump a,b` in `~/.ssh/config`: the same chain; `a` as its own `Host` block says.
    let ssh_config = "Host web1\n  ProxyJump ops@outer:2200,inner\nHost outer\n  HostName 203.0.113.9\n\
                      Host inner\n  ProxyJump never\n  User jump\n";
    let defaults = Defaults { ssh_config: Some(SshConfig::parse(ssh_config, None)), ..defaults() };
    let config = parse_with("[[deploy.servers]]\nhost = \"web1\"\n", &defaults).unwrap();
    let last = config.servers[0].gateway.as_ref().unwrap();
    assert_eq!(last.display_name(), "jump@inner:22", "the hop's own `ProxyJump` gives way to the list");
    let first = last.gateway.as_ref().unwrap();
    assert_eq!((first.display_name(), first.gateway.is_none()), ("ops@203.0.113.9:2200".to_string(), true));
}

#[test]
fn a_health_check_gets_its_defaults_and_bad_values_are_refused() {
    let config = parse(
        "[deploy]\ncanary = 2\n[deploy.healthcheck]\nremote = \"true\"\n\
         [[deploy.servers]]\nhost = \"h\"\n",
    )
    .unwrap();
    let healthcheck = config.healthcheck.unwrap();
    assert_eq!(healthcheck.timeout, Duration::from_secs(DEFAULT_HEALTH_TIMEOUT));
    assert_eq!(healthcheck.interval, Duration::from_secs(DEFAULT_HEALTH_INTERVAL));
    assert_eq!(config.canary, 2);
    for (table, expected) in [
        ("remote = \"\"", "`package.metadata.deploy.healthcheck.remote` is empty"),
        ("remote = \"true\"\ntimeout = 0", "`package.metadata.deploy.healthcheck.timeout` is 0"),
        ("remote = \"true\"\nroles = [\"web\"]", "runs on role `web`, which no server has"),
        ("command = \"true\"", "unknown field `command`"),
    ] {
        let text = error_text(&format!("[deploy.healthcheck]\n{table}\n[[deploy.servers]]\nhost = \"h\"\n"));
        assert!(text.contains(expected), "{table}: {text}");
    }
}

#[test]
fn a_services_table_is_checked_key_by_key() {
    let servers = "[[deploy.servers]]\nhost = \"a\"\nuser = \"deploy\"\n";
    let config = parse(&format!(
        "[deploy.services.web]\ncommand = \"target/release/app --port 8080\"\nlisten = [\"127.0.0.1:8080\"]\n\
         env = {{ RUST_LOG = \"info\" }}\n[deploy.services.worker]\ncommand = \"/usr/bin/worker\"\nscope = \"system\"\n{servers}"
    ))
    .unwrap();
    let names: Vec<&str> = config.services.iter().map(|service| service.name.as_str()).collect();
    assert_eq!(names, ["web", "worker"]);
    assert_eq!(config.services[0].command, ["target/release/app", "--port", "8080"]);
    assert_eq!(config.services[1].scope, crate::config::ServiceScope::System);
    for (table, expected) in [
        ("[deploy.services.\"web.service\"]\ncommand = \"app\"", "cannot name a systemd unit"),
        ("[deploy.services.web]\ncommand = \"../app\"", "must be a path in the release"),
        ("[deploy.services.web]\ncommand = \"\"", "is empty"),
        ("[deploy.services.web]\ncommand = \"app\"\nscope = \"root\"", "expected `user`"),
        ("[deploy.services.web]\ncommand = \"app\"\nenv = { \"A B\" = \"x\" }", "not an environment variable's name"),
        ("[deploy.services.web]\ncommand = \"app\"\nenv = { A = \"x\\ry\" }", "control character"),
        ("[deploy.services.web]\ncommand = \"app\\u001b[2J\"", "control character"),
        ("[deploy.services.web]\ncommand = \"app\"\nroles = [\"nope\"]", "role `nope`, which no server has"),
        ("[deploy.services.web]\ncommand = \"app\"\nlisten = [\"a b\"]", "is not an address"),
        (
            "[deploy.services.web]\ncommand = \"app\"\nscope = \"system\"\nlisten = [\"/srv/app/shared/s.sock\"]",
            "is a socket path",
        ),
    ] {
        let message = error_text(&format!("{table}\n{servers}"));
        assert!(message.contains(expected), "{table}: {message}");
    }
    let root_user =
        "[deploy.services.web]\ncommand = \"app\"\n[[deploy.servers]]\nhost = \"a\"\nuser = \"root\\nALL\"\n";
    assert!(error_text(root_user).contains("not a plain login name"), "{}", error_text(root_user));
}

#[test]
fn an_application_or_deploy_to_with_a_control_character_is_refused() {
    let servers = "[[deploy.servers]]\nhost = \"a\"\n";
    let message = error_text(&format!("[deploy]\napplication = \"web\\r[Service]\"\n{servers}"));
    assert!(message.contains("`package.metadata.deploy.application` holds a control character"), "{message}");
    let message = error_text(&format!("[deploy]\napplication = \"a`b\"\n{servers}"));
    assert!(message.contains("or a backtick"), "{message}");
    let message = error_text(&format!("[deploy]\ndeploy_to = \"/srv/a\\rb\"\n{servers}"));
    assert!(message.contains("control character"), "{message}");
}

/// Issue 27, item 4: `/srv/app/../other` passed, took the lock, started the daemon, and then
/// failed with "no such repository". Wherever a `deploy_to` is written, it is refused at load.
#[test]
fn a_deploy_to_with_a_dot_or_dot_dot_part_is_refused_wherever_it_is_written() {
    let servers = "[[deploy.servers]]\nhost = \"a\"\n";
    for dir in ["/srv/app/../other", "/srv/./app", "/srv/app/..", "/srv/app/./"] {
        let message = error_text(&format!("[deploy]\ndeploy_to = \"{dir}\"\n{servers}"));
        assert!(
            message.contains(&format!("`package.metadata.deploy.deploy_to` is `{dir}`, which has a `.` or `..` part")),
            "{message}"
        );
        assert!(message.contains("write the directory it means without them"), "{message}");
        let message = error_text(&format!("[[deploy.servers]]\nhost = \"a\"\ndeploy_to = \"{dir}\"\n"));
        assert!(message.contains("`package.metadata.deploy.servers[0].deploy_to` is `"), "{message}");
        let staged = format!(
            "[deploy]\ndefault_stage = \"production\"\n[deploy.stages.production]\ndeploy_to = \"{dir}\"\n{}",
            "[[deploy.stages.production.servers]]\nhost = \"a\"\n"
        );
        let message = error_text(&staged);
        assert!(message.contains("which has a `.` or `..` part"), "{message}");
    }
    // A name that merely starts with dots is a plain name.
    assert_eq!(
        parse(&format!("[deploy]\ndeploy_to = \"/srv/..app/.cache\"\n{servers}")).unwrap().deploy_to,
        "/srv/..app/.cache"
    );
}
