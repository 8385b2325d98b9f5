//! The deploy table as written in Cargo.toml: the raw serde types (`deny_unknown_fields`, every
//! field optional so that defaults apply), reading them with the key at fault named, and the
//! stages (`staged`: the chosen stage's table laid over the top level, as `serde_json::Value`s).

use std::path::Path;

use serde::Deserialize;

use super::{invalid_config, suggest};
use crate::Error;

/// The table as written in Cargo.toml; every field optional so that defaults apply.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) application: Option<String>,
    pub(super) deploy_to: Option<String>,
    pub(super) keep_releases: Option<usize>,
    pub(super) revision: Option<String>,
    pub(super) build: Option<Vec<String>>,
    pub(super) submodules: Option<bool>,
    #[serde(default)]
    pub(super) linked_files: Vec<String>,
    #[serde(default)]
    pub(super) linked_dirs: Vec<String>,
    #[serde(default)]
    pub(super) artifacts: Vec<String>,
    pub(super) cache: Option<String>,
    pub(super) reuse: Option<String>,
    #[serde(default)]
    pub(super) hooks: RawHooks,
    #[serde(default)]
    pub(super) servers: Vec<RawServer>,
    #[serde(default)]
    pub(super) ssh: RawSsh,
    pub(super) transport: Option<String>,
    #[serde(default)]
    pub(super) timeouts: RawTimeouts,
    pub(super) gateway: Option<RawGateways>,
    pub(super) healthcheck: Option<RawHealthcheck>,
    pub(super) canary: Option<usize>,
    #[serde(default)]
    pub(super) services: std::collections::BTreeMap<String, RawService>,
}

/// One entry of `services` as written: a systemd unit the deploy owns.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    pub(super) command: String,
    #[serde(default)]
    pub(super) listen: Vec<String>,
    #[serde(default)]
    pub(super) env: std::collections::BTreeMap<String, String>,
    pub(super) scope: Option<String>,
    pub(super) stop_timeout: Option<u64>,
    #[serde(default)]
    pub(super) notify: bool,
    #[serde(default)]
    pub(super) roles: Vec<String>,
}

/// `healthcheck` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealthcheck {
    pub(super) remote: String,
    pub(super) timeout: Option<u64>,
    pub(super) interval: Option<u64>,
    #[serde(default)]
    pub(super) roles: Vec<String>,
}

/// `gateway` as written: one jump host, or a list of them, the first one reached first.
#[derive(Debug)]
pub(super) enum RawGateways {
    One(RawGateway),
    Chain(Vec<RawGateway>),
}

/// A table or a list of tables, each read as [`RawGateway`] (whose errors name the field).
impl<'de> Deserialize<'de> for RawGateways {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Gateways;
        impl<'de> serde::de::Visitor<'de> for Gateways {
            type Value = RawGateways;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table (`host`, `port`, `user`, `identity`), or a list of them")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawGateways, A::Error> {
                RawGateway::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(RawGateways::One)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<RawGateways, A::Error> {
                Vec::deserialize(serde::de::value::SeqAccessDeserializer::new(seq)).map(RawGateways::Chain)
            }
        }
        deserializer.deserialize_any(Gateways)
    }
}

/// One jump host of `gateway` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGateway {
    pub(super) host: String,
    pub(super) port: Option<u16>,
    pub(super) user: Option<String>,
    pub(super) identity: Option<String>,
}

/// `timeouts` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTimeouts {
    pub(super) connect: Option<u64>,
    pub(super) step: Option<u64>,
    pub(super) push: Option<u64>,
    pub(super) confirm: Option<u64>,
    pub(super) silence: Option<u64>,
}

/// `hooks` as written: each phase's list.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHooks {
    #[serde(default)]
    pub(super) before_update: Vec<RawHook>,
    #[serde(default)]
    pub(super) after_update: Vec<RawHook>,
    #[serde(default)]
    pub(super) before_publish: Vec<RawHook>,
    #[serde(default)]
    pub(super) after_publish: Vec<RawHook>,
    #[serde(default)]
    pub(super) on_failure: Vec<RawHook>,
}

/// One hook as written: `local` or `remote`, and where a remote one runs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHook {
    pub(super) local: Option<String>,
    pub(super) remote: Option<String>,
    #[serde(default)]
    pub(super) roles: Vec<String>,
    #[serde(default)]
    pub(super) once: bool,
}

/// One entry of `servers` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) host: String,
    pub(super) port: Option<u16>,
    pub(super) user: Option<String>,
    pub(super) deploy_to: Option<String>,
    #[serde(default)]
    pub(super) roles: Vec<String>,
}

/// `ssh` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSsh {
    pub(super) identity: Option<String>,
    pub(super) known_hosts: Option<String>,
    pub(super) host_key_policy: Option<String>,
}

