//! Authentication, once the host key is trusted: the key given in the environment, else the
//! configured identity file, else ssh-agent and the default keys in `~/.ssh`.

use std::path::Path;

use ssh2::Session;

use crate::config::{Secret, Server, SshOptions, ENV_SSH_KEY, ENV_SSH_KEY_PASSPHRASE};
use crate::Error;

pub(super) fn authenticate(session: &Session, server: &Server, options: &SshOptions, name: &str) -> Result<(), Error> {
    let refuse = |message: String| Error::Auth { server: name.to_string(), message };
    // The server said no: what else it may have checked.
    let refused = |message: String| refuse(message + dropbear_hint(session));
    if let Some(key) = &options.env.key {
        // From memory: the key is never written to disk, and never part of a message.
        let passphrase = options.env.passphrase.as_ref().map(Secret::expose);
        return session.userauth_pubkey_memory(&server.user, None, key.expose(), passphrase).map_err(|err| {
            refused(format!(
                "the server refused the key in `{ENV_SSH_KEY}` for user `{}` ({err}): add its public key to \
                 that user's authorized_keys; if the key has a passphrase, set `{ENV_SSH_KEY_PASSPHRASE}`",
                server.user
            ))
        });
    }
    if let Some(identity) = &server.identity {
        if !identity.is_file() {
            return Err(refuse(format!(
                "identity file `{}` does not exist: fix `ssh.identity` (or `gateway.identity`, or the \
                 `IdentityFile` of `~/.ssh/config`)",
                identity.display()
            )));
        }
        return with_key_file(session, &server.user, identity).map_err(|err| {
            refused(format!(
                "the server refused key `{}` for user `{}` ({err}): add its public key to that user's \
                 authorized_keys, or load a passphrase-protected key into ssh-agent and unset `ssh.identity`",
                identity.display(),
                server.user
            ))
        });
    }
    let mut tried = Vec::new();
    if std::env::var_os("SSH_AUTH_SOCK").is_some() {
        if session.userauth_agent(&server.user).is_ok() {
            return Ok(());
        }
        tried.push("ssh-agent".to_string());
    }
    if let Some(home) = std::env::var_os("HOME") {
        for file in ["id_ed25519", "id_ecdsa", "id_rsa"] {
            let path = Path::new(&home).join(".ssh").join(file);
            if path.is_file() {
                if with_key_file(session, &server.user, &path).is_ok() {
                    return Ok(());
                }
                tried.push(format!("`{}`", path.display()));
            }
        }
    }
    let tried = if tried.is_empty() { "nothing (no agent, no default key)".to_string() } else { tried.join(", ") };
    Err(refused(format!(
        "no key was accepted for user `{}`; tried {tried}: set `ssh.identity`, give the key in \
         `{ENV_SSH_KEY}`, or load a key into ssh-agent",
        server.user
    )))
}

/// Authenticates with the private key in `identity`, offering the public key beside it
/// (`<identity>.pub`) when there is one, as OpenSSH does: libssh2 otherwise derives it from the
/// private key, parsing that (through OpenSSL's decoders, the most CPU a login costs the
/// deployer) a second time. A `.pub` that does not match is tried once, then left out.
fn with_key_file(session: &ssh2::Session, user: &str, identity: &Path) -> Result<(), ssh2::Error> {
    let mut public = identity.as_os_str().to_owned();
    public.push(".pub");
    let public = Path::new(&public);
    if public.is_file() && session.userauth_pubkey_file(user, Some(public), identity, None).is_ok() {
        return Ok(());
    }
    session.userauth_pubkey_file(user, None, identity, None)
}

/// What else keeps a user out of a dropbear server, which its client never hears: dropbear lets in
/// only a user whose login shell is listed in `/etc/shells`, and reads only that user's own
/// `~/.ssh/authorized_keys`, refusing it when the file or a directory above it is writable by
/// others. Empty for other servers.
fn dropbear_hint(session: &Session) -> &'static str {
    match super::runs_dropbear(session) {
        true => {
            "; dropbear also refuses a user whose login shell is not listed in `/etc/shells`, and reads only \
             `~/.ssh/authorized_keys`, which neither it nor a directory above it may let others write"
        }
        false => "",
    }
}
