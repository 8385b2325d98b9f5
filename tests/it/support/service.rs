//! A real systemd host (a Debian container booted by `systemd-nspawn`, reached over its own sshd
//! as the non-root user `deploy`) with the example app (`examples/socket_service.rs`) configured
//! as its service `web`, and a client that connects to it every 2 ms.

use xtask_deploy::config::ServiceScope;
use xtask_deploy::container::app::example_binary;
use xtask_deploy::container::SystemdHost;
use xtask_deploy::demo::AppRepo;
use xtask_deploy::loopback::toml_string;
use xtask_deploy::report::{Collect, Event, Quiet};
use xtask_deploy::{Config, DeployOptions, Error};

/// A free port on 127.0.0.1 (the container shares this machine's network).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A booted systemd host and the example app configured to run on it as the service `web`.
pub struct ServiceWorld {
    pub app: AppRepo,
    pub port: u16,
    _dir: tempfile::TempDir,
    // Dropped last: shuts the container down.
    pub host: SystemdHost,
}

impl ServiceWorld {
    /// The app with `service` lines in `[package.metadata.deploy.services.web]` (its `command`
    /// and `listen` are set) and `extra` lines in the deploy table.
    pub fn new(service: &str, extra: &str) -> ServiceWorld {
        let host =
            SystemdHost::boot().expect("boot the systemd host (`bash .ci/install-deps` makes its root filesystem)");
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let binary = example_binary().expect("build the example service");
        let manifest = format!(
            "[package]\nname = \"web\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
             [package.metadata.deploy]\ndeploy_to = \"/home/deploy/app\"\nkeep_releases = 3\n\
             build = [\"mkdir -p dist\", {copy}]\nartifacts = [\"dist/app\"]\n{extra}\n\
             [package.metadata.deploy.services.web]\ncommand = \"dist/app\"\nlisten = [\"127.0.0.1:{port}\"]\n{service}\n\n{servers}",
            copy = toml_string(&format!("cp {} dist/app", binary.display())),
            servers = host.config_toml("package.metadata.deploy"),
        );
        let app = AppRepo::create(
            &dir.path().join("app"),
            &[("Cargo.toml", &manifest), (".gitignore", "/dist\n/target\n"), ("src/main.rs", "fn main() {}\n")],
        )
        .unwrap();
        ServiceWorld { app, port, _dir: dir, host }
    }

    pub fn config(&self) -> Config {
        let config = Config::load(Some(&self.app.manifest_path())).expect("load config");
        Config { target_dir: self.app.dir().join("target"), ..config }
    }

    /// `deploy-setup`, returning the warnings it reported.
    pub fn setup(&self) -> Vec<String> {
        let mut events = Collect(Vec::new());
        xtask_deploy::setup(&self.config(), &mut events).expect("deploy-setup");
        events
            .0
            .into_iter()
            .filter_map(|event| match event {
                Event::Warning { message } => Some(message),
                _ => None,
            })
            .collect()
    }

    pub fn try_deploy(&self) -> Result<xtask_deploy::DeployReport, Error> {
        xtask_deploy::deploy(&self.config(), &DeployOptions::default(), &mut Quiet)
    }

    /// A new commit, then a deploy; returns the release name.
    pub fn deploy_change(&self, n: usize) -> String {
        self.app.write("src/main.rs", &format!("fn main() {{ /* {n} */ }}\n")).unwrap();
        self.app.commit_all(&format!("change {n}")).unwrap();
        match self.try_deploy() {
            Ok(report) => report.release,
            Err(err) => panic!("deploy {n}: {err}"),
        }
    }

    /// The main pid of `web.service`, a unit of `scope`.
    pub fn main_pid(&self, scope: ServiceScope) -> String {
        let output = match scope {
            ServiceScope::User => self.host.user_sh("systemctl --user show -p MainPID --value web.service"),
            ServiceScope::System => self.host.root_sh("systemctl show -p MainPID --value web.service"),
        };
        String::from_utf8_lossy(&output.unwrap().stdout).trim().to_string()
    }

    /// The environment of the main process of `web.service` (a unit of `scope`), one
    /// `NAME=value` per entry.
    pub fn service_environ(&self, scope: ServiceScope) -> Vec<String> {
        let pid = self.main_pid(scope);
        let output = self.host.root_sh(&format!("cat /proc/{pid}/environ")).unwrap();
        output.stdout.split(|byte| *byte == 0).map(|entry| String::from_utf8_lossy(entry).into_owned()).collect()
    }

    /// Commits a release whose service exits at start (the example service's `crash-at-start`).
    pub fn commit_crashing_release(&self) {
        self.app.write("crash-at-start", "").unwrap();
        self.app.commit_all("a release that exits at start").unwrap();
    }

    /// The release `current` points at on the host.
    pub fn current(&self) -> String {
        let link = std::fs::read_link(self.host.root_dir().join("home/deploy/app/current")).unwrap();
        link.file_name().unwrap().to_string_lossy().into_owned()
    }

    /// One connection to the service: the release it answered from.
    pub fn ask(&self) -> std::io::Result<String> {
        xtask_deploy::container::app::ask(self.port)
    }
}
