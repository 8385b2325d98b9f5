//! The tables and the dry run's text, as strings.

use crate::check::{CheckReport, CheckStatus};
use crate::plan::Phase;

/// The `deploy-check` table: one row per server and check.
pub(super) fn render_checks(report: &CheckReport) -> String {
    let width = report.checks.iter().map(|row| row.server.len()).max().unwrap_or(0).max("server".len());
    let mut out = format!("{:<width$}  {:<12}  {:<7}  detail\n", "server", "check", "result");
    for row in &report.checks {
        let status = match row.status {
            CheckStatus::Ok => "ok",
            CheckStatus::Warn => "warn",
            CheckStatus::Fail => "FAIL",
            CheckStatus::Skipped => "skipped",
        };
        out.push_str(&format!("{:<width$}  {:<12}  {:<7}  {}\n", row.server, row.name, status, row.detail));
    }
    let failed = report.checks.iter().filter(|row| row.status == CheckStatus::Fail).count();
    let warned: Vec<String> = report
        .checks
        .iter()
        .filter(|row| row.status == CheckStatus::Warn)
        .map(|row| format!("`{}` on {}", row.name, row.server))
        .collect();
    out.push_str(&match (failed, warned.len()) {
        (0, 0) => "\nA deploy would get past every check.\n".to_string(),
        // Past every check is not all well: a warning (the service down, say) is said with it.
        (0, count) => format!(
            "\nA deploy would get past every check, but {count} warning(s) need a look: {}. See the warn rows above.\n",
            warned.join(", ")
        ),
        (failed, _) => format!("\n{failed} check(s) failed: a deploy would fail. Fix the FAIL rows above.\n"),
    });
    out
}

/// The dry run's text: the commit and the release it would become, the local commands, then
/// per server what a deploy would do there; with `verbose`, every script after it.
pub(super) fn render_dry_run(dry_run: &crate::plan::DryRun, config: &crate::Config, verbose: bool) -> String {
    let mut out = format!(
        "Dry run of a deploy of {} ({}) as release {}: nothing was changed, on the servers or here\n\
         (the release name moves on if the deploy starts in a later second)\n",
        dry_run.revision,
        short(&dry_run.sha),
        dry_run.release
    );
    let steps = dry_run.servers.first().map(|server| server.steps.as_slice()).unwrap_or_default();
    let local: Vec<&crate::plan::dry_run::PlannedStep> = steps.iter().filter(|step| step.local).collect();
    if !local.is_empty() {
        out.push_str("\nLocally, once:\n");
        for step in local {
            out.push_str(&format!("  {}\n", step_line(step)));
        }
    }
    for server in &dry_run.servers {
        out.push_str(&format!("\n{}\n", server.server));
        if let Some(why) = &server.not_reached {
            out.push_str(&format!("  not reached: {why}\n"));
            continue;
        }
        let mut line = |label: &str, text: &str| out.push_str(&format!("  {label:<12} {text}\n"));
        if let Some(stop) = &server.stop {
            line("would stop", stop);
        }
        match (&server.current, &server.current_sha) {
            (Some(name), Some(sha)) => line("current", &format!("release {name} ({})", short(sha))),
            (Some(name), None) => line("current", &format!("release {name} (no REVISION)")),
            _ => line("current", "none (no release is current)"),
        }
        let deploy = if !server.up_to_date {
            format!("{} as release {}", short(&server.sha), server.release)
        } else if dry_run.force {
            format!("already current; `--force` makes release {} of it all the same", server.release)
        } else if dry_run.up_to_date() {
            "already current: a deploy would change nothing here (exit 3) without `--force`".to_string()
        } else {
            format!("already current; release {} of it all the same, as other servers need it", server.release)
        };
        line("would deploy", &deploy);
        line("would send", &server.transfer);
        let keep = format!("`keep_releases = {}`", config.keep_releases);
        if server.prune.is_empty() {
            line("would prune", &format!("nothing ({keep})"));
        } else {
            line("would prune", &format!("{} ({keep})", server.prune.join(", ")));
        }
        for release in &server.unfinished {
            line("would remove", &format!("release {release} first, which an interrupted deploy left unfinished"));
        }
        match (&server.locked_by, &server.stale_lock) {
            (Some(holder), _) => line("lock", &format!("held by {holder}")),
            (None, Some(holder)) => {
                line("lock", &format!("stale, of {holder}: its connection is gone, a deploy takes it over"))
            }
            (None, None) => line("lock", "free"),
        }
        let remote: Vec<String> = server.steps.iter().filter(|step| !step.local).map(step_line).collect();
        for (index, step) in remote.iter().enumerate() {
            line(if index == 0 { "would run" } else { "" }, step);
        }
        for warning in &server.warnings {
            line("warning", warning);
        }
    }
    out.push('\n');
    out.push_str(&conclusion(dry_run));
    if verbose {
        out.push_str("\n# Every script, as the deploy would run it (`-v`)\n");
        out.push_str(&render_plan(&dry_run.plans, config));
    }
    out
}

