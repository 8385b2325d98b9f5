//! `deploy --dry-run`: what a deploy would do, found out without changing anything. Each server
//! is asked where it stands by one read-only script ([`plan::dry_run_script_for`]: no lock, no
//! daemon, nothing written); what the push would carry is counted locally; the judgement is
//! [`plan::dry_run`]'s.

use std::collections::HashMap;

use crate::config::{Config, HostKeyPolicy};
use crate::plan::{self, dry_run::ServerView, DryRun};
use crate::report::{Event, Reporter};
use crate::ssh::Connection;
use crate::transport::{estimate, PackMethod};
use crate::Error;

use super::DeployOptions;
use crate::fleet::parallel::{each, DEFAULT_PARALLEL};

/// Finds out what a deploy with `options` would do on each server, changing nothing on any
/// server or here (an unknown host key is not recorded). Each server's part is reported as an
/// [`Event::Plan`], in the order of the servers, once every server was asked. A server that
/// cannot be reached or read is part of the result (it says why), not an error; the errors
/// are the deploy's own before it reaches a server (the repository, the worktree, the revision).
pub fn dry_run(config: &Config, options: &DeployOptions, reporter: &mut dyn Reporter) -> Result<DryRun, Error> {
    let local = super::local_state(config, options)?;
    let read_only = crate::fleet::never_recording(config);
    let parallel = options.parallel.unwrap_or(DEFAULT_PARALLEL);
    let views: Vec<Result<ServerView, Error>> =
        each(config.servers.iter().enumerate().collect(), parallel, reporter, |(index, server), _| {
            let config = read_only.on(server);
            let connection = Connection::open(&config, server)?.read_only();
            Ok(plan::dry_run::parse_view(&connection.run(&plan::dry_run_script_for(&config, index))?))
        });

    let existing = views.iter().flatten().flat_map(|view| view.state.releases.iter().map(|(name, _)| name.as_str()));
    let mut release = super::release_for(&local, plan::release_name(plan::UtcSecond::now(), existing));
    if !config.artifacts.is_empty() {
        release.release_commit = Some(plan::BUILD_PENDING.to_string());
    }
    let submodules = super::submodule_releases(&local.submodules);
    let servers = config.servers.iter().enumerate();
    let plans: Vec<plan::Plan> = servers
        .map(|(index, server)| plan::deploy_plan(&config.on(server), index, &release, &submodules, &local.lock))
        .collect();

    let repo = local.repo()?;
    let thin = options.pack_method() == PackMethod::ThinPack;
    // Servers in the same state need the same pack: each is counted once.
    let mut counted: HashMap<&[String], Result<crate::plan::Estimate, String>> = HashMap::new();
    let mut servers = Vec::new();
    for (index, ((server, view), plan)) in config.servers.iter().zip(&views).zip(&plans).enumerate() {
        let name = server.display_name();
        let part = match view {
            Ok(view) => {
                let estimate = counted.entry(&view.tips).or_insert_with(|| {
                    if thin {
                        estimate::estimate(&repo, &release.sha, &view.tips, &view.state.shallow).map_err(|err| err.to_string())
                    } else {
                        Err("there is no `git` here, so libgit2 would push, and what it sends is not counted".into())
                    }
                });
                let transfer = plan::dry_run::Transfer {
                    estimate: estimate.clone(),
                    submodules: submodules.len(),
                    build: release.release_commit.is_some(),
                };
                plan::dry_run::reached(&config.on(server), index, plan, name, view, &transfer)
            }
            Err(err) => plan::dry_run::not_reached(plan, name, unreached(config, err)),
        };
        reporter.event(Event::Plan(Box::new(part.clone())));
        servers.push(part);
    }
    Ok(DryRun {
        revision: options.revision.clone().unwrap_or_else(|| config.revision.clone()),
        sha: release.sha,
        release: release.name,
        force: options.force,
        servers,
        plans,
    })
}

/// Why a server was not reached, and what a deploy would do about an unknown host key.
fn unreached(config: &Config, err: &Error) -> String {
    match err {
        Error::HostKey { unknown: true, .. } if config.ssh.host_key_policy == HostKeyPolicy::AcceptNew => {
            format!("{err}; a deploy would record it (`accept-new`) and go on, a dry run records nothing")
        }
        _ => err.to_string(),
    }
}
