//! The embedded demo (`cargo xtask demo`): a throwaway loopback sshd, a small example app in a
//! fresh git repository, deploy-setup and two deploys, then the server's tree and the timings.
//! [`AppRepo`] is also what the tests and the benchmark build their apps with.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::loopback::{toml_string, LoopbackServer};
use crate::report::Reporter;
use crate::run::{deploy, setup, DeployOptions};
use crate::Error;

/// A local git repository holding an application, with commits made through `git2`.
pub struct AppRepo {
    dir: PathBuf,
    repo: git2::Repository,
}

impl AppRepo {
    /// Creates a repository in `dir` (which may exist) and commits `files` as the first commit.
    pub fn create(dir: &Path, files: &[(&str, &str)]) -> Result<AppRepo, Error> {
        fs::create_dir_all(dir).map_err(|err| Error::local(format!("cannot create `{}`: {err}", dir.display())))?;
        let repo = git2::Repository::init(dir).map_err(git_error)?;
        let app = AppRepo { dir: dir.to_path_buf(), repo };
        for (path, content) in files {
            app.write(path, content)?;
        }
        app.commit_all("initial commit")?;
        Ok(app)
    }

    /// The repository's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The app's `Cargo.toml`.
    pub fn manifest_path(&self) -> PathBuf {
        self.dir.join("Cargo.toml")
    }

    /// The `git2` handle, for tests that look at history.
    pub fn repo(&self) -> &git2::Repository {
        &self.repo
    }

    /// Writes `content` to `path` (relative to the repository), creating parent directories.
    pub fn write(&self, path: &str, content: &str) -> Result<(), Error> {
        let full = self.dir.join(path);
        if let Some(parent) = full.parent() {
            fs::create_dir_all(parent)
                .map_err(|err| Error::local(format!("cannot create `{}`: {err}", parent.display())))?;
        }
        fs::write(&full, content).map_err(|err| Error::local(format!("cannot write `{}`: {err}", full.display())))
    }

