//! UTC calendar time to the second, for release names (`20261125041638`) and the lock's
//! `since` (`2026-11-25T04:16:38Z`): the proleptic Gregorian calendar from 1970 on, no time
//! zones, no leap seconds (as the system clock counts).

use std::time::{SystemTime, UNIX_EPOCH};

/// A moment in UTC, to the second, from 1970 on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct UtcSecond(u64);

/// A moment as people write it: year, month (1-12), day (1-31), hour, minute, second.
struct Fields {
    year: u64,
    month: u64,
    day: u64,
    hour: u64,
    minute: u64,
    second: u64,
}

impl UtcSecond {
    /// The system clock's time now (1970 if the clock is set before it).
    pub fn now() -> UtcSecond {
        UtcSecond::at(SystemTime::now())
    }

    /// The moment `seconds` after 1970-01-01T00:00:00Z.
    #[cfg(test)]
    pub fn from_unix(seconds: u64) -> UtcSecond {
        UtcSecond(seconds)
    }

    /// `time`, to the second (1970 if it is before).
    pub fn at(time: SystemTime) -> UtcSecond {
        UtcSecond(time.duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs()))
    }

    /// The moment one second later.
    pub fn next(self) -> UtcSecond {
        UtcSecond(self.0 + 1)
    }

    /// `YYYYMMDDHHMMSS`, the way Capistrano names releases.
    pub fn compact(self) -> String {
        let Fields { year, month, day, hour, minute, second } = self.fields();
        format!("{year:04}{month:02}{day:02}{hour:02}{minute:02}{second:02}")
    }

    /// `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339).
    pub fn rfc3339(self) -> String {
        let Fields { year, month, day, hour, minute, second } = self.fields();
        format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
    }

    /// Reads a [`UtcSecond::compact`] name; `None` for anything else (another length, a
    /// character that is not a digit, a date or time that does not exist, a year before 1970).
    pub fn parse_compact(name: &str) -> Option<UtcSecond> {
        if name.len() != 14 || !name.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let number = |range: std::ops::Range<usize>| name[range].parse::<u64>().ok();
        let (year, month, day) = (number(0..4)?, number(4..6)?, number(6..8)?);
        let (hour, minute, second) = (number(8..10)?, number(10..12)?, number(12..14)?);
        if year < 1970 || !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        if hour > 23 || minute > 59 || second > 59 {
            return None;
        }
        let days_before_year: u64 = (1970..year).map(days_in_year).sum();
        let days_before_month: u64 = (1..month).map(|month| days_in_month(year, month)).sum();
        let days = days_before_year + days_before_month + day - 1;
        Some(UtcSecond(days * 86_400 + hour * 3600 + minute * 60 + second))
    }

    /// The calendar date and time of this moment.
    fn fields(self) -> Fields {
        let (mut days, seconds) = (self.0 / 86_400, self.0 % 86_400);
        let mut year = 1970;
        while days >= days_in_year(year) {
            days -= days_in_year(year);
            year += 1;
        }
        let mut month = 1;
        while days >= days_in_month(year, month) {
            days -= days_in_month(year, month);
            month += 1;
        }
        let (hour, minute, second) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
        Fields { year, month, day: days + 1, hour, minute, second }
    }
}

/// Whether `year` has a 29 February: every fourth year, but not every hundredth, but every
/// four hundredth.
fn is_leap(year: u64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_year(year: u64) -> u64 {
    if is_leap(year) {
        366
    } else {
        365
    }
}

/// The days of `month` (1-12) in `year`.
fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What GNU `date -u` makes of `seconds` since 1970, in `format`.
    fn date(seconds: u64, format: &str) -> String {
        let output = std::process::Command::new("date")
            .args(["-u", "-d", &format!("@{seconds}"), &format!("+{format}")])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    }

    #[test]
    fn moments_are_written_as_date_writes_them_and_read_back() {
        // Month and year ends, 29 February of leap years (2000 is one, 2100 is not), and a
        // spread of moments in between.
        let mut moments = vec![0, 59, 86_399, 86_400, 951_782_399, 951_782_400, 951_868_800, 4_107_542_399];
        moments.extend([4_107_542_400, 4_107_628_800, 253_402_300_799]);
        moments.extend((0..200u64).map(|n| n * 20_000_003 + n * n * 7919));
        for seconds in moments {
            let moment = UtcSecond::from_unix(seconds);
            assert_eq!(moment.compact(), date(seconds, "%Y%m%d%H%M%S"), "{seconds}");
            assert_eq!(moment.rfc3339(), date(seconds, "%Y-%m-%dT%H:%M:%SZ"), "{seconds}");
            assert_eq!(UtcSecond::parse_compact(&moment.compact()), Some(moment), "{seconds}");
        }
    }

    #[test]
    fn names_that_are_no_moment_are_refused() {
        for name in [
            "2026112504163",
            "202611250416388",
            "2026112504163x",
            "20261325041638",
            "20261100041638",
            "20261131041638",
            "20250229041638",
            "20261125241638",
            "20261125046038",
            "20261125041660",
            "19691231235959",
            "+2026112504163",
        ] {
            assert_eq!(UtcSecond::parse_compact(name), None, "{name}");
        }
        assert!(UtcSecond::parse_compact("20240229000000").is_some(), "2024 is a leap year");
    }
}
