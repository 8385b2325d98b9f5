//! Our scripts kept on the server, so that a deploy sends only what is new to it.
//!
//! The server keeps one file, [`KEPT`]: the lines of every script this version of the tool
//! sends, as it sends them (see `kept.sh`, made from the scripts by a test and checked against
//! them). It lives in the private state directory, `<deploy_to>/.xtask-deploy/scripts/<id>`,
//! where `<id>` is its git blob id: content-addressed, and checked with `git hash-object` before
//! each use. A script is then sent as [`Kept::encode`] writes it: runs of lines the server has
//! (`<first line> <count>`), and the rest as it is (`0 <count>`, then that many lines): mostly
//! the lines that hold a deploy's own values.
//!
//! A server that lacks the file (a first deploy, a new version of the tool, a server never set
//! up) answers [`NEED`], and the deployer sends the file, which the server keeps (when its state
//! directory exists) and uses at once: one round trip, once per version. A server that has it
//! answers [`HAVE`]. Either answer is the first line on stdout, read before the script's own.
//! What a script does never depends on which way it came: it is decoded, whole, before it runs.

use std::collections::HashMap;
use std::sync::OnceLock;

/// The lines of every script this version sends (without comments, as sent), one after the
/// other; no line ends the file with a newline.
pub const KEPT: &str = include_str!("kept.sh");

/// The server's answer when it has the file.
pub const HAVE: &str = "@@xtask-deploy-kept";
/// The server's answer when it lacks the file (or its copy fails the check): the deployer
/// then sends its length on a line and the file.
pub const NEED: &str = "@@xtask-deploy-need";
/// The server's answer when it cannot use the file at all (no `awk` or no `git` there): the
/// deployer then sends the script's length on a line and the script, whole.
pub const WHOLE: &str = "@@xtask-deploy-whole";

/// Where, under `deploy_to`, the server keeps the file (inside the private state directory,
/// `crate::plan::STATE_DIR`).
pub const KEPT_DIR: &str = ".xtask-deploy/scripts";

/// The bootstrap's shell functions (see `shell::bootstrap`), written for its single-quoted word:
/// no `!`, no backslash, no single quote.
/// - `xk`: decodes what [`Kept::encode`] wrote (`$1`) with the kept file's text in `$_d` and its
///   line count in `$_l`, in POSIX `awk`. The file's lines end at a line of their own, and the
///   decoding fails (exit 1) unless there were exactly `$_l` of them and every run of literal
///   lines was whole: a file or a script cut short runs nothing.
/// - `kh`: whether `$_d` is the file `$_i` names (its git blob id), hashing what was read.
pub(crate) const FUNCTIONS: &str = "xk(){ { printf %s \"$_d\";echo;echo @@xk;printf %s \"$1\";echo;}|awk -v m=\"$_l\" -v e=@@xk \
\"BEGIN{while((getline t)>0){if(t==e)break;d[++n]=t};if(n-m)exit 1;while((getline t)>0)if(c>0){print t;c--}\
else{split(t,a);if(a[1]>0)for(j=a[1];j<a[1]+a[2];j++)print d[j];else c=a[2]};if(c)exit 1}\";};\
kh(){ [ \"$(printf %s \"$_d\"|git hash-object --no-filters --stdin 2>/dev/null)\" = \"$_i\" ];}";

/// What the bootstrap runs after answering [`NEED`] (sent with the file, so the command line
/// does not carry it): reads the file (its length on a line, then the file), checks it, and
/// keeps it in `$_f` when the command may write (`$_w`): in a directory of the deploy user's
/// own that is no symbolic link (nor is its parent), as a new file renamed into place. Files
/// there untouched for 30 days (another version's) go.
const KEEP: &str = r#"IFS= read -r h||xe script;_d=$(head -c "$h");kh||xe "the kept scripts"
ks(){
  [ "$_w" = 1 ]||return
  [ -h "$_k" ]||[ -h "${_k%/*}" ]&&return
  [ -d "$_k" ]||mkdir -m 700 "$_k"||return
  [ -O "$_k" ]||return
  (set -C;printf %s "$_d" >"$_f.$$")&&mv -f "$_f.$$" "$_f"
  find "$_k" -type f -mtime +30 -exec rm -f {} +
}
ks 2>/dev/null"#;

/// The kept file, with its id and an index of its lines.
pub struct Kept {
    /// The file's text.
    pub text: &'static str,
    /// Its git blob id, as `git hash-object` prints it.
    pub id: String,
    lines: Vec<&'static str>,
    /// Where each line stands in `lines` (0-based).
    at: HashMap<&'static str, Vec<u32>>,
}

/// The kept file of this version of the tool.
pub fn kept() -> &'static Kept {
    static KEPT_FILE: OnceLock<Kept> = OnceLock::new();
    KEPT_FILE.get_or_init(|| Kept::new(KEPT))
}

