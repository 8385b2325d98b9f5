//! The `--json` events against the table in the guide (docs/ci.md), and their encoding.

use super::*;

/// One event of every kind. The `match` makes a new variant fail to compile here until it
/// is added (and so checked against the guide).
fn one_of_each() -> Vec<Event> {
    let server = || "deploy@host:22".to_string();
    let ms = Duration::from_millis(5);
    let report = DeployReport {
        outcome: Outcome::Deployed,
        exit_code: 0,
        release: "20261125000000".into(),
        sha: "a".repeat(40),
        servers: vec![ServerReport { server: server(), ..Default::default() }],
        elapsed: ms,
        error: None,
    };
    let check = Check { server: server(), name: "git", status: CheckStatus::Ok, detail: String::new() };
    let events = vec![
        Event::Started { revision: "HEAD".into(), sha: "a".into(), servers: vec![server()] },
        Event::Running { phase: crate::plan::Phase::Build, server: None, what: "cargo build".into() },
        Event::Output {
            server: server(),
            phase: crate::plan::Phase::AfterUpdate,
            what: "./migrate".into(),
            stream: OutputStream::Stdout,
            text: "o".into(),
            failed: false,
        },
        Event::LockWait { server: server(), holder: "bob".into() },
        Event::UpToDate { sha: "a".into() },
        Event::Uploaded { server: server(), path: "bin".into(), bytes: 1, unchanged: Some(true) },
        Event::Discarded { server: server(), release: "r".into() },
        Event::RolledBack { server: server(), from: "a".into(), to: "b".into(), reason: "r".into() },
        Event::HealthCheck { server: server(), passed: false, elapsed: ms, output: "o".into() },
        Event::Lost { server: server(), by: "2026-12-07T18:00:00Z".into(), from: Some("r".into()), to: None },
        Event::Wave { wave: 1, servers: vec![server()] },
        Event::Unlocked { server: server(), holder: "bob".into() },
        Event::Marked { server: server(), release: "r".into() },
        Event::Unmarked { server: server(), release: "r".into() },
        Event::Warning { message: "m".into() },
        Event::Log { server: server(), line: "l".into() },
        Event::Connected { server: server(), elapsed: ms },
        Event::Locked { server: server(), releases: 1, reaped: vec![] },
        Event::Created { server: server(), what: "repo".into() },
        Event::DaemonReady { server: server(), port: 1, elapsed: ms },
        Event::Pushing { server: server(), sha: "a".into() },
        Event::PushProgress {
            server: server(),
            bytes: 1,
            objects: Some(1),
            total_bytes: Some(2),
            percent: Some(50),
            elapsed: ms,
        },
        Event::Pushed {
            server: server(),
            bytes_sent: 1,
            build_bytes: Some(0),
            objects: 1,
            bytes_received: 0,
            elapsed: ms,
        },
        Event::Prepared { server: server(), release: "r".into(), elapsed: ms },
        Event::Published { server: server(), release: "r".into(), elapsed: ms },
        Event::Removed { server: server(), release: "r".into() },
        Event::Failed { server: None, error: "e".into(), exit_code: 7 },
        Event::Summary(report),
        Event::Check(check),
        Event::Plan(Box::new(crate::plan::dry_run::not_reached(
            &crate::plan::deploy_plan(
                &crate::plan::tests::config("/srv/x"),
                0,
                &crate::plan::tests::release(),
                &[],
                &crate::plan::tests::lock(),
            ),
            server(),
            "refused".into(),
        ))),
    ];
    for event in &events {
        match event {
            Event::Started { .. }
            | Event::Running { .. }
            | Event::Output { .. }
            | Event::LockWait { .. }
            | Event::UpToDate { .. }
            | Event::Uploaded { .. }
            | Event::Discarded { .. }
            | Event::RolledBack { .. }
            | Event::HealthCheck { .. }
            | Event::Lost { .. }
            | Event::Wave { .. }
            | Event::Unlocked { .. }
            | Event::Marked { .. }
            | Event::Unmarked { .. }
            | Event::Warning { .. }
            | Event::Log { .. }
            | Event::Connected { .. }
            | Event::Locked { .. }
            | Event::Created { .. }
            | Event::DaemonReady { .. }
            | Event::Pushing { .. }
            | Event::PushProgress { .. }
            | Event::Pushed { .. }
            | Event::Prepared { .. }
            | Event::Published { .. }
            | Event::Removed { .. }
            | Event::Failed { .. }
            | Event::Summary(_)
            | Event::Check(_)
            | Event::Plan(_) => {}
        }
    }
    events
}

