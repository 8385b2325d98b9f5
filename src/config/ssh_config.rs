//! `~/.ssh/config` as OpenSSH reads it (ssh_config(5)), for the keys a deploy uses: `HostName`,
//! `User`, `Port`, `IdentityFile` and `ProxyJump`; every other key is ignored.
//!
//! A `Host` line starts a block that applies to the hosts its patterns match (`*` and `?`
//! wildcards, `!` to exclude, several patterns per line, compared case-insensitively); lines
//! before the first `Host` apply to every host. For each key the first value of a matching
//! block wins. Keywords are case-insensitive, written `key value` or `key=value`; values may be
//! quoted; `#` starts a comment. `Include` reads other files (relative ones from `~/.ssh/`, with
//! `*` and `?` in the file name only), as if their lines stood there, inside the block that
//! holds the `Include`. A `Match` block applies by its `all`, `host` and `originalhost`
//! criteria; one whose other criteria (`exec`, `user`, ...) would decide is refused with a
//! message when it sets a key a deploy reads, and ignored otherwise.
//!
//! Parsing is pure ([`SshConfig::parse_with`] is handed the included files); only
//! [`SshConfig::read`] touches the disk.

use std::path::{Path, PathBuf};

/// The parsed settings of `~/.ssh/config` and the files it includes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SshConfig {
    blocks: Vec<Block>,
    home: Option<PathBuf>,
}

/// What `~/.ssh/config` says of one host, each key as its first matching value gives it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostParams {
    /// The address to connect to (`%h` stands for the host as written).
    pub host_name: Option<String>,
    /// The user to log in as.
    pub user: Option<String>,
    /// As written: the caller says what is wrong with a value that is not a port.
    pub port: Option<String>,
    /// The first `IdentityFile`, with a leading `~` expanded to the home directory.
    pub identity_file: Option<PathBuf>,
    /// As written: `none`, `[user@]host[:port]`, or several hops separated by commas.
    pub proxy_jump: Option<String>,
}

/// The keys a deploy reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    HostName,
    User,
    Port,
    IdentityFile,
    ProxyJump,
}

/// Settings that apply to a host when every one of `conditions` (the patterns of a `Host`
/// line, and of the `Host` line an `Include` stood under) matches it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Block {
    conditions: Vec<Vec<String>>,
    /// The criteria of the `Match` blocks it is in (its own, or the one an `Include` stood
    /// in), each as written: see [`judge`].
    criteria: Vec<Vec<String>>,
    settings: Vec<(Key, String)>,
}

/// How deep `Include`s may nest, as in OpenSSH: a file that includes itself stops there.
const MAX_INCLUDE_DEPTH: usize = 16;

impl SshConfig {
    /// Reads `home/.ssh/config` and the files it includes; `None` when it cannot be read (most
    /// often: there is none). An included file that cannot be read is skipped, as OpenSSH does.
    pub fn read(home: &Path) -> Option<SshConfig> {
        let text = std::fs::read_to_string(home.join(".ssh/config")).ok()?;
        Some(SshConfig::parse_with(&text, Some(home), &mut read_matching))
    }

    /// Parses the text of a config whose `Include`s read nothing.
    pub fn parse(text: &str, home: Option<&Path>) -> SshConfig {
        SshConfig::parse_with(text, home, &mut |_| Vec::new())
    }

    /// Parses the text of a config; `include` gives the texts of the files an `Include`
    /// pattern (an absolute path by then) names, in order.
    pub fn parse_with(text: &str, home: Option<&Path>, include: &mut dyn FnMut(&Path) -> Vec<String>) -> SshConfig {
        let mut config = SshConfig { blocks: vec![Block::default()], home: home.map(Path::to_path_buf) };
        config.add(text, &Block::default(), include, 0);
        config
    }

