//! RFC 3339 timestamps for `created` and `mtime`, without a date library.

use anyhow::{bail, Result};

/// A checked timestamp: the text that goes into the image config, and its Unix seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timestamp {
    /// RFC 3339 text, as given by the user or formatted from the clock.
    pub text: String,
    /// Seconds since the Unix epoch (for tar mtimes).
    pub unix: i64,
}

impl Timestamp {
    /// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, or `now` (the current time).
    ///
    /// # Errors
    /// Names `key` and the value when it is not RFC 3339.
    pub fn parse(key: &str, value: &str) -> Result<Timestamp> {
        if value == "now" {
            let unix = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            return Ok(Timestamp { text: format_utc(unix), unix });
        }
        match parse_rfc3339(value) {
            Some(unix) => Ok(Timestamp { text: value.to_string(), unix }),
            None => bail!(
                "key `{key}`: {value:?} is not an RFC 3339 time like \"1970-01-01T00:00:01Z\" (or \"now\")"
            ),
        }
    }
}

fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes().all(|c| c.is_ascii_digit()).then(|| t.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let rb = rest.as_bytes();
            if rb.len() != 6 || !matches!(rb[0], b'+' | b'-') || rb[3] != b':' {
                return None;
            }
            let h: i64 = rest[1..3].parse().ok()?;
            let m: i64 = rest[4..6].parse().ok()?;
            if h > 23 || m > 59 {
                return None;
            }
            let sign = if rb[0] == b'-' { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        }
    };
    Some(days_from_civil(year, month, day) * 86400 + hour * 3600 + min * 60 + sec - offset)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_utc(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86400), unix.rem_euclid(86400));
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_default_and_offsets() {
        assert_eq!(Timestamp::parse("k", "1970-01-01T00:00:01Z").unwrap().unix, 1);
        assert_eq!(Timestamp::parse("k", "1970-01-01T01:00:01+01:00").unwrap().unix, 1);
        assert_eq!(Timestamp::parse("k", "2024-02-29T12:30:00.25Z").unwrap().unix, 1709209800);
    }

    #[test]
    fn rejects_non_rfc3339() {
        for bad in ["", "yesterday", "2024-02-30T00:00:00Z", "2024-01-01", "2024-01-01T00:00:00"] {
            let err = Timestamp::parse("created", bad).unwrap_err().to_string();
            assert!(err.contains("created"), "{err}");
        }
    }

    #[test]
    fn formats_round_trip() {
        for unix in [0, 1, 951782400, 1709209800, 4102444800] {
            let text = format_utc(unix);
            assert_eq!(parse_rfc3339(&text), Some(unix), "{text}");
        }
    }
}
