//! The health check run on one server, outside a deploy: by `rollback` in the release it went
//! back to, and by `deploy-check` in the current one.

use std::time::Duration;

use crate::config::{Config, Healthcheck};
use crate::plan::{self, Release};
use crate::ssh::{Connection, Output};
use crate::Error;

/// Runs `healthcheck` in `release` on `connection` (`config` is that server's, `config.servers[index]`;
/// its services watched): `Ok` with the
/// tries and the time it took to pass, or `Err` with the output of a check that did not pass.
pub(crate) fn run_health(
    connection: &Connection,
    config: &Config,
    index: usize,
    release: &Release,
    healthcheck: &Healthcheck,
) -> Result<Result<(u32, Duration), Output>, Error> {
    let watch = plan::service::health_watch(config, index);
    let output = connection.output(&plan::confirm::health_script(config, release, healthcheck, watch.as_deref()))?;
    Ok(match plan::parse_healthy(&output.stdout) {
        Some((tries, ms)) if output.status == 0 => Ok((tries, Duration::from_millis(ms))),
        _ => Err(output),
    })
}
