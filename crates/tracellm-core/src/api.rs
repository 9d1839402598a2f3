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

impl AnalyticsQuery {
    /// The range in microseconds, half-open; an open end is the furthest time there is.
    pub fn range_micros(&self) -> (i64, i64) {
        (
            self.since.map(crate::time::to_micros).unwrap_or(i64::MIN),
            self.until.map(crate::time::to_micros).unwrap_or(i64::MAX),
        )
    }
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

/// One row of analytics input: what the aggregation needs of a trace. The model is borrowed
/// from the database row, so reading a row allocates nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalyticsRow<'a> {
    pub ts_micros: i64,
    pub model: Option<&'a str>,
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

/// Sums of one group of traces (a model or a time bucket); latencies are kept whole so the
/// percentiles are exact.
#[derive(Debug, Clone, Default)]
struct Acc {
    traces: u64,
    errors: u64,
    tokens: TokenTotals,
    cost: Option<f64>,
    lat: Vec<f64>,
}

impl Acc {
    fn add(&mut self, r: &AnalyticsRow<'_>, is_err: bool) {
        self.traces += 1;
        self.errors += is_err as u64;
        self.tokens.add(&r.tokens);
        self.cost = add_opt(self.cost, r.cost_usd);
        if let Some(l) = r.latency_ms {
            self.lat.push(l);
        }
    }

    fn merge(&mut self, o: Acc) {
        self.traces += o.traces;
        self.errors += o.errors;
        self.tokens.add(&o.tokens);
        self.cost = add_opt(self.cost, o.cost);
        self.lat.extend(o.lat);
    }
}

/// Builds the `GET /analytics` answer one trace at a time, so a store can feed it straight
/// from its cursor (no row is kept beyond its latency), and several aggregators over disjoint
/// parts of the range can be merged. Every backend goes through it: the figures are computed
/// one way.
#[derive(Debug, Clone)]
pub struct Aggregator {
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    bucket_secs: i64,
    bucket_us: i64,
    /// Start of `buckets[0]`; buckets run back to back up to the end of the range.
    first_bucket: i64,
    buckets: Vec<Acc>,
    /// Buckets of rows outside that run (only when the range is cut at MAX_BUCKETS).
    stray: std::collections::BTreeMap<i64, Acc>,
    totals: Acc,
    spans: u64,
    models: Vec<(String, Acc)>,
}

impl Aggregator {
    /// An aggregator for `since..until`, or where either is open, for the stored traces'
    /// first and last start times `data` (both inclusive; `None` when there are none).
    pub fn new(
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
        bucket_secs: Option<i64>,
        data: Option<(i64, i64)>,
    ) -> Aggregator {
        let start_us = since.map(|t| t.timestamp_micros()).or(data.map(|d| d.0)).unwrap_or(0);
        let end_us = until
            .map(|t| t.timestamp_micros())
            .or(data.map(|d| d.1.saturating_add(1)))
            .unwrap_or(start_us);
        let range_secs = (end_us.saturating_sub(start_us) / 1_000_000).max(1);
        let bucket =
            bucket_secs.unwrap_or_else(|| auto_bucket(range_secs)).clamp(1, MAX_BUCKET_SECS);
        let bucket_us = bucket * 1_000_000;
        let first_bucket = start_us.div_euclid(bucket_us) * bucket_us;
        // buckets from the first up to the end of the range, at most MAX_BUCKETS of them
        let span = (end_us as i128 - first_bucket as i128).max(0);
        let n =
            ((span + bucket_us as i128 - 1) / bucket_us as i128).min(MAX_BUCKETS as i128) as usize;
        Aggregator {
            since,
            until,
            bucket_secs: bucket,
            bucket_us,
            first_bucket,
            buckets: vec![Acc::default(); n],
            stray: Default::default(),
            totals: Acc::default(),
            spans: 0,
            models: Vec::new(),
        }
    }

    /// Start times that split the range into `parts` pieces of equal length, for aggregating
    /// them side by side (`parts - 1` cut points, in order).
    pub fn cuts(start_us: i64, end_us: i64, parts: usize) -> Vec<i64> {
        let len = (end_us as i128 - start_us as i128).max(0);
        (1..parts).map(|k| (start_us as i128 + len * k as i128 / parts as i128) as i64).collect()
    }

    pub fn add(&mut self, r: &AnalyticsRow<'_>) {
        let is_err = r.status == Status::Error;
        self.totals.add(r, is_err);
        self.spans = self.spans.saturating_add(r.span_count);
        let key = r.model.unwrap_or("(none)");
        // a handful of models per range: a scan beats hashing
        match self.models.iter_mut().find(|(m, _)| m == key) {
            Some((_, acc)) => acc.add(r, is_err),
            None => {
                let mut acc = Acc::default();
                acc.add(r, is_err);
                self.models.push((key.to_string(), acc));
            }
        }
        let b = r.ts_micros.div_euclid(self.bucket_us) * self.bucket_us;
        let ix = b.checked_sub(self.first_bucket).map(|d| d / self.bucket_us);
        match ix.and_then(|i| usize::try_from(i).ok()).and_then(|i| self.buckets.get_mut(i)) {
            Some(acc) => acc.add(r, is_err),
            None => self.stray.entry(b).or_default().add(r, is_err),
        }
    }

