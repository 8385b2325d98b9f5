//! What a push would send, counted here without reaching the server (`deploy --dry-run`). The
//! bases are the server's tips that this clone has, as [`super::receive_pack::push`] takes them;
//! with none of them the push sends the deployed commit as a shallow root: its tree, and no
//! history.

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use super::error::GitError;
use crate::plan::Estimate;

/// Counts what a thin-pack push of commit `sha` from `repo` would send to a server whose
/// `repo/` refs point at `tips` and whose `repo/` is shallow at `server_shallow` (if it is),
/// with `git rev-list` (as `git pack-objects` would list them).
pub fn estimate(
    repo: &git2::Repository,
    sha: &str,
    tips: &[String],
    server_shallow: &[String],
) -> Result<Estimate, GitError> {
    let haves: Vec<&String> = tips.iter().filter(|tip| has_object(repo, tip)).collect();
    if haves.is_empty() {
        let objects = count_lines(repo, &["rev-list", "--objects", "--no-object-names", "--no-walk", sha], "")?;
        return Ok(Estimate { commits: 1, objects, tree_only: true });
    }
    let mut input = format!("{sha}\n");
    for have in haves {
        input.push_str(&format!("^{have}\n"));
    }
    if !server_shallow.is_empty() {
        // The push sends the commit as a shallow root, against the trees of the server's tips
        // (see `receive_pack::push_observed`): the same walk, with the same grafts.
        let sha = sha.to_string();
        let grafts = super::receive_pack::Grafts::new(repo, std::iter::once(&sha).chain(server_shallow))?;
        let args = ["--shallow-file", grafts.path(), "rev-list", "--objects-edge-aggressive", "--no-object-names", "--stdin"];
        let listed = count_lines_not_starting(repo, &args, &input, b'-')?;
        return Ok(Estimate { commits: 1, objects: listed, tree_only: false });
    }
    let commits = count_lines(repo, &["rev-list", "--stdin"], &input)?;
    let objects = count_lines(repo, &["rev-list", "--objects", "--no-object-names", "--stdin"], &input)?;
    Ok(Estimate { commits, objects, tree_only: false })
}

fn has_object(repo: &git2::Repository, sha: &str) -> bool {
    git2::Oid::from_str(sha).is_ok_and(|oid| repo.odb().is_ok_and(|odb| odb.exists(oid)))
}

/// Runs `git <args>` in `repo` with `input` on its stdin and counts the lines it prints,
/// without holding them.
fn count_lines(repo: &git2::Repository, args: &[&str], input: &str) -> Result<u64, GitError> {
    count_lines_not_starting(repo, args, input, b'\n')
}

/// Like [`count_lines`], leaving out the lines that start with `skip` (`-`: the edge commits
/// `--objects-edge-aggressive` names).
fn count_lines_not_starting(repo: &git2::Repository, args: &[&str], input: &str, skip: u8) -> Result<u64, GitError> {
    let mut child = Command::new("git")
        .arg("--git-dir")
        .arg(repo.path())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| GitError::Run { command: "rev-list", error })?;
    // rev-list reads its whole input before it writes: no deadlock on the pipes.
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin.write_all(input.as_bytes()).map_err(|error| GitError::Feed { command: "rev-list", error })?;
    drop(stdin);
    let lost = |error| GitError::Lost { command: "rev-list", error };
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let (mut lines, mut skipped, mut at_start) = (0, 0, true);
    let mut buffer = [0u8; 64 * 1024];
    loop {
        let read = stdout.read(&mut buffer).map_err(lost)?;
        if read == 0 {
            break;
        }
        for &byte in &buffer[..read] {
            if at_start && byte == skip && skip != b'\n' {
                skipped += 1;
            }
            if byte == b'\n' {
                lines += 1;
            }
            at_start = byte == b'\n';
        }
    }
    let output = child.wait_with_output().map_err(lost)?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let (status, stderr) = (output.status, stderr.trim().to_string());
        return Err(GitError::Failed { command: "rev-list", status, stderr });
    }
    Ok(lines - skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &std::path::Path, args: &[&str]) -> String {
        let output = crate::local::git().arg("-C").arg(dir).args(args).output().unwrap();
        assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    }

    #[test]
    fn a_first_push_counts_the_tree_and_a_later_one_only_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        git(root, &["init", "-q"]);
        std::fs::create_dir(root.join("src")).unwrap();
        std::fs::write(root.join("src/a.txt"), "a").unwrap();
        std::fs::write(root.join("b.txt"), "b").unwrap();
        let commit = |message: &str| {
            git(root, &["add", "-A"]);
            git(root, &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", message]);
            git(root, &["rev-parse", "HEAD"])
        };
        let first = commit("first");
        std::fs::write(root.join("src/a.txt"), "changed").unwrap();
        let second = commit("second");
        let repo = git2::Repository::open(root).unwrap();
        // The commit, the root tree, src/, and two blobs.
        let whole = Estimate { commits: 1, objects: 5, tree_only: true };
        assert_eq!(estimate(&repo, &second, &[], &[]).unwrap(), whole);
        // A tip this clone does not have is no base: the tree travels.
        assert_eq!(estimate(&repo, &second, &["f".repeat(40)], &[]).unwrap(), whole);
        // The new commit, the root tree, src/ and the changed blob.
        let change = Estimate { commits: 1, objects: 4, tree_only: false };
        assert_eq!(estimate(&repo, &second, &[first.clone(), "f".repeat(40)], &[]).unwrap(), change);
        let nothing = Estimate { commits: 0, objects: 0, tree_only: false };
        assert_eq!(estimate(&repo, &first, std::slice::from_ref(&second), &[]).unwrap(), nothing);
        // A server shallow at `first` (its first deploy sent the tree): the same four, the commit
        // sent as a shallow root against the tip's tree.
        assert_eq!(estimate(&repo, &second, std::slice::from_ref(&first), std::slice::from_ref(&first)).unwrap(), change);
        // Three commits on: still the one commit and what its tree changed, not the history.
        std::fs::write(root.join("b.txt"), "b2").unwrap();
        commit("third");
        std::fs::write(root.join("b.txt"), "b").unwrap();
        let fourth = commit("fourth");
        let shallow = estimate(&repo, &fourth, std::slice::from_ref(&first), std::slice::from_ref(&first)).unwrap();
        assert_eq!(shallow, change);
        let walked = estimate(&repo, &fourth, std::slice::from_ref(&first), &[]).unwrap();
        assert_eq!(walked.commits, 3, "{walked:?}");
    }
}
