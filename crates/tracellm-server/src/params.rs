//! Query-string parsing with errors that name the parameter.

use chrono::{DateTime, Duration, Utc};
use tracellm_core::Status;
use tracellm_core::api::{self, AnalyticsQuery, Cursor, MAX_BUCKET_SECS, MAX_BUCKETS, TraceQuery};

use crate::auth::Access;
use crate::error::ApiError;

/// The parameters of one request, each taken once; leftovers are reported as unknown.
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    pub fn parse(raw: Option<&str>) -> Self {
        let pairs = raw
            .map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Params { pairs }
    }

    /// All values of `name` (repeated or comma-separated), removed from the set.
    pub fn take_all(&mut self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.pairs.retain(|(k, v)| {
            if k == name {
                out.extend(v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from));
                false
            } else {
                true
            }
        });
        out
    }

    pub fn take(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        let mut values = Vec::new();
        self.pairs.retain(|(k, v)| {
            if k == name {
                values.push(v.clone());
                false
            } else {
                true
            }
        });
        match values.len() {
            0 => Ok(None),
            1 => Ok(Some(values.remove(0)).filter(|v| !v.is_empty())),
            _ => Err(ApiError::bad_request(
                "invalid_parameter",
                format!("parameter {name:?} is given more than once"),
            )),
        }
    }

    pub fn time(&mut self, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        match self.take(name)? {
            None => Ok(None),
            Some(v) => parse_time(&v).map(Some).map_err(|m| {
                ApiError::bad_request("invalid_parameter", format!("parameter {name:?}: {m}"))
            }),
        }
    }

    /// Fails on any parameter not taken, naming it and the ones this route knows.
    pub fn finish(self, known: &[&str]) -> Result<(), ApiError> {
        match self.pairs.first() {
            None => Ok(()),
            Some((k, _)) => Err(ApiError::bad_request(
                "unknown_parameter",
                format!("unknown parameter {k:?}; this route takes {}", known.join(", ")),
            )),
        }
    }
}

/// RFC 3339, epoch numbers, or a span back from now such as `15m`, `24h`, `7d`.
pub fn parse_time(v: &str) -> Result<DateTime<Utc>, String> {
    if let Some(d) = parse_duration(v) {
        return Ok(Utc::now() - d);
    }
    tracellm_core::time::parse_str(v)
}

/// `30s`, `15m`, `24h`, `7d`, `2w`.
pub fn parse_duration(v: &str) -> Option<Duration> {
    let v = v.trim();
    let unit = v.chars().last()?;
    let n: i64 =
        v[..v.len() - unit.len_utf8()].parse().ok().filter(|n| *n > 0 && *n < 1_000_000)?;
    Some(match unit {
        's' => Duration::seconds(n),
        'm' => Duration::minutes(n),
        'h' => Duration::hours(n),
        'd' => Duration::days(n),
        'w' => Duration::weeks(n),
        _ => return None,
    })
}

pub const TRACE_PARAMS: &[&str] = &[
    "status",
    "model",
    "project",
    "session_id",
    "user_id",
    "tag",
    "since",
    "until",
    "q",
    "limit",
    "cursor",
];

/// The filters and page of `GET /traces` and `GET /failures`.
pub fn trace_query(raw: Option<&str>, access: &Access) -> Result<TraceQuery, ApiError> {
    let mut p = Params::parse(raw);
    let mut statuses = Vec::new();
    for s in p.take_all("status") {
        statuses.push(Status::parse(&s).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_parameter",
                format!("parameter \"status\": unknown status {s:?}; expected success, error, retried or running"),
            )
        })?);
    }
    let limit = match p.take("limit")? {
        None => api::DEFAULT_PAGE,
        Some(l) => l.parse::<usize>().ok().filter(|n| (1..=api::MAX_PAGE).contains(n)).ok_or_else(
            || {
                ApiError::bad_request(
                    "invalid_parameter",
                    format!(
                        "parameter \"limit\": {l:?} is not a whole number from 1 to {}",
                        api::MAX_PAGE
                    ),
                )
            },
        )?,
    };
    let cursor = match p.take("cursor")? {
        None => None,
        Some(c) => Some(Cursor::decode(&c).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_parameter",
                format!("parameter \"cursor\": {c:?} is not a cursor this server issued"),
            )
        })?),
    };
    let (project, environment) = scope(&mut p, access)?;
    let q = TraceQuery {
        project_id: project,
        environment,
        statuses,
        model: p.take("model")?,
        session_id: p.take("session_id")?,
        user_id: p.take("user_id")?,
        tag: p.take("tag")?,
        since: p.time("since")?,
        until: p.time("until")?,
        q: p.take("q")?,
        limit,
        cursor,
    };
    if let (Some(s), Some(u)) = (q.since, q.until)
        && s >= u
    {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            "parameter \"since\" must be before \"until\"",
        ));
    }
    if q.q.as_ref().is_some_and(|s| s.len() > 1000) {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            "parameter \"q\" is longer than 1000 bytes",
        ));
    }
    p.finish(TRACE_PARAMS)?;
    Ok(q)
}

