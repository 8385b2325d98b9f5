//! The name a mistyped one most likely meant, for "did you mean" in messages: the known name
//! fewest edits away, when it is near enough.

/// How many single-character edits turn `a` into `b`: an insertion, a deletion, a change, or
/// a swap of two neighbours each count 1; case and `-` versus `_` count nothing.
pub(crate) fn distance(a: &str, b: &str) -> usize {
    let fold = |name: &str| -> Vec<char> {
        name.chars().map(|c| if c == '-' { '_' } else { c.to_ascii_lowercase() }).collect()
    };
    let (a, b) = (fold(a), fold(b));
    // rows[i][j]: the distance between the first i characters of `a` and the first j of `b`.
    let mut rows = vec![vec![0; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    rows[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let change = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1).min(rows[i][j - 1] + 1).min(rows[i - 1][j - 1] + change);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

/// The name among `known` nearest to `typed`, if it is near enough to be what was meant: at
/// most one edit away for names of up to four characters, two up to eight, three beyond.
/// The first of equally near names wins.
pub(crate) fn nearest<'a>(typed: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = match typed.chars().count() {
        0..=4 => 1,
        5..=8 => 2,
        _ => 3,
    };
    let mut best: Option<(usize, &str)> = None;
    for name in known {
        let edits = distance(typed, name);
        if edits <= limit && best.is_none_or(|(fewest, _)| edits < fewest) {
            best = Some((edits, name));
        }
    }
    best.map(|(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_are_counted_one_each() {
        for (a, b, edits) in [
            ("deploy", "deploy", 0),
            ("Deploy", "deploy", 0),
            ("keep-releases", "keep_releases", 0),
            ("deploys", "deploy", 1),
            ("deploy_", "deploy", 1),
            ("depoly", "deploy", 1),
            ("dploy", "deploy", 1),
            ("prodution", "production", 1),
            ("stagin", "staging", 1),
            ("kitten", "sitting", 3),
            ("", "abc", 3),
            ("deb", "deploy", 4),
        ] {
            assert_eq!(distance(a, b), edits, "{a} {b}");
            assert_eq!(distance(b, a), edits, "{b} {a}");
        }
    }

    #[test]
    fn the_nearest_name_is_suggested_only_when_near() {
        let stages = ["staging", "production", "qa"];
        assert_eq!(nearest("prodution", stages), Some("production"));
        assert_eq!(nearest("Staging", stages), Some("staging"));
        assert_eq!(nearest("q", stages), Some("qa"));
        assert_eq!(nearest("prod", stages), None, "six edits away");
        assert_eq!(nearest("dev", stages), None);
        assert_eq!(nearest("keep_release", ["keep_releases", "revision"]), Some("keep_releases"));
        assert_eq!(nearest("ab", ["ax", "ay"]), Some("ax"), "the first of equally near names");
    }
}