    /// What the config says of `host`, as written in the deploy config; or why it cannot be
    /// told: a `Match` block whose criteria are not evaluated here (`exec`, `user`, ...) sets a
    /// key a deploy reads.
    pub fn query(&self, host: &str) -> Result<HostParams, String> {
        let mut params = HostParams::default();
        let mut blocks = Vec::new();
        for block in &self.blocks {
            if !block.conditions.iter().all(|patterns| host_line_matches(patterns, host)) {
                continue;
            }
            match all_hold(block.criteria.iter().map(|criteria| judge(criteria, host))) {
                Some(true) => blocks.push(block),
                Some(false) => {}
                None if block.settings.is_empty() => {}
                None => {
                    let criteria = block.criteria.iter().map(|criteria| criteria.join(" ")).collect::<Vec<_>>();
                    let keys = block.settings.iter().map(|(key, _)| format!("`{key:?}`")).collect::<Vec<_>>();
                    return Err(format!(
                        " is matched by `Match {}` in `~/.ssh/config`, which sets {}: xtask-deploy evaluates only \
                         `Match all`, `host` and `originalhost`; move them to a `Host` block, or give the `Match` a \
                         `host` criterion this server does not match",
                        criteria.join("` and `Match "),
                        keys.join(", ")
                    ));
                }
            }
        }
        for (key, value) in blocks.into_iter().flat_map(|block| &block.settings) {
            let slot = match key {
                Key::HostName => &mut params.host_name,
                Key::User => &mut params.user,
                Key::Port => &mut params.port,
                Key::ProxyJump => &mut params.proxy_jump,
                Key::IdentityFile => {
                    if params.identity_file.is_none() && value != "none" {
                        params.identity_file = Some(self.expand_home(value));
                    }
                    continue;
                }
            };
            slot.get_or_insert_with(|| value.clone());
        }
        Ok(params)
    }

    /// Adds the lines of `text` as blocks under `outer`: the block that holds the `Include`
    /// that read it (its conditions, and whether it is a `Match` block), or an empty one for
    /// the config itself.
    fn add(&mut self, text: &str, outer: &Block, include: &mut dyn FnMut(&Path) -> Vec<String>, depth: usize) {
        for line in text.lines() {
            let Some((keyword, args)) = split_line(line) else { continue };
            match keyword.to_ascii_lowercase().as_str() {
                "host" => self.start(outer, Some(args), None),
                "match" => self.start(outer, None, Some(args)),
                "include" if depth < MAX_INCLUDE_DEPTH => {
                    let here = Block { settings: Vec::new(), ..self.blocks.last().cloned().unwrap_or_default() };
                    for arg in args {
                        for text in include(&self.include_path(&arg)) {
                            self.start(&here, None, None);
                            self.add(&text, &here, include, depth + 1);
                        }
                    }
                    // After the included lines, the block that held the `Include` goes on.
                    self.start(&here, None, None);
                }
                other => {
                    let key = match other {
                        "hostname" => Key::HostName,
                        "user" => Key::User,
                        "port" => Key::Port,
                        "identityfile" => Key::IdentityFile,
                        "proxyjump" => Key::ProxyJump,
                        _ => continue,
                    };
                    if let (Some(value), Some(block)) = (args.into_iter().next(), self.blocks.last_mut()) {
                        block.settings.push((key, value));
                    }
                }
            }
        }
    }

    /// Starts a block inside `outer`, with the patterns of a `Host` line or the criteria of a
    /// `Match` line if there is one.
    fn start(&mut self, outer: &Block, patterns: Option<Vec<String>>, criteria: Option<Vec<String>>) {
        let mut conditions = outer.conditions.clone();
        conditions.extend(patterns);
        let mut all = outer.criteria.clone();
        all.extend(criteria);
        self.blocks.push(Block { conditions, criteria: all, settings: Vec::new() });
    }

    /// An `Include` argument as a path: `~` is the home directory, a relative path is taken
    /// from `~/.ssh/`.
    fn include_path(&self, arg: &str) -> PathBuf {
        let path = self.expand_home(arg);
        match (path.is_relative(), &self.home) {
            (true, Some(home)) => home.join(".ssh").join(path),
            _ => path,
        }
    }

    /// `path` with a leading `~` (alone or before `/`) replaced by the home directory.
    fn expand_home(&self, path: &str) -> PathBuf {
        match (&self.home, path.strip_prefix('~')) {
            (Some(home), Some("")) => home.clone(),
            (Some(home), Some(rest)) if rest.starts_with('/') => home.join(&rest[1..]),
            _ => PathBuf::from(path),
        }
    }
}

