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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
