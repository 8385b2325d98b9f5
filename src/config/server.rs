//! The servers deployed to: [`Server`], how a host written in the config is reached (`Reach`:
//! `~/.ssh/config` fills the address, port, user, identity and jump host the config leaves out),
//! and the role names servers carry.

use std::path::PathBuf;

use super::raw::{RawGateways, RawServer};
use super::validate::{remote_dir, role_list};
use super::{Defaults, SshConfig};

/// One server to deploy to (or a gateway to reach servers through).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// The address connected to: `host` as written, or the `HostName` `~/.ssh/config` gives
    /// for it.
    pub host: String,
    /// The SSH port: `port`, else the `Port` of `~/.ssh/config`, else 22.
    pub port: u16,
    /// The login user: `user`, else the `User` of `~/.ssh/config`, else the local user name.
    pub user: String,
    /// This server's `deploy_to`: its own `deploy_to` key, else the top-level one.
    pub deploy_to: String,
    /// Its roles (`app`, `web`, `db`...), which pick the remote hooks it runs.
    pub roles: Vec<String>,
    /// The `host` as written in the config (an alias of `~/.ssh/config`, say).
    pub alias: String,
    /// The private key to try: `ssh.identity`, else the `IdentityFile` of `~/.ssh/config`.
    pub identity: Option<PathBuf>,
    /// The jump host this server is reached through: `gateway`, else the `ProxyJump` of
    /// `~/.ssh/config`.
    pub gateway: Option<Box<Server>>,
}

impl Server {
    /// `user@host:port`, the way a server is named in messages.
    pub fn display_name(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }
}

/// The `gateway` of the deploy table (in `section`): one jump host, or a list of them reached
/// one through the other, the first one first (as OpenSSH's `ProxyJump a,b`). Each has its own
/// `identity` (resolved by `resolve`), else `identity`. Returns the last hop (the one servers
/// are reached through), or the message naming the key at fault.
pub(super) fn gateway(
    raw: Option<RawGateways>,
    identity: &Option<PathBuf>,
    resolve: impl Fn(&str) -> PathBuf,
    reach: Reach,
    section: &str,
) -> Result<Option<Box<Server>>, String> {
    let (hops, listed) = match raw {
        None => (Vec::new(), false),
        Some(RawGateways::One(hop)) => (vec![hop], false),
        Some(RawGateways::Chain(hops)) if hops.is_empty() => {
            return Err(format!("`{section}.deploy.gateway` is an empty list: list the jump hosts, or remove it"))
        }
        Some(RawGateways::Chain(hops)) => (hops, true),
    };
    let mut through: Option<Box<Server>> = None;
    for (index, hop) in hops.into_iter().enumerate() {
        let identity = hop.identity.as_deref().map(&resolve).or(identity.clone());
        let key = if listed { format!("gateway[{index}]") } else { "gateway".to_string() };
        let server = reach
            .server(&hop.host, hop.port, hop.user, identity, through.take())
            .map_err(|problem| format!("`{section}.deploy.{key}{problem}"))?;
        through = Some(Box::new(server));
    }
    Ok(through)
}

/// The `servers` of the deploy table (in `section`), each reached through `gateway` with
/// `identity`, with its own `deploy_to` (else `deploy_to`) and its roles checked; or the
/// message naming the key at fault.
pub(super) fn servers(
    raw: Vec<RawServer>,
    identity: &Option<PathBuf>,
    gateway: Option<Box<Server>>,
    deploy_to: &str,
    reach: Reach,
    section: &str,
) -> Result<Vec<Server>, String> {
    let mut servers = Vec::with_capacity(raw.len());
    for (index, server) in raw.into_iter().enumerate() {
        let key = format!("{section}.deploy.servers[{index}]");
        let mut resolved = reach
            .server(&server.host, server.port, server.user, identity.clone(), gateway.clone())
            .map_err(|problem| format!("`{key}{problem}"))?;
        resolved.deploy_to = match server.deploy_to {
            Some(dir) => remote_dir(dir).map_err(|problem| format!("`{key}.deploy_to` {problem}"))?,
            None => deploy_to.to_string(),
        };
        if let Some(bad) = server.roles.iter().find(|role| !is_role_name(role)) {
            return Err(format!("`{key}.roles` holds `{bad}`: a role is a name of letters, digits, `_` and `-`"));
        }
        resolved.roles = server.roles;
        servers.push(resolved);
    }
    Ok(servers)
}

