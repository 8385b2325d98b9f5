//! The tables and the dry run's text, as strings.

use crate::check::{CheckReport, CheckStatus};

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
        out.push_str(&format!("{:<width$}  {:<12}  {:<7}  {}\n", row.server, row.check, status, row.detail));
    }
    let failed = report.checks.iter().filter(|row| row.status == CheckStatus::Fail).count();
    out.push_str(&if failed == 0 {
        "\nA deploy would get past every check.\n".to_string()
    } else {
        format!("\n{failed} check(s) failed: a deploy would fail. Fix the FAIL rows above.\n")
    });
    out
}

/// The dry run's text: per phase, what runs where, with each remote script in full.
pub(super) fn render_plan(plans: &[crate::plan::Plan], config: &crate::Config) -> String {
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
    let mut out = format!(
        "# dry run: release {} of {} (nothing is run; the release name may move forward at run time)\n",
        plan.release.name, plan.release.sha
    );
    let remote = |out: &mut String, phase: &str, on: &str, script: &crate::shell::RemoteScript| {
        out.push_str(&format!("\n## {phase}: {on}\n{}", script.text));
    };
    let preflight = "preflight (checks, takes the lock, holds it until this channel closes)";
    remote(&mut out, preflight, &everywhere, &plan.preflight);
    for (index, step) in plan.steps.iter().enumerate() {
        match &step.action {
            Action::Local(command) => {
                out.push_str(&format!("\n## {}: locally, in the manifest's directory\n{command}\n", step.phase))
            }
            Action::Remote(script) => remote(&mut out, step.phase, &on(&|plan| plan.steps[index].here), script),
            Action::Push => {
                let build = match &plan.release.build {
                    Some(_) => " with the release commit (the build output laid over it)",
                    None => "",
                };
                out.push_str(&format!(
                    "\n## push: {everywhere}\nstart a git daemon on 127.0.0.1 (port chosen at run time), push {}{build} \
                     and its submodules through a tunnel in the SSH session, stop the daemon\n",
                    plan.release.sha
                ))
            }
            Action::Package => out.push_str(&format!(
                "\n## package: locally\ncheck the ELF files among {} against every server (architecture, glibc, \
                 interpreter), then make the release commit: {} with them laid over it\n",
                config.artifacts.join(", "),
                plan.release.sha
            )),
        }
    }
    for (index, step) in plan.on_failure.iter().enumerate() {
        if let Action::Local(command) = &step.action {
            out.push_str(&format!("\n## if the deploy fails (before publish, or after every server went back), on_failure: locally\n{command}\n"));
        } else if let Action::Remote(script) = &step.action {
            let phase = "if the deploy fails (before publish, or after every server went back), on_failure";
            remote(&mut out, phase, &on(&|plan| plan.on_failure[index].here), script);
        }
    }
    remote(&mut out, "if a step before publish fails, discard", &everywhere, &plan.discard);
    out.push_str("\n## at the end, whatever happened: the preflight's channel closes, which releases the lock\n");
    out
}

/// One server's releases as a table.
pub(super) fn render_releases(server: &crate::manage::ServerReleases) -> String {
    let mut out = format!("{}\n", server.server);
    out.push_str(&format!("  {:<16} {:<12} {:<20} {:<14} {}\n", "release", "commit", "deployed (UTC)", "by", ""));
    for entry in server.entries() {
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
        out.push_str(&format!(
            "  {:<16} {:<12} {:<20} {:<14} {}\n",
            entry.name,
            &entry.sha[..entry.sha.len().min(12)],
            when,
            entry.deployed_by,
            flags.join(", ")
        ));
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
