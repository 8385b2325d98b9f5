//! known_hosts text: which lines name a host (plain or hashed, as OpenSSH's `HashKnownHosts`
//! writes them), the key types they hold and their fingerprints.

use base64::Engine;

/// The key types known_hosts holds for this host, plain or hashed (OpenSSH's `HashKnownHosts`,
/// the default on Debian and Ubuntu), as libssh2 method names, so that the server is asked for
/// a key we can actually check. libssh2 compares the offered key with every entry of the host
/// whatever its type, so asking for another type would look like a changed key.
pub(super) fn known_key_types(known_hosts: &str, host: &str, port: u16) -> Vec<&'static str> {
    let mut types = Vec::new();
    for (key_type, _) in host_entries(known_hosts, host, port) {
        let methods: &[&'static str] = match key_type {
            "ssh-ed25519" => &["ssh-ed25519"],
            "ecdsa-sha2-nistp256" => &["ecdsa-sha2-nistp256"],
            "ecdsa-sha2-nistp384" => &["ecdsa-sha2-nistp384"],
            "ecdsa-sha2-nistp521" => &["ecdsa-sha2-nistp521"],
            "ssh-rsa" => &["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"],
            _ => &[],
        };
        for method in methods {
            if !types.contains(method) {
                types.push(*method);
            }
        }
    }
    types
}

/// The `(key type, base64 key)` of every known_hosts line that names this host, plain or hashed.
fn host_entries<'a>(known_hosts: &'a str, host: &str, port: u16) -> impl Iterator<Item = (&'a str, &'a str)> {
    let pattern = if port == 22 { host.to_string() } else { format!("[{host}]:{port}") };
    known_hosts.lines().filter_map(move |line| {
        let mut fields = line.split_whitespace();
        let (hosts, key_type, key) = (fields.next()?, fields.next()?, fields.next().unwrap_or(""));
        let named = hosts.split(',').any(|entry| entry == pattern || hashed_match(entry, &pattern));
        (!hosts.starts_with('#') && named).then_some((key_type, key))
    })
}

/// Whether a hashed known_hosts entry, `|1|<base64 salt>|<base64 HMAC-SHA1(salt, host)>`,
/// names `pattern`.
fn hashed_match(entry: &str, pattern: &str) -> bool {
    use hmac::Mac;
    let Some(rest) = entry.strip_prefix("|1|") else { return false };
    let Some((salt, hash)) = rest.split_once('|') else { return false };
    let engine = base64::engine::general_purpose::STANDARD;
    let (Ok(salt), Ok(hash)) = (engine.decode(salt), engine.decode(hash)) else { return false };
    let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt) else { return false };
    mac.update(pattern.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// The SHA256 fingerprints of the keys known_hosts holds for this host, as `ssh-keygen -l`
/// shows them.
pub(super) fn recorded_fingerprints(text: &str, host: &str, port: u16) -> Vec<String> {
    use sha2::Digest;
    let engine = base64::engine::general_purpose::STANDARD;
    host_entries(text, host, port)
        .filter_map(|(key_type, key)| {
            let hash = sha2::Sha256::digest(engine.decode(key).ok()?);
            Some(format!("{key_type} SHA256:{}", base64::engine::general_purpose::STANDARD_NO_PAD.encode(hash)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_key_types_match_host_and_port_entries() {
        let text = "\
# comment
[127.0.0.1]:2222 ssh-ed25519 AAAA
127.0.0.1 ecdsa-sha2-nistp256 AAAA
other,example.org ssh-rsa AAAA
|1|hashed= ssh-ed25519 AAAA
";
        assert_eq!(known_key_types(text, "127.0.0.1", 2222), vec!["ssh-ed25519"]);
        assert_eq!(known_key_types(text, "127.0.0.1", 22), vec!["ecdsa-sha2-nistp256"]);
        assert_eq!(known_key_types(text, "example.org", 22), vec!["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]);
        assert!(known_key_types(text, "unknown", 22).is_empty());
    }

    #[test]
    fn hashed_entries_are_matched_as_ssh_keygen_hashes_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        std::fs::write(&file, "[127.0.0.1]:2222 ecdsa-sha2-nistp256 AAAA\nexample.org ssh-ed25519 AAAA\n").unwrap();
        let hashed = std::process::Command::new("ssh-keygen").arg("-H").arg("-f").arg(&file).output().unwrap();
        assert!(hashed.status.success());
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.lines().all(|line| line.starts_with("|1|")), "{text}");
        assert_eq!(known_key_types(&text, "127.0.0.1", 2222), vec!["ecdsa-sha2-nistp256"]);
        assert_eq!(known_key_types(&text, "example.org", 22), vec!["ssh-ed25519"]);
        assert!(known_key_types(&text, "127.0.0.1", 22).is_empty());
    }
}
