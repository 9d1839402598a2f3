//! Query parameters and response bodies of the HTTP API, shared by the server, the stores and
//! the client.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::model::{Status, TraceSummary};

/// Default and largest page sizes of list routes.
pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 500;

/// Filters and page of `GET /traces` (and `GET /failures`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceQuery {
    pub project_id: String,
    /// Only traces of this environment (an API key sees only its own).
    pub environment: Option<String>,
    pub statuses: Vec<Status>,
    pub model: Option<String>,
    pub session_id: Option<String>,
    pub user_id: Option<String>,
    pub tag: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Full-text query over prompts, responses, tool data and span names.
    pub q: Option<String>,
    pub limit: usize,
    pub cursor: Option<Cursor>,
}

/// Position after the last row of a page: rows are ordered by (timestamp, row key) descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub ts_micros: i64,
    pub key: i64,
}

impl Cursor {
    pub fn encode(&self) -> String {
        format!("{}_{}", self.ts_micros, self.key)
    }

    pub fn decode(s: &str) -> Option<Cursor> {
        let (a, b) = s.split_once('_')?;
        Some(Cursor { ts_micros: a.parse().ok()?, key: b.parse().ok()? })
    }
}

/// `GET /traces` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TracePage {
    pub traces: Vec<TraceSummary>,
    pub next_cursor: Option<String>,
}

/// One row of `GET /failures`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Failure {
    pub id: String,
    pub name: String,
    pub status: Status,
    pub failure_reason: Option<String>,
    pub timestamp: DateTime<Utc>,
    pub model: Option<String>,
    pub retries: u32,
    pub error_count: u32,
}

/// `GET /failures` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FailurePage {
    pub failures: Vec<Failure>,
    pub next_cursor: Option<String>,
}

/// Range and resolution of `GET /analytics`.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalyticsQuery {
    pub project_id: String,
    pub environment: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Bucket width in seconds; chosen from the range when absent.
    pub bucket_secs: Option<i64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TokenTotals {
    pub prompt: u64,
    pub completion: u64,
    pub total: u64,
}

