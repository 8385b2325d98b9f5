//! This repository's own commands, the demo and the benchmark (the `testkit` feature): an
//! adopter's xtask needs not have them.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{start, ui::Ui, Output};
use crate::{exit, Error};

// Documented for rustdoc only, as `Output` is.
#[cfg_attr(
    doc,
    doc = "This repository's own commands (the demo and the benchmark), which an adopter's xtask \
           needs not have."
)]
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum DevCommand {
    /// Deploy an example app twice into a throwaway sshd on 127.0.0.1 and show the result.
    Demo(Demo),
    /// Time deploys of this repository into loopback sshds: first and incremental, near and far
    /// (through a delaying relay), on disk and tmpfs, as root and as a new user, from a shallow clone.
    Bench(Bench),
}

#[derive(Debug, Args)]
pub struct Demo {}

#[derive(Debug, Args)]
pub struct Bench {
    /// How many incremental deploys each row times (the fleets at most 5).
    #[arg(long, default_value_t = 9)]
    rounds: usize,
    /// The repository to clone and deploy (default: this one), e.g. a large one.
    #[arg(long, value_name = "PATH")]
    repo: Option<PathBuf>,
    /// Round-trip times to add with a relay in front of the server, in milliseconds (the
    /// distance rows; the far fleets and the "as the world is" row take the largest).
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "0,50")]
    rtt_ms: Vec<u64>,
    /// Sections not to run: binary, fleet, distance, places, shallow, service, bastion (the first and the
    /// incremental deploys always run).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    skip: Vec<crate::bench::Section>,
}

impl DevCommand {
    /// Runs the demo or the benchmark; returns the process exit code, as [`Command::run`].
    pub fn run(self, output: &Output) -> ExitCode {
        let mut ui = start(output);
        let (name, result) = match self {
            DevCommand::Demo(cmd) => ("demo", cmd.run(&mut ui)),
            DevCommand::Bench(cmd) => ("bench", cmd.run()),
        };
        let stopped = ": the loopback servers it started are stopped and their files removed";
        ExitCode::from(ui.exit(name, result.map_err(|err| crate::interrupt::explain(err, || stopped.to_string()))))
    }
}

impl Demo {
    fn run(self, ui: &mut Ui) -> Result<u8, Error> {
        // Under --json, stdout carries only events: the demo's own report goes to stderr.
        let mut out: Box<dyn std::io::Write> =
            if ui.json() { Box::new(std::io::stderr()) } else { Box::new(std::io::stdout()) };
        crate::demo::run(ui, &mut out)?;
        Ok(exit::SUCCESS)
    }
}

impl Bench {
    fn run(self) -> Result<u8, Error> {
        // This repository (the library's), unless told another.
        let repo = self.repo.unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
        let options = crate::bench::Options {
            rounds: self.rounds,
            rtts: self.rtt_ms.into_iter().map(std::time::Duration::from_millis).collect(),
            skip: self.skip,
        };
        crate::bench::run(&repo, &options, &mut std::io::stdout())?;
        Ok(exit::SUCCESS)
    }
}