/// The range and bucket of `GET /analytics`.
pub fn analytics_query(raw: Option<&str>, access: &Access) -> Result<AnalyticsQuery, ApiError> {
    let mut p = Params::parse(raw);
    let (project_id, environment) = scope(&mut p, access)?;
    let since = p.time("since")?;
    let until = p.time("until")?;
    let bucket_secs = match p.take("bucket")? {
        None => None,
        Some(b) => Some(
            parse_duration(&b)
                .map(|d| d.num_seconds())
                .or_else(|| b.parse::<i64>().ok().filter(|s| *s > 0))
                .filter(|s| *s <= MAX_BUCKET_SECS)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_parameter",
                        format!(
                            "parameter \"bucket\": {b:?} is not a duration from 1s to 100 years such as 1m, 1h or 1d"
                        ),
                    )
                })?,
        ),
    };
    p.finish(&["since", "until", "bucket", "project", "environment"])?;
    if let (Some(s), Some(u)) = (since, until) {
        if s >= u {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                "parameter \"since\" must be before \"until\"",
            ));
        }
        if let Some(b) = bucket_secs
            && (u - s).num_seconds() / b > MAX_BUCKETS
        {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                format!(
                    "parameter \"bucket\": more than {MAX_BUCKETS} buckets over this range; choose a wider bucket"
                ),
            ));
        }
    }
    Ok(AnalyticsQuery { project_id, environment, since, until, bucket_secs })
}

/// The project and environment a request reaches: its access, narrowed by `environment=` when
/// it has no key (a key's environment is fixed). Naming another project or environment is 403.
pub fn scope(p: &mut Params, access: &Access) -> Result<(String, Option<String>), ApiError> {
    let project = p.take("project")?;
    let environment = p.take("environment")?;
    access.check(project.as_deref(), environment.as_deref())?;
    Ok((access.project_id.clone(), access.environment.clone().or(environment)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_unknowns_are_named() {
        let access = Access { project_id: "default".into(), environment: None, key_id: None };
        let q =
            trace_query(Some("status=error,retried&model=gpt-4o&q=rate+limit&limit=10"), &access)
                .unwrap();
        assert_eq!(q.statuses, vec![Status::Error, Status::Retried]);
        assert_eq!(q.model.as_deref(), Some("gpt-4o"));
        assert_eq!(q.q.as_deref(), Some("rate limit"));
        assert_eq!(q.limit, 10);
        let e = trace_query(Some("modle=x"), &access).unwrap_err();
        assert!(e.message.contains("\"modle\""), "{}", e.message);
        let e = trace_query(Some("limit=0"), &access).unwrap_err();
        assert!(e.message.contains("limit"));
        let e = trace_query(Some("since=tuesday"), &access).unwrap_err();
        assert!(e.message.contains("since"));
        let e = trace_query(Some("cursor=zzz"), &access).unwrap_err();
        assert!(e.message.contains("cursor"));
        assert!(trace_query(Some("project=other"), &access).is_err());
    }

    #[test]
    fn percent_decoding_and_relative_times() {
        let mut p = Params::parse(Some("q=a%20b%2Cc&x=100%&y=%E2%82"));
        assert_eq!(p.take("q").unwrap().as_deref(), Some("a b,c"));
        assert_eq!(p.take("x").unwrap().as_deref(), Some("100%"));
        assert!(p.take("y").unwrap().is_some());
        assert_eq!(parse_duration("24h"), Some(Duration::hours(24)));
        assert_eq!(parse_duration("h"), None);
        assert!(parse_time("2026-05-31T10:00:00Z").is_ok());
    }
}
