//! The pieces of a push that need no server.

use super::*;

#[test]
fn daemon_request_is_one_pkt_line_without_a_host() {
    let request = daemon_request("/srv/a b/repo");
    let text = String::from_utf8(request).unwrap();
    assert_eq!(text, "0022git-receive-pack /srv/a b/repo");
    assert_eq!(usize::from_str_radix(&text[..4], 16).unwrap(), text.len());
}
