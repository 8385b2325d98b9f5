//! The config parser on arbitrary `[package.metadata]` TOML: it may refuse, never panic, and
//! what it accepts holds up the invariants the remote scripts rely on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xtask_deploy::config::{is_plain_relative_path, Config, Defaults};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(metadata) = toml::from_str::<serde_json::Value>(text) else { return };
    let defaults = Defaults {
        package_name: Some("app".into()),
        user: Some("deploy".into()),
        home: None,
        env_auth: Default::default(),
        ssh_config: None,
        stage: None,
        target_dir: None,
    };
    let path = std::path::Path::new("/app/Cargo.toml");
    if let Ok(config) = Config::from_metadata(&metadata, "package.metadata", path, &defaults) {
        assert!(config.deploy_to.starts_with('/') && config.deploy_to != "/");
        assert!(!config.deploy_to.contains(['\0', '\n']));
        for server in &config.servers {
            assert!(server.deploy_to.starts_with('/') && server.deploy_to != "/");
            assert!(!server.deploy_to.contains(['\0', '\n']));
        }
        assert!(config.keep_releases >= 1);
        assert!(!config.servers.is_empty());
        for path in config.linked_files.iter().chain(&config.linked_dirs).chain(&config.artifacts) {
            assert!(is_plain_relative_path(path), "{path:?}");
        }
    }
});
