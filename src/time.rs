//! RFC 3339 timestamps for `created` and `mtime`, checked as Go reads them and written
//! back in one normal form.
//!
//! Accepted: `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)`, upper-case `T` and `Z`,
//! seconds 00–59, offsets up to ±23:59, years 0000–9999 (also once moved to UTC). That is
//! RFC 3339 §5.6 narrowed to what Go's own RFC 3339 parser accepts (the one behind
//! `time.Parse(time.RFC3339, …)` and `time.Time`'s JSON decoding, which docker, podman and
//! skopeo use to read an image config): Go refuses the leap second `60`, lower-case `t`
//! and `z` and a space for `T`, all of which RFC 3339 allows, and cannot write a year
//! outside 0–9999. Fraction digits past the ninth are dropped, as Go does.
//!
//! Written: UTC with `Z`, the fraction only when nonzero and without trailing zeros
//! (`2020-01-01T00:00:00+01:00` becomes `2019-12-31T23:00:00Z`).
//!
//! jiff does the calendar (days per month, leap years), the offset arithmetic and the
//! formatting. Its parsers are not used for the syntax: they accept a wider ISO 8601 /
//! Temporal grammar (a space or `t` for `T`, `+0100`, bracketed time zone names), which
//! is exactly what must be refused here, so the fixed-position syntax is checked by hand.

use anyhow::{bail, Result};

/// A checked timestamp: the text that goes into the image config, and its Unix seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timestamp {
    /// The normal form: RFC 3339 in UTC with `Z` (see the module docs).
    pub text: String,
    /// Whole seconds since the Unix epoch, rounded down (for tar mtimes).
    pub unix: i64,
}

impl Timestamp {
    /// Parses an RFC 3339 time as the module docs say, or `now` (the current time).
    ///
    /// # Errors
    /// Names `key`, the value and what is wrong with it.
    pub fn parse(key: &str, value: &str) -> Result<Timestamp> {
        let utc = if value == "now" {
            // Whole seconds, as before and as `date -u +%FT%TZ` gives.
            let now = jiff::Timestamp::now();
            let whole = jiff::Timestamp::from_second(now.as_second()).unwrap_or(now);
            whole.to_zoned(jiff::tz::TimeZone::UTC).datetime()
        } else {
            match parse_rfc3339(value) {
                Ok(utc) => utc,
                Err(why) => bail!(
                    "key `{key}`: {value:?} is not an RFC 3339 time like \"1970-01-01T00:00:01Z\" \
                     or \"2020-01-01T12:00:00+01:00\" (or \"now\"): {why}"
                ),
            }
        };
        let since_epoch = utc.duration_since(jiff::civil::DateTime::constant(1970, 1, 1, 0, 0, 0, 0));
        // Rounded down: 1969-12-31T23:59:59.5Z is second -1.
        let unix = since_epoch.as_secs() - i64::from(since_epoch.subsec_nanos() < 0);
        // jiff writes the fraction only when nonzero, trailing zeros trimmed, and a year
        // of 0000–9999 with four digits.
        Ok(Timestamp { text: format!("{utc}Z"), unix })
    }
}

/// Checks the syntax of `s` and returns the time it names in UTC, or why it is refused.
/// (The arithmetic stays in jiff's civil times: its `Timestamp` ends a day short of
/// 9999-12-31T23:59:59Z.)
fn parse_rfc3339(s: &str) -> std::result::Result<jiff::civil::DateTime, String> {
    let b = s.as_bytes();
    const SHAPE: &str = "YYYY-MM-DDTHH:MM:SS";
    if b.len() < SHAPE.len() {
        return Err("too short".into());
    }
    for (i, expected) in SHAPE.bytes().enumerate() {
        let ok = match expected {
            b'Y' | b'M' | b'D' | b'H' | b'S' => b[i].is_ascii_digit(),
            other => b[i] == other,
        };
        if !ok {
            let what = match expected {
                b'T' => "the date and time must be separated by an upper-case `T`".to_string(),
                b'-' | b':' => format!("expected `{}` at character {}", expected as char, i + 1),
                _ => format!("expected a digit at character {}", i + 1),
            };
            return Err(what);
        }
    }
    let num = |range: std::ops::Range<usize>| -> i32 { s[range].bytes().fold(0, |n, d| n * 10 + i32::from(d - b'0')) };
    let (year, month, day) = (num(0..4), num(5..7), num(8..10));
    let (hour, minute, second) = (num(11..13), num(14..16), num(17..19));
    if hour > 23 || minute > 59 {
        return Err("the time of day is out of range".into());
    }
    if second > 59 {
        return Err("seconds must be 00–59 (Go, hence docker and podman, refuse the leap second 60)".into());
    }
    let mut rest = &s[SHAPE.len()..];
    let mut nanos = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err("a `.` must be followed by digits".into());
        }
        // Nanoseconds: the first nine digits, zero-padded; later ones dropped, as Go does.
        nanos = fraction[..digits].bytes().chain(std::iter::repeat(b'0')).take(9).fold(0, |n, d| n * 10 + i32::from(d - b'0'));
        rest = &fraction[digits..];
    }
    let offset_seconds = match rest.as_bytes() {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] if [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()) => {
            let (h, m) = (num2(*h1, *h2), num2(*m1, *m2));
            if h > 23 || m > 59 {
                return Err("the UTC offset is out of range (at most ±23:59)".into());
            }
            let seconds = h * 3600 + m * 60;
            if *sign == b'-' { -seconds } else { seconds }
        }
        _ => return Err("it must end in an upper-case `Z` or an offset like `+01:00`".into()),
    };
    let datetime = jiff::civil::DateTime::new(
        year as i16, month as i8, day as i8, hour as i8, minute as i8, second as i8, nanos,
    )
    .map_err(|_| "no such date".to_string())?;
    let utc = datetime
        .checked_sub(jiff::SignedDuration::from_secs(i64::from(offset_seconds)))
        .map_err(|_| "in UTC its year is outside 0000–9999, which Go cannot write".to_string())?;
    if !(0..=9999).contains(&utc.year()) {
        return Err("in UTC its year is outside 0000–9999, which Go cannot write".into());
    }
    Ok(utc)
}

