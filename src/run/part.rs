//! One server's part of the deploy: its session, its plan and its report, as each step and the
//! failure handling see them.

use crate::fleet::LockedServer;
use crate::plan::Plan;
use crate::report::{Event, Reporter, ServerReport, ServerStatus};

/// One server's part of a step: its session, its plan and its report.
pub(super) struct ServerPart<'a> {
    pub(super) server: &'a LockedServer,
    pub(super) plan: &'a Plan,
    pub(super) report: &'a mut ServerReport,
}

/// Each server's part of a step, in the order of the servers.
pub(super) fn server_parts<'a>(
    servers: &'a [LockedServer],
    plans: &'a [Plan],
    reports: &'a mut [ServerReport],
    active: std::ops::Range<usize>,
) -> Vec<ServerPart<'a>> {
    let parts = servers.iter().zip(plans).zip(reports.iter_mut()).enumerate();
    let active = parts.filter(|(index, _)| active.contains(index));
    active.map(|(_, ((server, plan), report))| ServerPart { server, plan, report }).collect()
}

/// Notes, once, that the deployer gave `server` up (its link went down): in its report, when
/// its keeper ends the deploy there by itself at the latest (once it has heard nothing for
/// `timeouts.silence`, counted from when the deployer stopped beating, plus the keeper's second
/// between two looks), and as an [`Event::Lost`].
pub(super) fn note_lost(server: &LockedServer, report: &mut ServerReport, release: &str, reporter: &mut dyn Reporter) {
    let Some(since) = server.connection.lost() else { return };
    if report.on_its_own.is_some() {
        return;
    }
    let by = since + server.config.timeouts.silence + std::time::Duration::from_secs(2);
    let by = crate::plan::UtcSecond::at(by).rfc3339();
    report.on_its_own = Some(by.clone());
    let switched = report.status == ServerStatus::Published;
    reporter.event(Event::Lost {
        server: report.server.clone(),
        by,
        from: switched.then(|| release.to_string()),
        to: server.state.current_release().filter(|_| switched).map(str::to_string),
    });
}