/// A copy op is worth its line (`<first> <count>`) only for a run longer than this, in bytes.
const WORTH_A_COPY: usize = 8;

impl Kept {
    /// The kept file made of `text`.
    pub fn new(text: &'static str) -> Kept {
        let id = git2::Oid::hash_object(git2::ObjectType::Blob, text.as_bytes())
            .map(|oid| oid.to_string())
            .unwrap_or_default();
        let lines: Vec<&'static str> = text.split('\n').collect();
        let mut at: HashMap<&'static str, Vec<u32>> = HashMap::new();
        for (index, line) in lines.iter().enumerate() {
            at.entry(line).or_default().push(index as u32);
        }
        Kept { text, id, lines, at }
    }

    /// What the deployer sends a server that answered [`NEED`]: what keeps the file, then the
    /// file, each after its length on a line.
    pub fn sent(&self) -> Vec<u8> {
        format!("{}\n{KEEP}{}\n{}", KEEP.len(), self.text.len(), self.text).into_bytes()
    }

    /// How many lines the file has, as `awk` counts them.
    pub fn line_count(&self) -> usize {
        self.lines.len()
    }

    /// `body` (a script as the bootstrap runs it: lines, the last one [`super::SCRIPT_END`]) as
    /// runs of the file's lines and lines of its own: for each line, the longest run of the
    /// file that starts with it and goes on as `body` does.
    pub fn encode(&self, body: &str) -> String {
        let wanted: Vec<&str> = body.split('\n').collect();
        let mut out = String::new();
        let mut literal: Vec<&str> = Vec::new();
        let flush = |out: &mut String, literal: &mut Vec<&str>| {
            if !literal.is_empty() {
                out.push_str(&format!("0 {}\n", literal.len()));
                for line in literal.drain(..) {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        };
        let mut i = 0;
        while i < wanted.len() {
            let (mut start, mut length) = (0, 0);
            for &candidate in self.at.get(wanted[i]).map(Vec::as_slice).unwrap_or_default() {
                let candidate = candidate as usize;
                let run = wanted[i..].iter().zip(&self.lines[candidate..]).take_while(|(a, b)| a == b).count();
                if run > length {
                    (start, length) = (candidate, run);
                }
            }
            let bytes: usize = wanted[i..i + length].iter().map(|line| line.len() + 1).sum();
            if length == 0 || bytes <= WORTH_A_COPY {
                literal.push(wanted[i]);
                i += 1;
                continue;
            }
            flush(&mut out, &mut literal);
            out.push_str(&format!("{} {length}\n", start + 1));
            i += length;
        }
        flush(&mut out, &mut literal);
        out
    }

    /// `text` as [`Kept::encode`] writes it, when that decodes to `text` again (the check every
    /// script and batch passes before it is sent so); `None` sends it whole.
    pub fn runs(&self, text: &str) -> Option<String> {
        let encoded = Some(self.encode(text)).filter(|_| !self.id.is_empty())?;
        (self.decode(&encoded).as_deref() == Some(text)).then_some(encoded)
    }

    /// What the bootstrap's `xk` makes of `encoded`: for tests, and to check each encoding
    /// before it is sent.
    pub fn decode(&self, encoded: &str) -> Option<String> {
        let mut lines = Vec::new();
        let mut ops = encoded.strip_suffix('\n').unwrap_or(encoded).split('\n');
        while let Some(op) = ops.next() {
            let (first, count) = op.split_once(' ')?;
            let (first, count): (usize, usize) = (first.parse().ok()?, count.parse().ok()?);
            match first {
                0 => {
                    for _ in 0..count {
                        lines.push(ops.next()?);
                    }
                }
                _ => lines.extend(self.lines.get(first - 1..first - 1 + count)?),
            }
        }
        Some(lines.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_is_mostly_runs_of_the_kept_lines_and_decodes_to_itself() {
        let kept = Kept::new("set -u\nd=/srv/a\necho one\necho two\necho three\nfi\n#@@xtask-deploy-script-end");
        let body = "set -u\nd='/srv/it'\"'\"'s'\necho one\necho two\necho three\nfi\nfi\n#@@xtask-deploy-script-end";
        let encoded = kept.encode(body);
        assert_eq!(encoded, "0 2\nset -u\nd='/srv/it'\"'\"'s'\n3 4\n6 2\n");
        assert_eq!(kept.decode(&encoded).as_deref(), Some(body));
    }

    #[test]
    fn the_kept_file_has_no_last_newline_and_an_id_git_agrees_with() {
        let kept = kept();
        assert!(!KEPT.ends_with('\n') && KEPT.contains(super::super::SCRIPT_END));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kept"), KEPT).unwrap();
        let out = std::process::Command::new("git").arg("hash-object").arg(dir.path().join("kept")).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), kept.id);
    }
}