fn num2(tens: u8, ones: u8) -> i32 {
    i32::from(tens - b'0') * 10 + i32::from(ones - b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(value: &str) -> String {
        Timestamp::parse("k", value).unwrap().text
    }

    #[test]
    fn parses_the_default_and_offsets() {
        assert_eq!(Timestamp::parse("k", "1970-01-01T00:00:01Z").unwrap().unix, 1);
        assert_eq!(Timestamp::parse("k", "1970-01-01T01:00:01+01:00").unwrap().unix, 1);
        assert_eq!(Timestamp::parse("k", "2024-02-29T12:30:00.25Z").unwrap().unix, 1709209800);
        assert_eq!(Timestamp::parse("k", "1969-12-31T23:59:59.5Z").unwrap().unix, -1);
    }

    #[test]
    fn writes_the_normal_form() {
        assert_eq!(text("1970-01-01T00:00:01Z"), "1970-01-01T00:00:01Z");
        assert_eq!(text("2020-01-01T00:00:00+01:00"), "2019-12-31T23:00:00Z");
        assert_eq!(text("2020-01-01T00:00:00-00:00"), "2020-01-01T00:00:00Z");
        assert_eq!(text("2024-02-29T12:30:00.250Z"), "2024-02-29T12:30:00.25Z");
        assert_eq!(text("2024-02-29T12:30:00.000Z"), "2024-02-29T12:30:00Z");
        assert_eq!(text("2024-02-29T12:30:00.1234567891234Z"), "2024-02-29T12:30:00.123456789Z");
        assert_eq!(text("0000-01-01T00:00:00Z"), "0000-01-01T00:00:00Z");
        assert_eq!(text("9999-12-31T23:59:59Z"), "9999-12-31T23:59:59Z");
        let now = Timestamp::parse("k", "now").unwrap();
        // "now" is written in the same normal form, and reads back as itself.
        assert_eq!(Timestamp::parse("k", &now.text).unwrap(), now);
    }

    #[test]
    fn rejects_what_go_or_rfc3339_refuses() {
        for bad in [
            "",
            "yesterday",
            "2024-02-30T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-01-01",
            "2024-01-01T00:00:00",
            "2020-01-01T00:00:60Z",
            "2020-01-01 00:00:00Z",
            "2020-01-01t00:00:00Z",
            "2020-01-01T00:00:00z",
            "2020-01-01T24:00:00Z",
            "2020-01-01T00:00:00.Z",
            "2020-01-01T00:00:00,5Z",
            "2020-01-01T00:00:00+0100",
            "2020-01-01T00:00:00+24:00",
            "2020-01-01T00:00:00+01:60",
            "2020-01-01T1:00:00Z",
            "20200-01-01T00:00:00Z",
            "+2020-01-01T00:00:00Z",
            "0000-01-01T00:00:00+00:01",
            "9999-12-31T23:59:59-00:01",
            "2020-01-01T00:00:00Z ",
            "2020-01-01T00:00:00Z[UTC]",
            "２020-01-01T00:00:00Z",
        ] {
            let err = Timestamp::parse("created", bad).unwrap_err().to_string();
            assert!(err.contains("`created`"), "{err}");
        }
    }

    #[test]
    fn formats_round_trip() {
        for (text, unix) in [
            ("1970-01-01T00:00:00Z", 0),
            ("2000-02-29T00:00:00Z", 951782400),
            ("2100-01-01T00:00:00Z", 4102444800),
            ("0000-01-01T00:00:00Z", -62167219200),
            ("9999-12-31T23:59:59Z", 253402300799),
        ] {
            assert_eq!(Timestamp::parse("k", text).unwrap(), Timestamp { text: text.into(), unix }, "{text}");
        }
    }
}
