//! Timestamps: everything becomes UTC; several input spellings are accepted.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde_json::Value;

/// Earliest and latest instants accepted: anything outside is almost surely a unit mistake.
const MIN_YEAR: i32 = 1970;
const MAX_YEAR: i32 = 2200;

/// Parses an RFC 3339 string (any offset, converted to UTC), a zone-less ISO 8601 date-time
/// (taken as UTC), or a Unix epoch number in seconds, milliseconds, microseconds or nanoseconds
/// (told apart by magnitude).
pub fn parse_timestamp(v: &Value) -> Result<DateTime<Utc>, String> {
    let t = match v {
        Value::String(s) => parse_str(s)?,
        Value::Number(n) => {
            let f = n.as_f64().ok_or_else(|| "not a finite number".to_string())?;
            from_epoch(f).ok_or_else(|| format!("epoch value {n} is out of range"))?
        }
        other => {
            return Err(format!(
                "expected an RFC 3339 string or an epoch number, got {}",
                crate::json_type(other)
            ));
        }
    };
    check_range(t)
}

/// Parses a timestamp string (see [`parse_timestamp`]).
pub fn parse_str(s: &str) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return check_range(t.with_timezone(&Utc));
    }
    // "2026-05-31 10:30:00+02:00" (space instead of T) and zone-less forms.
    if let Ok(t) = DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%:z") {
        return check_range(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return check_range(Utc.from_utc_datetime(&t));
        }
    }
    if let Ok(f) = s.parse::<f64>()
        && let Some(t) = from_epoch(f)
    {
        return check_range(t);
    }
    Err(format!("invalid timestamp {s:?}: expected RFC 3339 such as \"2026-05-31T10:30:00Z\""))
}

fn from_epoch(f: f64) -> Option<DateTime<Utc>> {
    if !f.is_finite() || f < 0.0 {
        return None;
    }
    let nanos = if f < 1e11 {
        f * 1e9
    } else if f < 1e14 {
        f * 1e6
    } else if f < 1e17 {
        f * 1e3
    } else {
        f
    };
    if nanos >= i64::MAX as f64 {
        return None;
    }
    Some(Utc.timestamp_nanos(nanos as i64))
}

fn check_range(t: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    use chrono::Datelike;
    if t.year() < MIN_YEAR || t.year() > MAX_YEAR {
        return Err(format!("timestamp {} is outside {MIN_YEAR}..{MAX_YEAR}", t.to_rfc3339()));
    }
    Ok(t)
}

/// Microseconds since the Unix epoch: the unit stores index times in.
pub fn to_micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub fn from_micros(us: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(us).single().unwrap_or_default()
}

/// Milliseconds between two instants, as a float with microsecond precision.
pub fn millis_between(start: DateTime<Utc>, end: DateTime<Utc>) -> f64 {
    (end - start).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0
}

/// Serializes a timestamp exactly as chrono's `Serialize` does (RFC 3339, `Z`, fractional
/// seconds in 0, 3, 6 or 9 digits as needed), for `#[serde(serialize_with)]`. chrono formats
/// through `fmt` a character at a time, each escaped on its own by serde_json: two timestamps
/// were ~2 % of the instructions of storing a span; this writes the 20–30 bytes directly.
/// Years outside 0–9999 and leap seconds, which chrono spells differently, go to chrono.
pub fn serialize<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; 30];
    match rfc3339(t, &mut buf) {
        // only ASCII digits and separators were written
        Some(n) => s.serialize_str(std::str::from_utf8(&buf[..n]).unwrap_or_default()),
        None => serde::Serialize::serialize(t, s),
    }
}

/// [`serialize`] for an optional timestamp.
pub fn serialize_opt<S: serde::Serializer>(
    t: &Option<DateTime<Utc>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    struct Rfc3339<'a>(&'a DateTime<Utc>);
    impl serde::Serialize for Rfc3339<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            serialize(self.0, s)
        }
    }
    match t {
        Some(t) => s.serialize_some(&Rfc3339(t)),
        None => s.serialize_none(),
    }
}