    /// Folds in an aggregator built with the same range and bucket over other traces.
    pub fn merge(&mut self, o: Aggregator) {
        debug_assert_eq!((self.bucket_us, self.first_bucket), (o.bucket_us, o.first_bucket));
        self.totals.merge(o.totals);
        self.spans = self.spans.saturating_add(o.spans);
        for (model, acc) in o.models {
            match self.models.iter_mut().find(|(m, _)| *m == model) {
                Some((_, mine)) => mine.merge(acc),
                None => self.models.push((model, acc)),
            }
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(o.buckets) {
            mine.merge(theirs);
        }
        for (b, acc) in o.stray {
            self.stray.entry(b).or_default().merge(acc);
        }
    }

    pub fn finish(self) -> Analytics {
        let mut t = self.totals;
        let totals = Totals {
            traces: t.traces,
            spans: self.spans,
            errors: t.errors,
            error_rate: if t.traces == 0 { 0.0 } else { t.errors as f64 / t.traces as f64 },
            tokens: t.tokens,
            cost_usd: t.cost,
            latency_ms: LatencyStats::of(&mut t.lat),
        };
        let mut by_model: Vec<ModelBreakdown> = self
            .models
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
        // no traces, no time series; otherwise every bucket of the range, empty ones included
        let mut all = self.stray;
        if totals.traces > 0 {
            let mut b = self.first_bucket;
            for acc in self.buckets {
                all.entry(b).or_default().merge(acc);
                match b.checked_add(self.bucket_us) {
                    Some(next) => b = next,
                    None => break,
                }
            }
        }
        let timeseries = all
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
        Analytics {
            since: self.since,
            until: self.until,
            bucket_secs: self.bucket_secs,
            totals,
            by_model,
            timeseries,
        }
    }
}

/// Aggregates rows held in memory into the analytics answer.
pub fn aggregate(
    rows: Vec<AnalyticsRow<'_>>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    bucket_secs: Option<i64>,
) -> Analytics {
    let min = rows.iter().map(|r| r.ts_micros).min();
    let max = rows.iter().map(|r| r.ts_micros).max();
    let mut agg = Aggregator::new(since, until, bucket_secs, min.zip(max));
    for r in &rows {
        agg.add(r);
    }
    agg.finish()
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
    fn halves_aggregated_apart_and_merged_give_the_whole_answer() {
        let models = ["gpt-4o", "claude", "llama"];
        let rows: Vec<AnalyticsRow> = (0..1000i64)
            .map(|k| AnalyticsRow {
                ts_micros: 1_700_000_000_000_000 + k * 7_919_000,
                model: if k % 11 == 0 { None } else { Some(models[(k % 3) as usize]) },
                status: if k % 13 == 0 { Status::Error } else { Status::Success },
                latency_ms: (k % 17 != 0).then_some(((k * 37) % 1000) as f64),
                tokens: TokenTotals { prompt: k as u64, completion: 2, total: k as u64 + 2 },
                cost_usd: (k % 5 == 0).then_some(0.25),
                span_count: (k % 7 + 1) as u64,
            })
            .collect();
        let since = Some(crate::time::from_micros(1_700_000_000_000_000 - 3_600_000_000));
        for (since, until, bucket) in [(None, None, None), (since, None, Some(600))] {
            let whole = aggregate(rows.clone(), since, until, bucket);
            let (first, last) = (rows[0].ts_micros, rows[999].ts_micros);
            for parts in [2, 3] {
                let cuts = Aggregator::cuts(first, last + 1, parts);
                let mut aggs: Vec<Aggregator> = (0..parts)
                    .map(|_| Aggregator::new(since, until, bucket, Some((first, last))))
                    .collect();
                for r in &rows {
                    let part = cuts.iter().filter(|c| r.ts_micros >= **c).count();
                    aggs[part].add(r);
                }
                assert!(aggs.iter().all(|a| a.totals.traces > 0), "every part holds rows");
                let mut merged = aggs.remove(0);
                for a in aggs {
                    merged.merge(a);
                }
                assert_eq!(merged.finish(), whole, "{parts} parts");
            }
            assert_eq!(whole.totals.traces, 1000);
            assert_eq!(whole.by_model.iter().map(|m| m.traces).sum::<u64>(), 1000);
            assert_eq!(whole.timeseries.iter().map(|b| b.traces).sum::<u64>(), 1000);
        }
    }

    #[test]
    fn buckets_cover_the_range_including_empty_ones() {
        let row = |ts_s: i64, status| AnalyticsRow {
            ts_micros: ts_s * 1_000_000,
            model: Some("m"),
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
