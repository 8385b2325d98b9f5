//! The benchmark's build-output row: a small service built by `rustc -O` (a 4 MB binary, std's
//! debug info included) and a 1 MiB data file as its artifacts, deployed, changed by one line,
//! built and deployed again. What the second deploy sends is counted by a [`Relay`] in front of
//! the sshd (the whole SSH connection), beside the artifacts sent whole (an upload), `rsync` of
//! them, and git's own thin-pack delta of the two binaries.

use std::io::Write;
use std::time::Duration;

use xshell::Shell;

use crate::config::Config;
use crate::demo::{app_manifest, git_thin_delta, service_source, AppRepo};
use crate::loopback::LoopbackServer;
use crate::relay::Relay;
use crate::report::Quiet;
use crate::run::{deploy, setup, DeployOptions};
use crate::Error;

/// Deploys the service twice to `server` through a relay and prints the row to `out`.
pub(super) fn run(server: &LoopbackServer, sh: &Shell, out: &mut dyn Write) -> Result<(), Error> {
    let relay = Relay::start(server.port(), Duration::ZERO)
        .map_err(|err| Error::local(format!("cannot start the counting relay: {err}")))?;
    server.trust_port(relay.port()).map_err(|err| Error::local(format!("cannot trust the relay's port: {err}")))?;
    let dir = server.dir().join("binary-app");
    let extra = "build = [\"mkdir -p target/release\", \"rustc -O src/main.rs -o target/release/app\"]\n\
                 artifacts = [\"target/release/app\", \"target/release/data.bin\"]";
    let manifest = app_manifest(server, &server.dir().join("srv").join("binary-app"), extra).replacen(
        &format!("port = {}\n", server.port()),
        &format!("port = {}\n", relay.port()),
        1,
    );
    let app = AppRepo::create(
        &dir,
        &[("Cargo.toml", &manifest), (".gitignore", "/target\n"), ("src/main.rs", &service_source(1))],
    )?;
    let release = dir.join("target/release");
    let data: Vec<u8> = (0..1u32 << 20).map(|n| (n.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::create_dir_all(&release)
        .and_then(|()| std::fs::write(release.join("data.bin"), &data))
        .map_err(|err| Error::local(format!("cannot write the data file: {err}")))?;
    // The build writes `target/` by hand, not through cargo: whatever `CARGO_TARGET_DIR` says.
    let config = Config { target_dir: dir.join("target"), ..Config::load(Some(&app.manifest_path()))? };
    setup(&config, &mut Quiet)?;
    deploy(&config, &DeployOptions::default(), &mut Quiet)?;
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|err| Error::local(format!("cannot read `{}`: {err}", path.display())))
    };
    let old = read(&release.join("app"))?;
    let has_rsync = xshell::cmd!(sh, "rsync --version").quiet().ignore_stdout().run().is_ok();
    let artifacts = release.display().to_string() + "/";
    if has_rsync {
        super::rsync(sh, server, &artifacts, "rsync-binary")?;
    }

    app.write("src/main.rs", &service_source(2))?;
    app.commit_all("one line changed")?;
    relay.reset();
    let report = deploy(&config, &DeployOptions::default(), &mut Quiet)?;
    let sent = relay.bytes_to_target();
    let new = read(&release.join("app"))?;
    let rsync = if has_rsync { Some(super::rsync(sh, server, &artifacts, "rsync-binary")?.1) } else { None };
    let delta = git_thin_delta(&old, &new)?;
    let build = report.servers[0].build_bytes.unwrap_or(0);
    let line = |out: &mut dyn Write, text: String| -> Result<(), Error> {
        writeln!(out, "{text}").map_err(|err| Error::local(format!("cannot write the report: {err}")))
    };
    line(
        out,
        format!(
            "Rust binary artifact (a `rustc -O` service, {} bytes, and a 1 MiB data file), one-line change:",
            new.len()
        ),
    )?;
    line(
        out,
        format!("  this deploy, all SSH traffic to the server: {sent} bytes ({build} of the pack are build output)"),
    )?;
    line(out, format!("  the artifacts sent whole (an upload):       {} bytes", new.len() + data.len()))?;
    match rsync {
        Some(bytes) => line(out, format!("  rsync of the artifacts:                     {bytes} bytes sent"))?,
        None => line(out, "  rsync of the artifacts:                     not installed".to_string())?,
    }
    line(out, format!("  git's own thin-pack delta of the binaries:  {delta} bytes"))?;

    // The same change from a CI runner's fresh depth-1 clone, which has none of the server's
    // build output: its release commit comes down first, as delta bases.
    app.write("src/main.rs", &service_source(3))?;
    app.commit_all("one more line changed")?;
    let clone = server.dir().join("binary-app-ci");
    let url = format!("file://{}", dir.display());
    crate::local::own_repo(xshell::cmd!(sh, "git clone -q --depth 1 {url} {clone}"))
        .quiet()
        .run()
        .map_err(|err| Error::local(format!("cannot clone the app: {err}")))?;
    std::fs::create_dir_all(clone.join("target/release"))
        .and_then(|()| std::fs::write(clone.join("target/release/data.bin"), &data))
        .map_err(|err| Error::local(format!("cannot write the data file: {err}")))?;
    let ci = Config { target_dir: clone.join("target"), ..Config::load(Some(&clone.join("Cargo.toml")))? };
    let counted = |out: &mut dyn Write, what: &str, config: &Config, old: &[u8], new_path: &std::path::Path| {
        relay.reset();
        let report = deploy(config, &DeployOptions::default(), &mut Quiet)?;
        let new = read(new_path)?;
        let delta = git_thin_delta(old, &new)?;
        let server = &report.servers[0];
        line(
            out,
            format!(
                "  {what}: {} bytes up, {} bytes down (SSH); pushed {}, {} of it build output; \
                 delta bases fetched {} bytes; git's delta {delta} bytes",
                relay.bytes_to_target(),
                relay.bytes_from_target(),
                server.bytes_sent,
                server.build_bytes.unwrap_or(0),
                server.bytes_received,
            ),
        )?;
        Ok::<_, Error>(new)
    };
    let built_by_ci = counted(out, "from a fresh CI clone (depth 1)", &ci, &new, &clone.join("target/release/app"))?;
    // Then from the laptop, which lacks the release commit CI made.
    app.write("src/main.rs", &service_source(4))?;
    app.commit_all("a change after CI's deploy")?;
    counted(out, "from the laptop after a CI deploy", &config, &built_by_ci, &release.join("app"))?;
    // What `repo/` holds after these four deploys, once the last one's tidying is done.
    let deploy_to = std::path::PathBuf::from(&config.deploy_to);
    let tidying = deploy_to.join(".xtask-deploy/tidying");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    std::thread::sleep(Duration::from_millis(500));
    while tidying.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let repo = xshell::cmd!(sh, "du -sk {deploy_to}/repo").quiet().read().unwrap_or_default();
    let repo = repo.split_whitespace().next().unwrap_or("?").to_string();
    line(out, format!("  the server's repo/ after these 4 deploys (tidied): {repo} KiB"))
}