/// The `deploy` table of `metadata` (the `section` table of `manifest`); or why there is none,
/// and a table named almost `deploy` beside it, whose settings would be ignored, is refused.
pub(super) fn deploy_table<'a>(
    metadata: &'a serde_json::Value,
    section: &str,
    manifest: &Path,
) -> Result<&'a serde_json::Value, Error> {
    // A table named almost `deploy` holds settings meant for it, which would be ignored.
    let mut tables = metadata.as_object().into_iter().flat_map(|tables| tables.keys());
    let misspelt = tables.find(|name| *name != "deploy" && suggest::distance(name, "deploy") <= 1);
    let Some(table) = metadata.get("deploy") else {
        let message = match misspelt {
            Some(name) => format!(
                "no `[{section}.deploy]` table in `{}`, but a `[{section}.{name}]`: did you mean \
                 `[{section}.deploy]`? Rename it",
                manifest.display()
            ),
            None => format!(
                "no `[{section}.deploy]` table in `{}`: add one with at least one \
                 `[[{section}.deploy.servers]]` entry holding a `host` (see the README), or pass \
                 `--manifest-path` to the manifest that has it (without it, the one cargo finds from the \
                 current directory is read){workspace}",
                manifest.display(),
                workspace = match section {
                    "package.metadata" =>
                        "; a `[workspace.metadata.deploy]` counts only in a manifest \
                                           with no `[package]`",
                    _ => "",
                }
            ),
        };
        return Err(Error::Config { message });
    };
    if let Some(name) = misspelt {
        return Err(invalid_config(
            manifest,
            format!(
                "`[{section}.{name}]` is not read: did you mean `[{section}.deploy]`? Move its keys there, or \
                 remove it"
            ),
        ));
    }
    Ok(table)
}

/// Reads a deploy table (the top-level one, or a stage's) into its raw form; an error names
/// the key at fault under `prefix`.
pub(super) fn parse_raw(table: &serde_json::Value, prefix: &str, also_known: &[&str]) -> Result<RawConfig, String> {
    serde_path_to_error::deserialize(table).map_err(|err| {
        let path = err.path().to_string();
        let key = if path == "." { prefix.to_string() } else { format!("{prefix}.{path}") };
        // Keys read before serde sees the table (`also_known`) are known at its top level only.
        let top_level = !path.contains(['.', '[']);
        format!("`{key}`: {}", did_you_mean(&err.inner().to_string(), if top_level { also_known } else { &[] }))
    })
}

/// serde's `unknown field `x`, expected one of `a`, `b`` with the expected name (or one of
/// `also_known`) nearest to `x`, when one is near: `unknown field `x`: did you mean `a`?
/// expected one of ...`. Any other message is left as it is.
fn did_you_mean(message: &str, also_known: &[&str]) -> String {
    let Some((field, expected)) = message.strip_prefix("unknown field `").and_then(|rest| rest.split_once('`')) else {
        return message.to_string();
    };
    // The names serde expected are the quoted parts of the rest.
    let known = expected.split('`').skip(1).step_by(2).chain(also_known.iter().copied());
    match suggest::nearest(field, known) {
        Some(name) => {
            format!("unknown field `{field}`: did you mean `{name}`?{}", expected.strip_prefix(',').unwrap_or(expected))
        }
        None => message.to_string(),
    }
}

/// The deploy table as the chosen stage sees it: `chosen`, else `default_stage`, laid over the
/// top-level keys (a table merges key by key; any other value replaces the top-level one).
/// Every stage is checked, so that a mistake in one shows whichever is deployed. Also returns
/// the roles that servers have in any stage or at the top level.
pub(super) fn staged(
    table: &serde_json::Value,
    section: &str,
    chosen: Option<&str>,
) -> Result<(serde_json::Value, Option<String>, Vec<String>), String> {
    let roles_of = |table: &serde_json::Value| -> Vec<String> {
        let servers = table.get("servers").and_then(|servers| servers.as_array());
        let roles = servers.into_iter().flatten().filter_map(|server| server.get("roles")?.as_array());
        roles.flatten().filter_map(|role| role.as_str().map(str::to_string)).collect()
    };
    let mut declared = roles_of(table);
    let mut table = table.clone();
    let (stages, default_stage) = match table.as_object_mut() {
        Some(object) => (object.remove("stages"), object.remove("default_stage")),
        None => (None, None),
    };
    let default_stage = match default_stage {
        Some(serde_json::Value::String(name)) => Some(name),
        Some(_) => return Err(format!("`{section}.deploy.default_stage` must be a stage's name (a string)")),
        None => None,
    };
    let stages = match stages {
        Some(serde_json::Value::Object(stages)) => stages,
        Some(_) => return Err(format!("`{section}.deploy.stages` must be a table of stages")),
        None => serde_json::Map::new(),
    };
    for (name, stage) in &stages {
        let key = format!("{section}.deploy.stages.{name}");
        if stage.get("stages").is_some() || stage.get("default_stage").is_some() {
            return Err(format!("`{key}` cannot hold `stages` or `default_stage`"));
        }
        parse_raw(stage, &key, &[])?;
        declared.extend(roles_of(stage));
    }
    let known = || stages.keys().map(|name| format!("`{name}`")).collect::<Vec<_>>().join(", ");
    let Some(name) = chosen.map(str::to_string).or(default_stage) else {
        if stages.is_empty() {
            return Ok((table, None, declared));
        }
        return Err(format!(
            "name a stage with `--stage <name>` (known stages: {}), or set `{section}.deploy.default_stage`",
            known()
        ));
    };
    let Some(stage) = stages.get(&name) else {
        let named = if chosen.is_some() { "" } else { " (`default_stage`)" };
        let nearest = suggest::nearest(&name, stages.keys().map(String::as_str));
        return Err(match (stages.is_empty(), nearest) {
            (true, _) => {
                format!("unknown stage `{name}`{named}: there are no stages; add `[{section}.deploy.stages.{name}]`")
            }
            (false, Some(nearest)) => {
                format!("unknown stage `{name}`{named}: did you mean `{nearest}`? Known stages are {}", known())
            }
            (false, None) => format!("unknown stage `{name}`{named}: known stages are {}", known()),
        });
    };
    merge(&mut table, stage);
    Ok((table, Some(name), declared))
}

/// Lays `over` onto `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut serde_json::Value, over: &serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(base), serde_json::Value::Object(over)) => {
            for (key, value) in over {
                match base.get_mut(key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (base, over) => *base = over.clone(),
    }
}
