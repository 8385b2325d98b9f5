use std::collections::HashMap;

use super::*;

fn home() -> Option<&'static Path> {
    Some(Path::new("/home/alice"))
}

/// The params `text` gives `host`, as `(HostName, User, Port, IdentityFile, ProxyJump)`.
fn query(text: &str, host: &str) -> [Option<String>; 5] {
    let params = SshConfig::parse(text, home()).query(host).unwrap();
    [
        params.host_name,
        params.user,
        params.port,
        params.identity_file.map(|path| path.display().to_string()),
        params.proxy_jump,
    ]
}

fn some(value: &str) -> Option<String> {
    Some(value.to_string())
}

#[test]
fn each_key_is_read_and_the_first_value_wins() {
    let text = "Host web1\n  HostName 10.0.0.5\n  Port 2200\n  User deploy\n  IdentityFile ~/.ssh/web1\n  \
                ProxyJump ops@bastion:2222\n  User other\nHost *\n  User nobody\n  Port 22\n  HostName never\n";
    assert_eq!(
        query(text, "web1"),
        [some("10.0.0.5"), some("deploy"), some("2200"), some("/home/alice/.ssh/web1"), some("ops@bastion:2222")]
    );
    assert_eq!(query(text, "db1"), [some("never"), some("nobody"), some("22"), None, None]);
}

#[test]
fn keywords_ignore_case_and_take_an_equals_sign() {
    for line in ["hostname 10.0.0.5", "HOSTNAME=10.0.0.5", "HostName = 10.0.0.5", "\tHostName\t10.0.0.5  "] {
        assert_eq!(query(&format!("Host a\n{line}\n"), "a")[0], some("10.0.0.5"), "{line:?}");
    }
    assert_eq!(query("Host=a\nUser=u\n", "a")[1], some("u"));
}

#[test]
fn comments_blank_lines_and_other_keys_are_skipped() {
    let text = "# a comment\n\nHost a # trailing\n  # User commented\n  ForwardAgent yes\n  \
                User u # why\n  ServerAliveInterval=30\n";
    assert_eq!(query(text, "a"), [None, some("u"), None, None, None]);
}

#[test]
fn quoted_values_keep_their_spaces() {
    let text = "Host a\n  IdentityFile \"~/my keys/id a\"\nHost 'b c' d\n  User \"x y\"\n  HostName e\\ f\n";
    assert_eq!(query(text, "a")[3], some("/home/alice/my keys/id a"));
    assert_eq!(query(text, "b c")[1], some("x y"), "a quoted pattern");
    assert_eq!(query(text, "d")[0], some("e f"), "an escaped space");
}

#[test]
fn host_patterns_match_as_openssh_matches_them() {
    let text = "Host *.example.com !db?.example.com web? \"\"\n  User matched\n";
    for (host, matched) in [
        ("app.example.com", true),
        ("APP.Example.COM", true),
        ("db1.example.com", false),
        ("db12.example.com", true),
        ("web1", true),
        ("web", false),
        ("web12", false),
        ("example.com", false),
    ] {
        assert_eq!(query(text, host)[1].is_some(), matched, "{host}");
    }
    assert_eq!(query("Host !a\n  User u\n", "b")[1], None, "only negated patterns match nothing");
    assert_eq!(query("Host\n  User u\n", "b")[1], None, "no pattern matches nothing");
}

#[test]
fn lines_before_the_first_host_apply_to_every_host() {
    assert_eq!(query("User everyone\nHost a\n  User a\n", "a")[1], some("everyone"));
}

#[test]
fn match_blocks_apply_by_host_and_all_and_others_that_set_a_key_are_refused() {
    let text = "Match host a,b !host b\n  User from-match\nHost a b\n  User from-host\n";
    assert_eq!(query(text, "a")[1], some("from-match"));
    assert_eq!(query(text, "b")[1], some("from-host"), "`!host b` does not hold for b");
    let text = "Host a\n  Port 1\nMatch all\n  User from-match\n  Include extra\nHost *\n  User u\n";
    let mut files = |_: &Path| vec!["User included\nHost *\n  HostName included\n".to_string()];
    let params = SshConfig::parse_with(text, home(), &mut files).query("a").unwrap();
    assert_eq!((params.user.as_deref(), params.host_name.as_deref()), (Some("from-match"), Some("included")));
    // `exec` is not run here: a block it decides may not set what a deploy reads...
    let text = "Match host a exec \"test -e /x\"\n  User from-match\nHost *\n  User u\n";
    let err = SshConfig::parse(text, home()).query("a").unwrap_err();
    assert!(err.contains("`Match host a exec test -e /x`") && err.contains("`User`"), "{err}");
    assert_eq!(query(text, "b")[1], some("u"), "`host a` does not hold for b: the block is not asked about");
    // ... and one that sets nothing a deploy reads is no obstacle.
    let text = "Match exec \"true\"\n  IdentityAgent ~/agent\nHost *\n  User u\n";
    assert_eq!(query(text, "a")[1], some("u"));
}

