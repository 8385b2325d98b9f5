//! known_hosts text, read as OpenSSH reads it (sshd(8), "SSH_KNOWN_HOSTS FILE FORMAT"): host
//! lines, whose hosts are plain or hashed (as `HashKnownHosts` writes them), and lines that
//! start with a marker. `@revoked` says that a key must never be trusted for the hosts the line
//! names, whatever else trusts it; `@cert-authority` names a CA whose certificates are trusted,
//! which is not a host key (certificates are not supported here). libssh2 knows neither marker,
//! so it is handed only the host lines ([`host_lines`]), and revocation is checked here
//! ([`revocation`]) before any line can trust the key.

use base64::Engine;

/// The marker of a line whose key is revoked.
pub(super) const REVOKED: &str = "@revoked";

/// One known_hosts line that is neither blank nor a comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Line<'a> {
    /// Its number in the text, from 1.
    pub number: usize,
    /// `@revoked`, `@cert-authority` (or another word starting with `@`, which OpenSSH skips),
    /// or `None` for a host line.
    pub marker: Option<&'a str>,
    /// The comma-separated host patterns, or one hashed host.
    pub hosts: &'a str,
    pub key_type: &'a str,
    /// The key, base64 as written.
    pub key: &'a str,
    /// The whole line.
    pub text: &'a str,
}

/// Every line of `text` that is neither blank nor a comment.
pub(super) fn lines(text: &str) -> impl Iterator<Item = Line<'_>> {
    text.lines().enumerate().filter_map(|(index, text)| {
        let mut fields = text.split_whitespace();
        let first = fields.next().filter(|first| !first.starts_with('#'))?;
        let (marker, hosts) = if first.starts_with('@') { (Some(first), fields.next()?) } else { (None, first) };
        let (key_type, key) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
        Some(Line { number: index + 1, marker, hosts, key_type, key, text })
    })
}

/// The host lines of `text` (no marker), for libssh2.
pub(super) fn host_lines(text: &str) -> impl Iterator<Item = Line<'_>> {
    lines(text).filter(|line| line.marker.is_none())
}

/// How known_hosts names a host: `host` on port 22, `[host]:port` on any other.
pub(super) fn host_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// The first `@revoked` line of `text` that names the host `name` (see [`host_name`]; by a
/// pattern such as `*`, or hashed) and holds `key`, the key blob the server offered.
pub(super) fn revocation<'a>(text: &'a str, name: &str, key: &[u8]) -> Option<Line<'a>> {
    let engine = base64::engine::general_purpose::STANDARD;
    lines(text)
        .filter(|line| line.marker == Some(REVOKED))
        .find(|line| matches_hosts(line.hosts, name) && engine.decode(line.key).is_ok_and(|revoked| revoked == key))
}

/// Whether a line's host field names `name`, as OpenSSH matches it: a hash of `name`, or a
/// comma-separated list of patterns (`*` any characters, `?` one; any case) of which one
/// matches and no negated one (`!pattern`) does.
fn matches_hosts(hosts: &str, name: &str) -> bool {
    if hosts.starts_with("|1|") {
        return hashed_match(hosts, name);
    }
    let name = name.to_ascii_lowercase();
    let mut matched = false;
    for pattern in hosts.split(',') {
        let pattern = pattern.to_ascii_lowercase();
        match pattern.strip_prefix('!') {
            Some(negated) if wildcard_match(negated.as_bytes(), name.as_bytes()) => return false,
            Some(_) => {}
            None => matched |= wildcard_match(pattern.as_bytes(), name.as_bytes()),
        }
    }
    matched
}

/// Whether `text` matches `pattern`, where `*` stands for any bytes and `?` for one. Greedy,
/// going back only to the last `*`: linear in practice, whatever the pattern.
fn wildcard_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut at_pattern, mut at_text) = (0, 0);
    // Where to resume after the last `*`: the pattern after it, and the text it covers up to.
    let mut star = None;
    while at_text < text.len() {
        match pattern.get(at_pattern) {
            Some(b'*') => {
                at_pattern += 1;
                star = Some((at_pattern, at_text));
            }
            Some(&byte) if byte == b'?' || byte == text[at_text] => {
                at_pattern += 1;
                at_text += 1;
            }
            _ => match star {
                Some((after, covered)) => {
                    at_pattern = after;
                    at_text = covered + 1;
                    star = Some((after, covered + 1));
                }
                None => return false,
            },
        }
    }
    pattern[at_pattern..].iter().all(|&byte| byte == b'*')
}

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

