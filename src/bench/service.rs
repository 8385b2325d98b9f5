//! The service rows: the example service (`examples/socket_service.rs`) deployed again and again
//! to a real systemd (a [`SystemdHost`]) as a user-scope service, while a client connects every
//! 2 ms: through systemd's socket (`listen`) and with a plain restart (the app binds its own
//! port). The rows print the refused connections per deploy, and a deploy's time with its restart.

use std::io::Write;
use std::time::Duration;

use crate::container::app::{example_binary, Prober};
use crate::container::SystemdHost;
use crate::demo::AppRepo;
use crate::loopback::toml_string;
use crate::report::Quiet;
use crate::run::{deploy, setup, DeployOptions};
use crate::{Config, Error};

use super::{line, median, ms};

/// Boots the host, deploys both ways and prints the rows.
pub(super) fn run(rounds: usize, out: &mut dyn Write) -> Result<(), Error> {
    let local = |what: &str, err: std::io::Error| Error::local(format!("{what}: {err}"));
    let host = SystemdHost::boot().map_err(|err| local("cannot boot the systemd host", err))?;
    let binary = example_binary().map_err(|err| local("cannot build the example service", err))?;
    let rounds = rounds.max(3);
    line(
        out,
        format!(
            "a service under a real systemd (Debian 12 in systemd-nspawn, user scope, deploy user): {rounds} deploys \
             of the example service while a client connects every 2 ms"
        ),
    )?;
    for socket in [true, false] {
        let dir = tempfile::tempdir().map_err(|err| local("cannot make a temp dir", err))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|err| local("no free port", err))?
            .port();
        let service = match socket {
            true => format!("command = \"dist/app\"\nlisten = [\"127.0.0.1:{port}\"]"),
            false => format!("command = \"dist/app --listen 127.0.0.1:{port}\""),
        };
        let name = if socket { "socket" } else { "plain" };
        let manifest = format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
             [package.metadata.deploy]\ndeploy_to = \"/home/deploy/{name}\"\nkeep_releases = 3\n\
             build = [\"mkdir -p dist\", {copy}]\nartifacts = [\"dist/app\"]\n\n\
             [package.metadata.deploy.services.{name}]\n{service}\n\n{servers}",
            copy = toml_string(&format!("cp {} dist/app", binary.display())),
            servers = host.config_toml("package.metadata.deploy"),
        );
        let files =
            [("Cargo.toml", manifest.as_str()), (".gitignore", "/dist\n/target\n"), ("src/main.rs", "fn main() {}\n")];
        let app = AppRepo::create(&dir.path().join(name), &files)?;
        let config = Config::load(Some(&app.manifest_path()))?;
        let config = Config { target_dir: app.dir().join("target"), ..config };
        setup(&config, &mut Quiet)?;
        deploy(&config, &DeployOptions::default(), &mut Quiet)?;
        let prober = Prober::start(port);
        let mut times = Vec::new();
        for round in 0..rounds {
            app.write("src/main.rs", &format!("fn main() {{ /* {round} */ }}\n"))?;
            app.commit_all(&format!("round {round}"))?;
            times.push(ms(deploy(&config, &DeployOptions::default(), &mut Quiet)?.elapsed));
        }
        std::thread::sleep(Duration::from_millis(200));
        let seen = prober.stop();
        let failed = seen.iter().filter(|got| got.is_err()).count();
        let how = match socket {
            true => "through systemd's socket (`listen`)",
            false => "plain restart (the app binds its port)",
        };
        line(
            out,
            format!(
                "  {how}: {failed} of {} connections refused or failed, {:.1} per deploy; a deploy with its \
                 restart {:.0} ms (median)",
                seen.len(),
                failed as f64 / rounds as f64,
                median(times)
            ),
        )?;
    }
    Ok(())
}