#[test]
fn identity_files_expand_the_home_directory_only_at_the_start() {
    assert_eq!(query("IdentityFile ~\n", "a")[3], some("/home/alice"));
    assert_eq!(query("IdentityFile ~bob/key\n", "a")[3], some("~bob/key"));
    assert_eq!(query("IdentityFile /keys/~/k\n", "a")[3], some("/keys/~/k"));
    assert_eq!(query("IdentityFile none\nIdentityFile /k\n", "a")[3], some("/k"), "`none` is no file");
    assert_eq!(
        SshConfig::parse("IdentityFile ~/k\n", None).query("a").unwrap().identity_file,
        Some(PathBuf::from("~/k"))
    );
}

#[test]
fn includes_are_read_in_place_from_the_ssh_directory() {
    let files: HashMap<&str, &str> = HashMap::from([
        ("/home/alice/.ssh/config.d/*", "Host web1\n  HostName 10.0.0.5\n"),
        ("/etc/ssh/extra", "User from-etc\n"),
        ("/home/alice/work", "Port 2200\nHost other\n  Port 9\n"),
    ]);
    let text = "Include config.d/*\nHost web1 db1\n  Include ~/work /etc/ssh/extra\n  User from-config\n  \
                IdentityFile ~/k\nHost *\n  User last\n";
    let mut asked = Vec::new();
    let mut include = |path: &Path| {
        asked.push(path.display().to_string());
        files.get(path.to_str().unwrap()).map(|text| text.to_string()).into_iter().collect()
    };
    let config = SshConfig::parse_with(text, home(), &mut include);
    assert_eq!(asked, ["/home/alice/.ssh/config.d/*", "/home/alice/work", "/etc/ssh/extra"]);
    let web1 = config.query("web1").unwrap();
    assert_eq!(web1.host_name.as_deref(), Some("10.0.0.5"));
    assert_eq!(web1.port.as_deref(), Some("2200"), "an included line before any `Host` is in the including block");
    assert_eq!(web1.user.as_deref(), Some("from-etc"), "each included file starts in the including block");
    assert_eq!(web1.identity_file, Some(PathBuf::from("/home/alice/k")), "after the `Include`, its block goes on");
    let other = config.query("other").unwrap();
    assert_eq!((other.port, other.user.as_deref()), (None, Some("last")), "a `Host` included under `Host web1 db1`");
}

#[test]
fn an_include_that_includes_itself_stops() {
    let mut include = |_: &Path| vec!["Include loop\nUser u\n".to_string()];
    let config = SshConfig::parse_with("Include loop\n", home(), &mut include);
    assert_eq!(config.query("a").unwrap().user.as_deref(), Some("u"));
}

#[test]
fn wildcards_match_any_run_or_one_character() {
    for (pattern, text, matched) in [
        ("*", "", true),
        ("*", "anything", true),
        ("a*c", "abbbc", true),
        ("a*c", "abbbd", false),
        ("a*b*c", "aXbYbZc", true),
        ("?", "", false),
        ("a?c", "abc", true),
        ("a?c", "ac", false),
        ("**.x", "a.x", true),
        ("exact", "exact", true),
        ("exact", "exactly", false),
    ] {
        assert_eq!(wildcard_match(pattern, text), matched, "{pattern} {text}");
    }
}

#[test]
fn included_files_are_read_by_name_pattern_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let ssh = dir.path().join(".ssh");
    std::fs::create_dir_all(ssh.join("conf.d")).unwrap();
    std::fs::write(ssh.join("config"), "Include conf.d/*.conf\nHost *\n  User last\n").unwrap();
    std::fs::write(ssh.join("conf.d/20-b.conf"), "Host a\n  User b\n").unwrap();
    std::fs::write(ssh.join("conf.d/10-a.conf"), "Host a\n  Port 10\n  User a\n").unwrap();
    std::fs::write(ssh.join("conf.d/30-c.txt"), "User not-included\n").unwrap();
    std::fs::write(ssh.join("conf.d/.05-hidden.conf"), "User hidden\n").unwrap();
    let config = SshConfig::read(dir.path()).expect("the config exists");
    let params = config.query("a").unwrap();
    assert_eq!((params.user.as_deref(), params.port.as_deref()), (Some("a"), Some("10")));
    assert_eq!(config.query("b").unwrap().user.as_deref(), Some("last"));
    assert_eq!(SshConfig::read(&dir.path().join("nowhere")), None);
}