/// The dry run's last line: what a deploy would come to.
fn conclusion(dry_run: &crate::plan::DryRun) -> String {
    let names = |pick: &dyn Fn(&crate::plan::ServerPlan) -> bool| -> Vec<&str> {
        dry_run.servers.iter().filter(|server| pick(server)).map(|server| server.server.as_str()).collect()
    };
    let unreached = names(&|server| server.not_reached.is_some());
    let stopped = names(&|server| server.stop.is_some());
    if !unreached.is_empty() {
        format!(
            "Not reached: {}: what a deploy would do there is not known (`cargo xtask deploy-check` says more).\n",
            unreached.join(", ")
        )
    } else if !stopped.is_empty() {
        format!("A deploy now would stop at {} before changing anything.\n", stopped.join(", "))
    } else if dry_run.up_to_date() && !dry_run.force {
        let steps = dry_run.servers.first().map(|server| server.steps.as_slice()).unwrap_or_default();
        // The servers are read while the build runs: a deploy stops its build once it finds this
        // out (a server not at rest, under another deploy's lock, is not "current" here).
        let built = if steps.iter().any(|step| step.phase == Phase::Build) { ", stopping its build" } else { "" };
        format!(
            "{} is current on every server: a deploy would change nothing (exit 3) without `--force`{built}.\n",
            short(&dry_run.sha)
        )
    } else {
        format!("A deploy would make release {} current on {} server(s).\n", dry_run.release, dry_run.servers.len())
    }
}

fn step_line(step: &crate::plan::dry_run::PlannedStep) -> String {
    let when = match step.phase {
        Phase::OnFailure => " (if the deploy fails)",
        Phase::Build => " (before any server is locked)",
        _ => "",
    };
    format!("{}{when}: `{}`", step.phase, step.command)
}

/// `text` on one line of a table: control characters as spaces, cut to `width` characters
/// with `…` when longer.
fn table_cell(text: &str, width: usize) -> String {
    let text: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if text.chars().count() <= width {
        return text;
    }
    let cut: String = text.chars().take(width.saturating_sub(1)).collect();
    format!("{}…", cut.trim_end())
}

/// The first 12 characters of a SHA, as the status lines show it.
fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// The dry run's scripts: per phase, what runs where, with each remote script in full.
fn render_plan(plans: &[crate::plan::Plan], config: &crate::Config) -> String {
    use crate::plan::{Action, Plan};
    let plan = &plans[0];
    let names: Vec<String> = config.servers.iter().map(|server| server.display_name()).collect();
    let everywhere = format!("on {}", names.join(", "));
    // The servers whose plan runs the step `runs` picks (a remote hook's `roles` and `once`
    // may leave some out).
    let on = |runs: &dyn Fn(&Plan) -> bool| -> String {
        let here: Vec<&str> =
            plans.iter().zip(&names).filter(|(plan, _)| runs(plan)).map(|(_, name)| name.as_str()).collect();
        match here.len() {
            0 => "on no server (its `roles` or `once` leave every server out)".to_string(),
            n if n == names.len() => everywhere.clone(),
            _ => format!("on {} only", here.join(", ")),
        }
    };
    let mut out = format!("# release {} of {}\n", plan.release.name, plan.release.sha);
    let remote = |out: &mut String, phase: &str, on: &str, script: &crate::shell::RemoteScript| {
        out.push_str(&format!("\n## {phase}: {on}\n{}", script.text));
    };
    // The steps that run here, once: the build's before any server is locked, the others
    // among the steps after the preflight.
    let local = |step: &crate::plan::Step| match &step.action {
        Action::Local(command) => format!("\n## {}: locally, in the manifest's directory\n{command}\n", step.phase),
        Action::Package => format!(
            "\n## package: locally\ncheck that each of {} is a file or a directory and read what its ELF files \
             need (architecture, glibc, interpreter), then make the release commit: {} with them laid over it\n",
            config.artifacts.join(", "),
            plan.release.sha
        ),
        Action::CheckBinaries => "\n## check: locally\ncheck the ELF files of the build output against every \
                                  server's platform (which the preflight reports); a binary that cannot run on a \
                                  server stops the deploy before anything is sent\n"
            .to_string(),
        Action::Remote(_) | Action::Push => String::new(),
    };
    for step in &plan.build {
        out.push_str(&local(step));
    }
    let preflight = "preflight (checks, takes the lock, holds it until this channel closes)";
    remote(&mut out, preflight, &everywhere, &plan.preflight);
    for (index, step) in plan.steps.iter().enumerate() {
        match &step.action {
            Action::Local(_) | Action::Package | Action::CheckBinaries => out.push_str(&local(step)),
            Action::Remote(script) => {
                remote(&mut out, step.phase.as_str(), &on(&|plan| plan.steps[index].on_this_server), script)
            }
            Action::Push => {
                let build = match &plan.release.release_commit {
                    Some(_) => " with the release commit (the build output laid over it)",
                    None => "",
                };
                out.push_str(&format!(
                    "\n## push: {everywhere}\nstart a git daemon on 127.0.0.1 (port chosen at run time), push {}{build} \
                     and its submodules through a tunnel in the SSH session, stop the daemon\n",
                    plan.release.sha
                ))
            }
        }
    }
    for (index, step) in plan.on_failure.iter().enumerate() {
        if let Action::Local(command) = &step.action {
            out.push_str(&format!("\n## if the deploy fails (before publish, or after every server went back), on_failure: locally\n{command}\n"));
        } else if let Action::Remote(script) = &step.action {
            let phase = "if the deploy fails (before publish, or after every server went back), on_failure";
            remote(&mut out, phase, &on(&|plan| plan.on_failure[index].on_this_server), script);
        }
    }
    remote(&mut out, "if a step before publish fails, discard", &everywhere, &plan.discard);
    out.push_str("\n## at the end, whatever happened: the preflight's channel closes, which releases the lock\n");
    out
}