/// Whether a `Host` line's `patterns` pick `host`: one of them matches it, and none of the
/// negated ones (`!pattern`) does.
/// Whether a `Match` line's `criteria` hold for `host`: `Some` for `all`, `host` and
/// `originalhost` (each may be negated with `!`; all must hold), `None` when another criterion
/// (`exec`, `user`, `localuser`, `canonical`, ...) decides, which is not evaluated here.
fn judge(criteria: &[String], host: &str) -> Option<bool> {
    let mut words = criteria.iter();
    let mut judged = Vec::new();
    while let Some(word) = words.next() {
        let (negated, name) = match word.strip_prefix('!') {
            Some(name) => (true, name),
            None => (false, word.as_str()),
        };
        let name = name.to_ascii_lowercase();
        let one = match name.as_str() {
            "all" => Some(true),
            "host" | "originalhost" => {
                let patterns: Vec<String> =
                    words.next().map(|list| list.split(',').map(str::to_string).collect()).unwrap_or_default();
                Some(host_line_matches(&patterns, host))
            }
            "canonical" | "final" => None,
            _ => {
                words.next();
                None
            }
        };
        judged.push(one.map(|one| one != negated));
    }
    all_hold(judged)
}

/// Whether all of `judged` hold: `Some(false)` when one does not, else `None` when one is not
/// known, else `Some(true)`.
fn all_hold(judged: impl IntoIterator<Item = Option<bool>>) -> Option<bool> {
    let mut unknown = false;
    for one in judged {
        match one {
            Some(false) => return Some(false),
            None => unknown = true,
            Some(true) => {}
        }
    }
    (!unknown).then_some(true)
}

fn host_line_matches(patterns: &[String], host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    let mut matched = false;
    for pattern in patterns {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, pattern.as_str()),
        };
        if wildcard_match(&pattern.to_ascii_lowercase(), &host) {
            if negated {
                return false;
            }
            matched = true;
        }
    }
    matched
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters (none
/// included) and `?` for exactly one.
pub(crate) fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (pattern, text): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut p, mut t) = (0, 0);
    // The last `*` seen and the position in `text` it was tried from, to go back to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == '?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                // Let the last `*` take one more character, and try again from there.
                Some((star_p, star_t)) => {
                    star = Some((star_p, star_t + 1));
                    p = star_p + 1;
                    t = star_t + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// A line's keyword and arguments, or `None` for a blank line or a comment. The keyword ends
/// at a space or `=`; arguments are separated by spaces, may be quoted (`"` or `'`), and an
/// unquoted `#` at the start of one ends the line.
fn split_line(line: &str) -> Option<(&str, Vec<String>)> {
    let line = line.trim_start();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let end = line.find(|c: char| c.is_whitespace() || c == '=').unwrap_or(line.len());
    let (keyword, rest) = line.split_at(end);
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest);
    let mut args = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.peek() {
            None | Some('#') => break,
            Some(_) => {}
        }
        let mut arg = String::new();
        let mut quote = None;
        while let Some(c) = chars.next() {
            match (c, quote) {
                ('\\', _) if chars.peek().is_some_and(|next| matches!(next, '"' | '\'' | '\\' | ' ')) => {
                    arg.extend(chars.next());
                }
                ('"' | '\'', None) => quote = Some(c),
                (c, Some(open)) if c == open => quote = None,
                (c, None) if c.is_whitespace() => break,
                (c, _) => arg.push(c),
            }
        }
        args.push(arg);
    }
    Some((keyword, args))
}

/// The texts of the files `pattern` names, in name order: `*` and `?` may stand in its last
/// part only.
fn read_matching(pattern: &Path) -> Vec<String> {
    let name = pattern.file_name().map(|name| name.to_string_lossy().to_string()).unwrap_or_default();
    if !name.contains(['*', '?']) {
        return std::fs::read_to_string(pattern).into_iter().collect();
    }
    let dir = pattern.parent().unwrap_or(Path::new("/"));
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|file| !file.starts_with('.') && wildcard_match(&name, file))
        .collect();
    names.sort();
    names.iter().filter_map(|file| std::fs::read_to_string(dir.join(file)).ok()).collect()
}

#[cfg(test)]
mod tests;