/// Writes `t` as chrono's `SecondsFormat::AutoSi` with `Z`; None for what it writes otherwise.
fn rfc3339(t: &DateTime<Utc>, out: &mut [u8; 30]) -> Option<usize> {
    use chrono::{Datelike, Timelike};
    let d = t.naive_utc();
    let (year, nanos) = (d.year(), d.nanosecond());
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return None;
    }
    fn digits(out: &mut [u8; 30], n: &mut usize, mut value: u32, width: usize) {
        for i in (0..width).rev() {
            out[*n + i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
        *n += width;
    }
    let mut n = 0;
    digits(out, &mut n, year as u32, 4);
    let fields = [
        (b'-', d.month()),
        (b'-', d.day()),
        (b'T', d.hour()),
        (b':', d.minute()),
        (b':', d.second()),
    ];
    for (sep, value) in fields {
        out[n] = sep;
        n += 1;
        digits(out, &mut n, value, 2);
    }
    let (fraction, width) = if nanos == 0 {
        (0, 0)
    } else if nanos % 1_000_000 == 0 {
        (nanos / 1_000_000, 3)
    } else if nanos % 1_000 == 0 {
        (nanos / 1_000, 6)
    } else {
        (nanos, 9)
    };
    if width > 0 {
        out[n] = b'.';
        n += 1;
        digits(out, &mut n, fraction, width);
    }
    out[n] = b'Z';
    Some(n + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timestamps_serialize_as_chrono_serializes_them() {
        #[derive(serde::Serialize)]
        struct Ours {
            #[serde(serialize_with = "serialize")]
            t: DateTime<Utc>,
            #[serde(serialize_with = "serialize_opt")]
            some: Option<DateTime<Utc>>,
            #[serde(serialize_with = "serialize_opt")]
            none: Option<DateTime<Utc>>,
        }
        #[derive(serde::Serialize)]
        struct Chrono {
            t: DateTime<Utc>,
            some: Option<DateTime<Utc>>,
            none: Option<DateTime<Utc>>,
        }
        let mut times: Vec<DateTime<Utc>> = [
            0i64,
            1,
            999,
            1_000,
            1_000_000,
            123_456_789,
            120_000_000,
            100_000,
            1_780_000_000_000_000_001,
            1_780_000_000_123_000_000,
            1_780_000_000_123_456_000,
            1_780_000_000_123_456_789,
            -1,
            i64::MAX,
            i64::MIN,
        ]
        .into_iter()
        .map(|ns| Utc.timestamp_nanos(ns))
        .collect();
        // years chrono writes with a sign, and a leap second
        times.push(Utc.with_ymd_and_hms(-5, 3, 1, 0, 0, 0).unwrap());
        times.push(Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap());
        times.push(Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap());
        times.push(Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap());
        let leap = chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
            .unwrap()
            .and_hms_nano_opt(23, 59, 59, 1_500_000_000)
            .unwrap();
        times.push(Utc.from_utc_datetime(&leap));
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // any instant 1938–2168, at each precision
            let ns = (seed % 7_258_000_000_000_000_000) as i64 - 1_000_000_000_000_000_000;
            let ns =
                ns - ns.rem_euclid([1, 1_000, 1_000_000, 1_000_000_000][(seed >> 60) as usize % 4]);
            times.push(Utc.timestamp_nanos(ns));
        }
        for t in times {
            let ours = serde_json::to_string(&Ours { t, some: Some(t), none: None }).unwrap();
            let chrono = serde_json::to_string(&Chrono { t, some: Some(t), none: None }).unwrap();
            assert_eq!(ours, chrono);
        }
    }

    #[test]
    fn offsets_become_utc() {
        let t = parse_timestamp(&json!("2026-05-31T12:30:00+02:00")).unwrap();
        assert_eq!(t.to_rfc3339(), "2026-05-31T10:30:00+00:00");
    }

    #[test]
    fn zoneless_is_utc_and_space_separator_is_accepted() {
        let a = parse_timestamp(&json!("2026-05-31T10:30:00.250")).unwrap();
        let b = parse_timestamp(&json!("2026-05-31 10:30:00.250")).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.timestamp_millis() % 1000, 250);
    }

    #[test]
    fn epoch_units_are_told_apart() {
        let s = parse_timestamp(&json!(1_780_000_000)).unwrap();
        let ms = parse_timestamp(&json!(1_780_000_000_000i64)).unwrap();
        let us = parse_timestamp(&json!(1_780_000_000_000_000i64)).unwrap();
        let ns = parse_timestamp(&json!(1_780_000_000_000_000_000i64)).unwrap();
        assert_eq!(s, ms);
        assert_eq!(ms, us);
        assert_eq!(us, ns);
        let frac = parse_timestamp(&json!(1_780_000_000.5)).unwrap();
        assert_eq!(frac.timestamp_millis(), 1_780_000_000_500);
    }

    #[test]
    fn garbage_is_rejected_with_the_value() {
        let e = parse_timestamp(&json!("yesterday")).unwrap_err();
        assert!(e.contains("yesterday"), "{e}");
        assert!(parse_timestamp(&json!(true)).is_err());
        assert!(parse_timestamp(&json!(-5)).is_err());
        assert!(parse_timestamp(&json!("9999-01-01T00:00:00Z")).is_err());
    }
}