/// How many characters of a commit subject the releases table shows.
const SUBJECT_WIDTH: usize = 40;

/// One server's releases as a table.
pub(super) fn render_releases(server: &crate::manage::ServerReleases) -> String {
    let entries = server.entries();
    let subjects: Vec<String> =
        entries.iter().map(|entry| table_cell(entry.subject.as_deref().unwrap_or("-"), SUBJECT_WIDTH)).collect();
    let width = subjects.iter().map(|subject| subject.chars().count()).max().unwrap_or(0).max("subject".len());
    let mut out = format!("{}\n", server.server);
    let header = format!(
        "  {:<16} {:<12} {:<20} {:<14} {:<width$} state",
        "release", "commit", "deployed (UTC)", "by", "subject"
    );
    out.push_str(&format!("{}\n", header.trim_end()));
    for (entry, subject) in entries.iter().zip(&subjects) {
        let when = format!(
            "{}-{}-{} {}:{}:{}",
            &entry.name[..4],
            &entry.name[4..6],
            &entry.name[6..8],
            &entry.name[8..10],
            &entry.name[10..12],
            &entry.name[12..14]
        );
        let mut flags = Vec::new();
        if entry.current {
            flags.push("current");
        }
        if entry.bad {
            flags.push("bad");
        }
        if entry.unconfirmed {
            flags.push("unconfirmed");
        }
        let row = format!(
            "  {:<16} {:<12} {:<20} {:<14} {subject:<width$} {}",
            entry.name,
            &entry.sha[..entry.sha.len().min(12)],
            when,
            entry.deployed_by,
            flags.join(", ")
        );
        out.push_str(&format!("{}\n", row.trim_end()));
    }
    if let Some(holder) =
        (!server.state.holder.is_empty()).then(|| crate::plan::LockInfo::describe(&server.state.holder))
    {
        out.push_str(&format!("  locked by {holder}\n"));
    }
    if !server.state.stale.is_empty() {
        let holder = crate::plan::LockInfo::describe(&server.state.stale);
        out.push_str(&format!(
            "  stale lock of {holder} (its SSH connection is gone; the next deploy takes it over)\n"
        ));
    }
    out
}

/// `service status` as a table: a row per service and server.
pub(super) fn render_services(rows: &[crate::report::ServiceStatus]) -> String {
    let mut table = vec![["SERVER", "SERVICE", "STATE", "PID", "SINCE", "RELEASE", "MEMORY"].map(str::to_string)];
    for row in rows {
        let release = match (&row.release, &row.current) {
            (Some(runs), Some(current)) if runs != current => format!("{runs} (current is {current})"),
            (Some(runs), _) => runs.clone(),
            (None, _) => "-".to_string(),
        };
        let mut state = format!("{} ({})", row.state, row.sub_state);
        if row.restarts > 0 {
            state.push_str(&format!(", restarted {} time(s)", row.restarts));
        }
        if let Some(socket) = &row.socket {
            state.push_str(&format!(", socket {socket}"));
        }
        table.push([
            row.server.clone(),
            row.service.clone(),
            state,
            row.pid.map_or("-".to_string(), |pid| pid.to_string()),
            if row.since.is_empty() { "-".to_string() } else { row.since.clone() },
            release,
            row.memory.map_or("-".to_string(), |memory| format!("{:.1} MiB", memory as f64 / 1048576.0)),
        ]);
    }
    let widths: Vec<usize> =
        (0..7).map(|column| table.iter().map(|row| row[column].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in &table {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