fn json(event: &Event) -> serde_json::Value {
    let mut out = JsonLines(Vec::new());
    out.event(event.clone());
    let text = String::from_utf8(out.0).unwrap();
    assert_eq!(text.lines().count(), 1, "one line per event: {text}");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn every_event_is_one_json_line_with_the_schema_and_is_in_the_readme() {
    for event in one_of_each() {
        let value = json(&event);
        assert_eq!(value["schema"], JSON_SCHEMA);
        let name = value["event"].as_str().unwrap().to_string();
        let row = readme_row(&name);
        for (key, _) in value.as_object().unwrap() {
            if key != "schema" && key != "event" && key != "servers" {
                assert!(row.contains(&format!("`{key}`")), "`{name}.{key}` is not documented: {row}");
            }
        }
    }
}

/// The row of the events table in the guide for `event`.
fn readme_row(event: &str) -> &'static str {
    let guide = include_str!("../../docs/ci.md");
    let table = &guide[guide.find("<!-- json-events").expect("the guide lists the events")..];
    let table = &table[..table.find("\n\n").unwrap()];
    let row = table.lines().find(|row| row.starts_with(&format!("| `{event}` |")));
    row.unwrap_or_else(|| panic!("`{event}` is not in the guide's events table"))
}

#[test]
fn the_releases_event_and_its_entries_are_in_the_readme() {
    let server = ServerReleases {
        server: "s".into(),
        state: crate::plan::parse_state("release 20261125000000 aaaa\ncurrent /x/releases/20261125000000\n"),
        subjects: [("aaaa".to_string(), "Fix it".to_string())].into(),
    };
    let mut out = JsonLines(Vec::new());
    out.releases(&server);
    let value: serde_json::Value = serde_json::from_slice(&out.0).unwrap();
    assert_eq!(value["releases"][0]["subject"], "Fix it");
    let row = readme_row("releases");
    let keys = value.as_object().unwrap().keys().chain(value["releases"][0].as_object().unwrap().keys());
    for key in keys.filter(|key| *key != "schema" && *key != "event") {
        assert!(row.contains(&format!("`{key}`")), "`releases.{key}` is not documented: {row}");
    }
}

#[test]
fn durations_are_whole_milliseconds() {
    let value = json(&Event::Pushed {
        server: "s".into(),
        bytes_sent: 10,
        build_bytes: Some(4),
        objects: 2,
        bytes_received: 0,
        elapsed: Duration::from_micros(1_999),
    });
    assert_eq!(value["elapsed_ms"], 1);
    assert!(value.get("elapsed").is_none());
}

#[test]
fn the_deployer_comes_from_the_newest_matching_log_line() {
    let log = vec![
        "Branch main (at a) deployed as release 20261125041638 by alice".to_string(),
        "alice rolled back to release 20261125041638".to_string(),
        "Branch main (at b) deployed as release 20261125041639 by bob".to_string(),
    ];
    assert_eq!(super::rows::deployer(&log, "20261125041639").as_deref(), Some("bob"));
    assert_eq!(super::rows::deployer(&log, "20261125041638").as_deref(), Some("alice"));
    assert_eq!(super::rows::deployer(&log, "20261125041640"), None);
}
