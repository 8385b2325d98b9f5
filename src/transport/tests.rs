//! The pieces of a push that need no server.

use super::error::{GitError, Said};
use super::*;

#[test]
fn daemon_request_is_one_pkt_line_without_a_host() {
    let request = daemon_request("/srv/a b/repo");
    let text = String::from_utf8(request).unwrap();
    assert_eq!(text, "0022git-receive-pack /srv/a b/repo");
    assert_eq!(usize::from_str_radix(&text[..4], 16).unwrap(), text.len());
}

#[test]
fn a_push_cut_short_through_the_daemon_gets_the_fsck_hint_and_no_other_does() {
    let cut = || io::Error::new(io::ErrorKind::ConnectionReset, "reset");
    let hint = " (if it refused an object of the commit, `git fsck --strict` in your clone names it; \
                with `transport = \"exec\"` the server's report says why)";
    let lost = with_daemon_hint(PushError::Lost(cut()));
    assert_eq!(lost.to_string(), format!("the connection to the server was lost: reset{hint}"));
    let shared = with_daemon_hint(PushError::SharedPack(Arc::new(PushError::ClosedBeforeReport(cut()))));
    assert_eq!(shared.to_string(), format!("the server closed before confirming the push: reset{hint}"));
    let said = Said(vec!["one".to_string(), "two".to_string()]);
    let rejected = PushError::Rejected { refname: "refs/heads/main".into(), reason: "no".into(), said };
    assert_eq!(
        with_daemon_hint(rejected).to_string(),
        "the server rejected `refs/heads/main`: no; the server said: one; two"
    );
}

#[test]
fn a_pack_objects_killed_by_a_signal_is_said_to_be_killed() {
    let killed = std::os::unix::process::ExitStatusExt::from_raw(9);
    let message = PushError::from(GitError::PackFailed { status: killed }).to_string();
    assert!(message.ends_with(") (killed: out of memory on a large build output?)"), "{message}");
    let failed = std::os::unix::process::ExitStatusExt::from_raw(1 << 8);
    let message = GitError::PackEndedEarly { status: failed }.to_string();
    assert_eq!(message, "`git pack-objects` ended before its pack did (exit status: 1)");
}