/// The `(key type, base64 key)` of every host line (no marker) that names this host exactly,
/// plain or hashed: the lines libssh2 will check the key against (it knows no patterns).
fn host_entries<'a>(known_hosts: &'a str, host: &str, port: u16) -> impl Iterator<Item = (&'a str, &'a str)> {
    let name = host_name(host, port);
    host_lines(known_hosts).filter_map(move |line| {
        let named = line.hosts.split(',').any(|entry| entry == name || hashed_match(entry, &name));
        (named && !line.key_type.is_empty()).then_some((line.key_type, line.key))
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

    #[test]
    fn marked_lines_are_not_host_lines() {
        let text = "\
@revoked [127.0.0.1]:2222 ssh-ed25519 AAAArevoked
@cert-authority [127.0.0.1]:2222 ecdsa-sha2-nistp256 AAAAca
@unknown-marker [127.0.0.1]:2222 ssh-rsa AAAA
  # an indented comment
[127.0.0.1]:2222 ssh-ed25519 AAAAhost
";
        assert_eq!(known_key_types(text, "127.0.0.1", 2222), vec!["ssh-ed25519"]);
        assert_eq!(host_entries(text, "127.0.0.1", 2222).collect::<Vec<_>>(), vec![("ssh-ed25519", "AAAAhost")]);
        let hosts: Vec<usize> = host_lines(text).map(|line| line.number).collect();
        assert_eq!(hosts, vec![5]);
        let markers: Vec<Option<&str>> = lines(text).map(|line| line.marker).collect();
        assert_eq!(markers, vec![Some("@revoked"), Some("@cert-authority"), Some("@unknown-marker"), None]);
    }

    #[test]
    fn host_patterns_match_as_openssh_matches_them() {
        for (hosts, name, expected) in [
            ("*", "[127.0.0.1]:2222", true),
            ("*", "example.org", true),
            ("*.example.org", "web1.example.org", true),
            ("*.example.org", "example.org", false),
            ("web?.example.org", "web1.example.org", true),
            ("web?.example.org", "web10.example.org", false),
            ("[127.0.0.1]:*", "[127.0.0.1]:2222", true),
            ("[127.0.0.1]:*", "127.0.0.1", false),
            ("Example.ORG", "example.org", true),
            ("other,example.org", "example.org", true),
            ("*.example.org,!db.example.org", "db.example.org", false),
            ("*.example.org,!db.example.org", "web.example.org", true),
            ("!db.example.org", "web.example.org", false),
            ("a*b*c*d", "axxbxxcxxd", true),
            ("a*b*c*d", "axxbxxcxxe", false),
        ] {
            assert_eq!(matches_hosts(hosts, name), expected, "`{hosts}` against `{name}`");
        }
    }

    #[test]
    fn a_revoked_key_is_found_for_the_hosts_its_line_names_and_only_that_key() {
        let engine = base64::engine::general_purpose::STANDARD;
        let (key, other) = (b"the server's key blob".as_slice(), b"another key blob".as_slice());
        let line = |hosts: &str, key: &[u8]| format!("@revoked {hosts} ssh-ed25519 {}\n", engine.encode(key));
        let text = format!("[127.0.0.1]:2222 ssh-ed25519 {}\n{}", engine.encode(key), line("*", key));
        assert_eq!(revocation(&text, "[127.0.0.1]:2222", key).map(|line| line.number), Some(2));
        assert_eq!(revocation(&text, "example.org", key).map(|line| line.number), Some(2));
        assert!(revocation(&text, "[127.0.0.1]:2222", other).is_none(), "only the key on the line is revoked");
        let text = line("*.example.org", key);
        assert!(revocation(&text, "web.example.org", key).is_some());
        assert!(revocation(&text, "[127.0.0.1]:2222", key).is_none(), "the line names other hosts");
        // A line that names the key without the marker revokes nothing.
        let text = format!("* ssh-ed25519 {}\n", engine.encode(key));
        assert!(revocation(&text, "example.org", key).is_none());
    }

    #[test]
    fn a_revoked_line_for_a_hashed_host_is_matched_as_ssh_keygen_hashes_it() {
        let engine = base64::engine::general_purpose::STANDARD;
        let key = b"the server's key blob";
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        std::fs::write(&file, format!("[127.0.0.1]:2222 ssh-ed25519 {}\n", engine.encode(key))).unwrap();
        let hashed = std::process::Command::new("ssh-keygen").arg("-H").arg("-f").arg(&file).output().unwrap();
        assert!(hashed.status.success());
        let text = format!("@revoked {}", std::fs::read_to_string(&file).unwrap());
        assert_eq!(revocation(&text, "[127.0.0.1]:2222", key).map(|line| line.number), Some(1));
        assert!(revocation(&text, "[127.0.0.1]:22", key).is_none());
    }
}