impl TokenTotals {
    /// Adds `o`, saturating: sums over many traces never overflow.
    pub fn add(&mut self, o: &TokenTotals) {
        self.prompt = self.prompt.saturating_add(o.prompt);
        self.completion = self.completion.saturating_add(o.completion);
        self.total = self.total.saturating_add(o.total);
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LatencyStats {
    pub avg: Option<f64>,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

impl LatencyStats {
    /// Statistics of `values` (reordered in place), nearest-rank percentiles. Each percentile
    /// is a selection, not a sort: linear in the number of values.
    pub fn of(values: &mut [f64]) -> LatencyStats {
        if values.is_empty() {
            return LatencyStats::default();
        }
        let n = values.len();
        let avg = values.iter().sum::<f64>() / n as f64;
        let rank = |p: f64| ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
        // each selection leaves the larger values after the rank, where the next one looks
        let (r50, r95, r99) = (rank(0.50), rank(0.95), rank(0.99));
        let p50 = *values.select_nth_unstable_by(r50, f64::total_cmp).1;
        let p95 = *values[r50..].select_nth_unstable_by(r95 - r50, f64::total_cmp).1;
        let p99 = *values[r95..].select_nth_unstable_by(r99 - r95, f64::total_cmp).1;
        LatencyStats { avg: Some(avg), p50: Some(p50), p95: Some(p95), p99: Some(p99) }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Totals {
    pub traces: u64,
    pub spans: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub tokens: TokenTotals,
    pub cost_usd: Option<f64>,
    pub latency_ms: LatencyStats,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelBreakdown {
    pub model: String,
    pub traces: u64,
    pub errors: u64,
    pub tokens: TokenTotals,
    pub cost_usd: Option<f64>,
    pub latency_ms: LatencyStats,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TimeBucket {
    pub t: DateTime<Utc>,
    pub traces: u64,
    pub errors: u64,
    pub tokens: u64,
    pub cost_usd: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// `GET /analytics` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Analytics {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub bucket_secs: i64,
    pub totals: Totals,
    pub by_model: Vec<ModelBreakdown>,
    pub timeseries: Vec<TimeBucket>,
}

/// One row of analytics input: what the aggregation needs of a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalyticsRow {
    pub ts_micros: i64,
    pub model: Option<String>,
    pub status: Status,
    pub latency_ms: Option<f64>,
    pub tokens: TokenTotals,
    pub cost_usd: Option<f64>,
    pub span_count: u64,
}

/// Most buckets one analytics answer may hold.
pub const MAX_BUCKETS: i64 = 2_000;

/// Widest bucket, in seconds: 100 years.
pub const MAX_BUCKET_SECS: i64 = 100 * 366 * 86_400;

/// Picks a bucket width giving at most ~60 buckets over `range_secs`.
pub fn auto_bucket(range_secs: i64) -> i64 {
    const STEPS: [i64; 10] =
        [60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400];
    let want = (range_secs / 60).max(1);
    STEPS.iter().copied().find(|s| *s >= want).unwrap_or(7 * 86400)
}

fn add_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (None, None) => None,
        (x, y) => Some(x.unwrap_or(0.0) + y.unwrap_or(0.0)),
    }
}

/// Aggregates rows into the analytics answer; every backend feeds its rows through this so the
/// figures are computed one way.
pub fn aggregate(
    rows: Vec<AnalyticsRow>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    bucket_secs: Option<i64>,
) -> Analytics {
    use std::collections::BTreeMap;
    let mut totals = Totals::default();
    let mut latencies = Vec::with_capacity(rows.len());
    struct Acc {
        traces: u64,
        errors: u64,
        tokens: TokenTotals,
        cost: Option<f64>,
        lat: Vec<f64>,
    }
    let new_acc = || Acc {
        traces: 0,
        errors: 0,
        tokens: TokenTotals::default(),
        cost: None,
        lat: Vec::new(),
    };
    let mut models: BTreeMap<String, Acc> = BTreeMap::new();
    let min_ts = rows.iter().map(|r| r.ts_micros).min();
    let max_ts = rows.iter().map(|r| r.ts_micros).max();
    let start_us = since.map(|t| t.timestamp_micros()).or(min_ts).unwrap_or(0);
    let end_us = until
        .map(|t| t.timestamp_micros())
        .or(max_ts.map(|m| m.saturating_add(1)))
        .unwrap_or(start_us);
    let range_secs = (end_us.saturating_sub(start_us) / 1_000_000).max(1);
    let bucket = bucket_secs.unwrap_or_else(|| auto_bucket(range_secs)).clamp(1, MAX_BUCKET_SECS);
    let bucket_us = bucket * 1_000_000;
    let first_bucket = start_us.div_euclid(bucket_us) * bucket_us;
    let mut buckets: BTreeMap<i64, Acc> = BTreeMap::new();
    if !rows.is_empty() {
        let mut b = first_bucket;
        while b < end_us && buckets.len() < MAX_BUCKETS as usize {
            buckets.insert(b, new_acc());
            match b.checked_add(bucket_us) {
                Some(next) => b = next,
                None => break,
            }
        }
    }
    for r in rows {
        let is_err = r.status == Status::Error;
        totals.traces += 1;
        totals.spans = totals.spans.saturating_add(r.span_count);
        totals.errors += is_err as u64;
        totals.tokens.add(&r.tokens);
        totals.cost_usd = add_opt(totals.cost_usd, r.cost_usd);
        if let Some(l) = r.latency_ms {
            latencies.push(l);
        }
        let key = r.model.as_deref().unwrap_or("(none)");
        if !models.contains_key(key) {
            models.insert(key.to_string(), new_acc());
        }
        for acc in [
            models.get_mut(key).expect("inserted above"),
            buckets.entry(r.ts_micros.div_euclid(bucket_us) * bucket_us).or_insert_with(new_acc),
        ] {
            acc.traces += 1;
            acc.errors += is_err as u64;
            acc.tokens.add(&r.tokens);
            acc.cost = add_opt(acc.cost, r.cost_usd);
            if let Some(l) = r.latency_ms {
                acc.lat.push(l);
            }
        }
    }
    totals.error_rate =
        if totals.traces == 0 { 0.0 } else { totals.errors as f64 / totals.traces as f64 };
    totals.latency_ms = LatencyStats::of(&mut latencies);
    let mut by_model: Vec<ModelBreakdown> = models
        .into_iter()
        .map(|(model, mut a)| ModelBreakdown {
            model,
            traces: a.traces,
            errors: a.errors,
            tokens: a.tokens,
            cost_usd: a.cost,
            latency_ms: LatencyStats::of(&mut a.lat),
        })
        .collect();
    by_model.sort_by(|a, b| b.traces.cmp(&a.traces).then(a.model.cmp(&b.model)));
    let timeseries = buckets
        .into_iter()
        .map(|(t, mut a)| {
            let l = LatencyStats::of(&mut a.lat);
            TimeBucket {
                t: crate::time::from_micros(t),
                traces: a.traces,
                errors: a.errors,
                tokens: a.tokens.total,
                cost_usd: a.cost,
                p50_ms: l.p50,
                p95_ms: l.p95,
                p99_ms: l.p99,
            }
        })
        .collect();
    Analytics { since, until, bucket_secs: bucket, totals, by_model, timeseries }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_selection_match_a_sort() {
        let mut state = 7u64;
        for n in [1usize, 2, 3, 19, 20, 21, 100, 101, 1000, 4097] {
            let mut v: Vec<f64> = (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state % 5000) as f64 / 10.0
                })
                .collect();
            let mut sorted = v.clone();
            sorted.sort_by(f64::total_cmp);
            let rank = |p: f64| sorted[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
            let s = LatencyStats::of(&mut v);
            assert_eq!(
                (s.p50, s.p95, s.p99),
                (Some(rank(0.5)), Some(rank(0.95)), Some(rank(0.99)))
            );
        }
    }

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = LatencyStats::of(&mut v);
        assert_eq!((s.p50, s.p95, s.p99), (Some(50.0), Some(95.0), Some(99.0)));
        assert_eq!(s.avg, Some(50.5));
        assert_eq!(LatencyStats::of(&mut []), LatencyStats::default());
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_none() {
        let c = Cursor { ts_micros: 1_780_000_000_000_000, key: 42 };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("nope"), None);
        assert_eq!(Cursor::decode("1_x"), None);
    }

    #[test]
    fn buckets_cover_the_range_including_empty_ones() {
        let row = |ts_s: i64, status| AnalyticsRow {
            ts_micros: ts_s * 1_000_000,
            model: Some("m".into()),
            status,
            latency_ms: Some(10.0),
            tokens: TokenTotals { prompt: 1, completion: 2, total: 3 },
            cost_usd: None,
            span_count: 2,
        };
        let a = aggregate(
            vec![row(0, Status::Success), row(7200, Status::Error)],
            None,
            None,
            Some(3600),
        );
        assert_eq!(a.timeseries.len(), 3);
        assert_eq!(a.timeseries[1].traces, 0);
        assert_eq!(a.totals.error_rate, 0.5);
        assert_eq!(a.totals.spans, 4);
        assert_eq!(a.totals.cost_usd, None);
        assert_eq!(a.by_model[0].tokens.total, 6);
    }
}