/// How a host written in the config is reached: `~/.ssh/config` fills what the config leaves
/// out, then the defaults.
#[derive(Clone, Copy)]
pub(super) struct Reach<'a> {
    ssh_config: Option<&'a SshConfig>,
    /// The local user name.
    user: Option<&'a str>,
    /// How many `ProxyJump` hosts lead to the host asked about.
    hops: usize,
}

/// How many `ProxyJump` hosts of `~/.ssh/config` may lead to a server, each the jump host of
/// the next: a chain longer than this is a loop.
const MAX_JUMPS: usize = 8;

impl Reach<'_> {
    /// Hosts reached with the `~/.ssh/config` and the local user name of `defaults`.
    pub(super) fn of(defaults: &Defaults) -> Reach<'_> {
        Reach { ssh_config: defaults.ssh_config.as_ref(), user: defaults.user.as_deref(), hops: 0 }
    }

    /// The server `host` names, with what the config says of it (`port`, `user`, `identity`,
    /// `gateway`); or, on error, the rest of a message that starts with the server's key.
    pub(super) fn server(
        &self,
        host: &str,
        port: Option<u16>,
        user: Option<String>,
        identity: Option<PathBuf>,
        gateway: Option<Box<Server>>,
    ) -> Result<Server, String> {
        if host.trim().is_empty() {
            return Err(".host` is empty".to_string());
        }
        // `name:port` (one colon: an IPv6 address has several) is not a host name.
        if let Some((name, port)) = host.split_once(':').filter(|(name, _)| !name.contains(':')) {
            if !port.contains(':') && !port.is_empty() && port.bytes().all(|byte| byte.is_ascii_digit()) {
                return Err(format!(".host` is `{host}`, with a port: write `host = \"{name}\"` and `port = {port}`"));
            }
        }
        let params = match self.ssh_config {
            Some(config) => config.query(host).map_err(|problem| format!(".host` (`{host}`){problem}"))?,
            None => Default::default(),
        };
        let Some(user) = user.or(params.user).or(self.user.map(str::to_string)) else {
            return Err(".user` is not set and the local user name is unknown: set `user`".to_string());
        };
        let port = match (port, params.port) {
            (Some(port), _) => port,
            (None, Some(port)) => port.parse().map_err(|_| {
                format!(
                    ".host` has `Port {port}` in `~/.ssh/config`, which is not a port number: fix it, or set `port`"
                )
            })?,
            (None, None) => 22,
        };
        let gateway = match (gateway, params.proxy_jump) {
            (Some(gateway), _) => Some(gateway),
            (None, Some(jump)) if jump != "none" => {
                // `a,b`: `b` reached through `a`, `a` as `~/.ssh/config` says (its own `ProxyJump` too).
                let mut through: Option<Box<Server>> = None;
                for hop in jump.split(',') {
                    let (user, rest) = match hop.split_once('@') {
                        Some((user, rest)) => (Some(user.to_string()), rest),
                        None => (None, hop),
                    };
                    let (jump_host, jump_port) = match rest.rsplit_once(':') {
                        Some((jump_host, port)) => (
                            jump_host,
                            Some(port.parse().map_err(|_| {
                                format!(".host` has `ProxyJump {jump}` in `~/.ssh/config`, whose port is not a number")
                            })?),
                        ),
                        None => (rest, None),
                    };
                    if jump_host.is_empty() {
                        return Err(format!(".host` has `ProxyJump {jump}` in `~/.ssh/config`, with an empty hop"));
                    }
                    if self.hops >= MAX_JUMPS {
                        return Err(format!(
                            ".host` is reached through more than {MAX_JUMPS} `ProxyJump` hosts in `~/.ssh/config` (a \
                             loop?): give the last one `ProxyJump none`, or set `gateway`"
                        ));
                    }
                    let reach = Reach { hops: self.hops + 1, ..*self };
                    through =
                        Some(Box::new(reach.server(jump_host, jump_port, user, identity.clone(), through.take())?));
                }
                through
            }
            (None, _) => None,
        };
        Ok(Server {
            host: params.host_name.map(|name| name.replace("%h", host)).unwrap_or_else(|| host.to_string()),
            port,
            user,
            deploy_to: String::new(),
            roles: Vec::new(),
            alias: host.to_string(),
            identity: identity.or(params.identity_file),
            gateway,
        })
    }
}

/// A role name: letters, digits, `_` and `-`.
fn is_role_name(role: &str) -> bool {
    !role.is_empty() && role.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The roles the servers have, for messages.
pub(super) fn roles_in_use(servers: &[Server]) -> String {
    role_list(servers.iter().flat_map(|server| server.roles.iter()))
}