    /// Stages everything and commits it on the current branch; returns the new commit's SHA.
    pub fn commit_all(&self, message: &str) -> Result<String, Error> {
        let mut index = self.repo.index().map_err(git_error)?;
        index.add_all(["*"], git2::IndexAddOption::DEFAULT, None).map_err(git_error)?;
        index.update_all(["*"], None).map_err(git_error)?;
        index.write().map_err(git_error)?;
        let tree = self.repo.find_tree(index.write_tree().map_err(git_error)?).map_err(git_error)?;
        let signature = git2::Signature::now("xtask-deploy demo", "demo@localhost").map_err(git_error)?;
        let parent = self.repo.head().ok().and_then(|head| head.peel_to_commit().ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        let id = self.repo.commit(Some("HEAD"), &signature, &signature, message, &tree, &parents).map_err(git_error)?;
        Ok(id.to_string())
    }
}

/// A small Rust service whose output names `version`: what `rustc -O` makes of it is a 4 MB
/// binary (std's debug info included), like a real service's.
pub fn service_source(version: u32) -> String {
    format!(
        r#"use std::collections::HashMap;
fn main() {{
    let mut seen: HashMap<String, u64> = HashMap::new();
    for arg in std::env::args() {{
        *seen.entry(arg).or_default() += 1;
    }}
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map(|l| l.local_addr());
    let worker = std::thread::spawn(|| 1 + 1);
    println!("version {version} {{:?}} {{:?}} {{}}", seen.len(), listener.is_ok(), worker.join().unwrap());
}}
"#
    )
}

/// The size of git's own thin pack that turns `old` into `new` (one file, one commit each, in a
/// scratch repository): the floor for sending a changed build output.
pub fn git_thin_delta(old: &[u8], new: &[u8]) -> Result<u64, Error> {
    let dir = tempfile::tempdir().map_err(|err| Error::local(format!("cannot make a temporary directory: {err}")))?;
    let sh = xshell::Shell::new().map_err(|err| Error::local(format!("cannot start a local shell: {err}")))?;
    sh.change_dir(dir.path());
    let failed = |err: xshell::Error| Error::local(format!("git failed: {err}"));
    crate::local::own_repo(xshell::cmd!(sh, "git init -q .")).quiet().run().map_err(failed)?;
    for (round, content) in [old, new].into_iter().enumerate() {
        fs::write(dir.path().join("app"), content).map_err(|err| Error::local(format!("cannot write: {err}")))?;
        let message = format!("build {round}");
        crate::local::own_repo(xshell::cmd!(sh, "git add app")).quiet().run().map_err(failed)?;
        crate::local::own_repo(xshell::cmd!(sh, "git -c user.name=t -c user.email=t@localhost commit -qm {message}"))
            .quiet()
            .run()
            .map_err(failed)?;
    }
    let pack =
        crate::local::own_repo(xshell::cmd!(sh, "git pack-objects --thin --stdout --revs --delta-base-offset -q"))
            .stdin("HEAD\n^HEAD~1\n")
            .quiet()
            .output()
            .map_err(failed)?;
    Ok(pack.stdout.len() as u64)
}

/// The size of `content` as git packs it alone (one blob, compressed, no delta): what sending
/// a build output whole costs.
pub fn git_packed_size(content: &[u8]) -> Result<u64, Error> {
    let dir = tempfile::tempdir().map_err(|err| Error::local(format!("cannot make a temporary directory: {err}")))?;
    let sh = xshell::Shell::new().map_err(|err| Error::local(format!("cannot start a local shell: {err}")))?;
    sh.change_dir(dir.path());
    let failed = |err: xshell::Error| Error::local(format!("git failed: {err}"));
    crate::local::own_repo(xshell::cmd!(sh, "git init -q .")).quiet().run().map_err(failed)?;
    fs::write(dir.path().join("app"), content).map_err(|err| Error::local(format!("cannot write: {err}")))?;
    let id = crate::local::own_repo(xshell::cmd!(sh, "git hash-object -w app")).quiet().read().map_err(failed)?;
    let pack = crate::local::own_repo(xshell::cmd!(sh, "git pack-objects --stdout -q"))
        .stdin(format!("{id}\n"))
        .quiet()
        .output()
        .map_err(failed)?;
    Ok(pack.stdout.len() as u64)
}

/// The `Cargo.toml` of an example app deployed to `deploy_to` on `server`, with `extra` lines
/// added to its `[package.metadata.deploy]` table.
pub fn app_manifest(server: &LoopbackServer, deploy_to: &Path, extra: &str) -> String {
    format!(
        "[package]\nname = \"hello\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
         [package.metadata.deploy]\ndeploy_to = {}\n{extra}\n{}",
        toml_string(&deploy_to.display().to_string()),
        server.config_toml("package.metadata.deploy"),
    )
}

/// Runs the demo, rendering progress through `reporter` and the summary into `out`.
pub fn run(reporter: &mut dyn Reporter, out: &mut dyn Write) -> Result<(), Error> {
    let server =
        LoopbackServer::start().map_err(|err| Error::local(format!("cannot start the loopback sshd: {err}")))?;
    let deploy_to = server.dir().join("srv").join("hello");
    let manifest = app_manifest(&server, &deploy_to, "keep_releases = 3");
    let app = AppRepo::create(
        &server.dir().join("hello"),
        &[
            ("Cargo.toml", manifest.as_str()),
            ("src/main.rs", "fn main() {\n    println!(\"hello, world\");\n}\n"),
            ("README.md", "# hello\n\nThe xtask-deploy demo app.\n"),
        ],
    )?;
    let print = |out: &mut dyn Write, text: String| -> Result<(), Error> {
        writeln!(out, "{text}").map_err(|err| Error::local(format!("cannot write the demo output: {err}")))
    };
    print(out, format!("demo: sshd on 127.0.0.1:{}, app in `{}`", server.port(), app.dir().display()))?;

    let config = Config::load(Some(&app.manifest_path()))?;
    print(out, "demo: cargo xtask deploy-setup".to_string())?;
    setup(&config, reporter)?;
    print(out, "demo: cargo xtask deploy (first deploy)".to_string())?;
    let first = deploy(&config, &DeployOptions::default(), reporter)?;
    app.write("src/main.rs", "fn main() {\n    println!(\"hello again, world\");\n}\n")?;
    app.commit_all("say hello again")?;
    print(out, "demo: cargo xtask deploy (after a new commit)".to_string())?;
    let second = deploy(&config, &DeployOptions::default(), reporter)?;

    print(out, String::new())?;
    print(out, format!("{}:", deploy_to.display()))?;
    print(out, tree(&deploy_to))?;
    print(out, "timings (loopback):".to_string())?;
    for (label, report) in [("first deploy", &first), ("second deploy", &second)] {
        print(
            out,
            format!(
                "  {label:<14} {:>6.0} ms   {:>8} bytes pushed   release {} ({})",
                report.elapsed.as_secs_f64() * 1000.0,
                report.servers.iter().map(|server| server.bytes_sent).sum::<u64>(),
                report.release,
                &report.sha[..12],
            ),
        )?;
    }
    print(out, "demo: stopping the loopback sshd".to_string())?;
    drop(server);
    Ok(())
}

/// A short listing of a deploy directory: top-level entries, releases with their REVISION,
/// and revisions.log.
pub fn tree(deploy_to: &Path) -> String {
    let mut lines = Vec::new();
    let mut entries: Vec<_> = fs::read_dir(deploy_to).map(|dir| dir.flatten().collect()).unwrap_or_default();
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().to_string();
        let path = entry.path();
        if let Ok(target) = fs::read_link(&path) {
            lines.push(format!("  {name} -> {}", target.display()));
        } else if path.is_dir() {
            lines.push(format!("  {name}/"));
            if name == "releases" {
                let mut releases: Vec<_> = fs::read_dir(&path).map(|dir| dir.flatten().collect()).unwrap_or_default();
                releases.sort_by_key(|entry| entry.file_name());
                for release in releases {
                    let revision = fs::read_to_string(release.path().join("REVISION")).unwrap_or_default();
                    lines.push(format!("    {}/  REVISION {}", release.file_name().to_string_lossy(), revision.trim()));
                }
            }
        } else {
            lines.push(format!("  {name}"));
            if name == "revisions.log" {
                for line in fs::read_to_string(&path).unwrap_or_default().lines() {
                    lines.push(format!("    {line}"));
                }
            }
        }
    }
    lines.join("\n")
}

fn git_error(err: git2::Error) -> Error {
    Error::local(format!("git: {}", err.message()))
}
