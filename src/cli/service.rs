//! `service status|logs|restart` and `secrets set|unset|list`: their flags, and each one's `run`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::ui::Ui;
use super::{render, Target};
use crate::{exit, Error};

// Documented for rustdoc only, as `Output` is.
#[cfg_attr(doc, doc = "`service status|logs|restart` ([`super::Command::Service`]).")]
#[cfg_attr(not(doc), allow(missing_docs))]
#[derive(Debug, Subcommand)]
pub enum Service {
    /// Each service on each server: its state, main pid, since when, the release it runs, memory.
    Status(ServiceStatus),
    /// The services' journal from every server, each line prefixed with its server.
    Logs(ServiceLogs),
    /// Restart every service from the current release on every server, health-checked; if one
    /// fails, every server goes back to its previous release, as a failed deploy does.
    Restart(ServiceRestart),
}

// Documented for rustdoc only, as `Output` is.
#[cfg_attr(doc, doc = "The options of `service status` ([`Service::Status`]): which servers.")]
#[cfg_attr(not(doc), allow(missing_docs))]
#[derive(Debug, Args)]
pub struct ServiceStatus {
    #[command(flatten)]
    target: Target,
}

// Documented for rustdoc only, as `Output` is.
#[cfg_attr(doc, doc = "The options of `service logs` ([`Service::Logs`]): which servers and services, how much.")]
#[cfg_attr(not(doc), allow(missing_docs))]
#[derive(Debug, Args)]
pub struct ServiceLogs {
    #[command(flatten)]
    target: Target,
    /// Only this service (default: all).
    #[arg(long = "service", value_name = "NAME")]
    services: Vec<String>,
    /// How many of the last lines from each server.
    #[arg(long, short = 'n', default_value_t = 100)]
    lines: u32,
    /// Lines since this time, as journalctl reads it (`1h ago`, `2026-12-07 10:00`).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Go on printing new lines until interrupted.
    #[arg(long, short)]
    follow: bool,
}

// Documented for rustdoc only, as `Output` is.
#[cfg_attr(doc, doc = "The options of `service restart` ([`Service::Restart`]): which servers.")]
#[cfg_attr(not(doc), allow(missing_docs))]
#[derive(Debug, Args)]
pub struct ServiceRestart {
    #[command(flatten)]
    target: Target,
}

// Documented for rustdoc only, as `Output` is.
#[cfg_attr(doc, doc = "`secrets set|unset|list` ([`super::Command::Secrets`]).")]
#[cfg_attr(not(doc), allow(missing_docs))]
#[derive(Debug, Subcommand)]
pub enum Secrets {
    /// Set a secret on every server, its value read from stdin (or `--file`), never from the
    /// command line; the services see it from their next restart.
    Set(SecretSet),
    /// Remove a secret on every server.
    Unset(SecretUnset),
    /// List the secrets' names on every server (never their values).
    List(SecretList),
}

// Documented for rustdoc only, as `Output` is.
#[cfg_attr(
    doc,
    doc = "The options of `secrets set` ([`Secrets::Set`]): which servers, the name, where the value comes from."
)]
#[cfg_attr(not(doc), allow(missing_docs))]
#[derive(Debug, Args)]
pub struct SecretSet {
    #[command(flatten)]
    target: Target,
    /// The environment variable's name.
    name: String,
    /// Read the value from this file instead of stdin (one trailing newline is dropped).
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
}

// Documented for rustdoc only, as `Output` is.
#[cfg_attr(doc, doc = "The options of `secrets unset` ([`Secrets::Unset`]): which servers, the name.")]
#[cfg_attr(not(doc), allow(missing_docs))]
#[derive(Debug, Args)]
pub struct SecretUnset {
    #[command(flatten)]
    target: Target,
    /// The environment variable's name.
    name: String,
}

// Documented for rustdoc only, as `Output` is.
#[cfg_attr(doc, doc = "The options of `secrets list` ([`Secrets::List`]): which servers.")]
#[cfg_attr(not(doc), allow(missing_docs))]
#[derive(Debug, Args)]
pub struct SecretList {
    #[command(flatten)]
    target: Target,
}

impl Service {
    pub(super) fn run(self, ui: &mut Ui) -> Result<u8, Error> {
        match self {
            Service::Status(ServiceStatus { target }) => {
                let rows = crate::services::status(&target.config()?)?;
                ui.text(&render::render_services(&rows));
                ui.services(&rows);
                let down = rows.iter().any(|row| row.state != "active");
                Ok(if down { exit::CHECK_FAILED } else { exit::SUCCESS })
            }
            Service::Logs(ServiceLogs { target, services, lines, since, follow }) => {
                let request = crate::plan::service::LogsRequest { services, lines, since, follow };
                match crate::services::logs(&target.config()?, &request, ui) {
                    // Ctrl-C is how following ends.
                    Err(Error::Interrupted { .. }) if follow => Ok(exit::SUCCESS),
                    result => result.map(|()| exit::SUCCESS),
                }
            }
            Service::Restart(ServiceRestart { target }) => {
                let config = target.config()?;
                crate::services::restart(&config, ui)?;
                ui.line("Finished", &format!("service restart on {} server(s)", config.servers.len()));
                Ok(exit::SUCCESS)
            }
        }
    }
}

impl Secrets {
    pub(super) fn run(self, ui: &mut Ui) -> Result<u8, Error> {
        match self {
            Secrets::Set(SecretSet { target, name, file }) => {
                let config = target.config()?;
                let value = read_secret(file.as_deref(), &name)?;
                crate::services::set_secret(&config, &name, &value, ui)?;
                ui.line(
                    "Finished",
                    &format!(
                        "secret `{name}` set on {} server(s); the services see it from their next restart \
                         (`cargo xtask service restart`)",
                        config.servers.len()
                    ),
                );
                Ok(exit::SUCCESS)
            }
            Secrets::Unset(SecretUnset { target, name }) => {
                let config = target.config()?;
                crate::services::unset_secret(&config, &name, ui)?;
                ui.line(
                    "Finished",
                    &format!("secret `{name}` is set on none of the {} server(s)", config.servers.len()),
                );
                Ok(exit::SUCCESS)
            }
            Secrets::List(SecretList { target }) => {
                for (server, names) in crate::services::secret_names(&target.config()?)? {
                    let names = if names.is_empty() { "(none)".to_string() } else { names.join(" ") };
                    ui.text(&format!("{server}: {names}\n"));
                }
                Ok(exit::SUCCESS)
            }
        }
    }
}

/// A secret's value from `file`, else from stdin; one trailing newline dropped.
fn read_secret(file: Option<&std::path::Path>, name: &str) -> Result<String, Error> {
    use std::io::Read;
    let mut value = String::new();
    let read = match file {
        Some(path) => std::fs::File::open(path).and_then(|mut file| file.read_to_string(&mut value)),
        None => std::io::stdin().read_to_string(&mut value),
    };
    let from = file.map_or("stdin".to_string(), |path| format!("`{}`", path.display()));
    read.map_err(|err| Error::local(format!("cannot read the value of `{name}` from {from}: {err}")))?;
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    if value.is_empty() {
        return Err(Error::Usage {
            message: format!("no value for `{name}` on {from}: pipe it in (`printf %s \"$VALUE\" | cargo xtask secrets set {name}`) or give `--file`"),
        });
    }
    Ok(value)
}
