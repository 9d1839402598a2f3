//! Query strings of `GET /traces`, `/failures` (same parser) and `/analytics`, with cursors;
//! a parsed analytics query is aggregated over a few rows, as the stores do.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracellm_core::Status;
use tracellm_core::api::{AnalyticsRow, Cursor, MAX_BUCKETS, TokenTotals, aggregate};
use tracellm_server::auth::Access;
use tracellm_server::{analytics_query, trace_query};

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    let access = Access { project_id: "default".into(), environment: None, key_id: None };
    if let Ok(q) = trace_query(Some(raw), &access)
        && let Some(c) = q.cursor
    {
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
    }
    if let Ok(q) = analytics_query(Some(raw), &access) {
        let row = |ts_micros: i64| AnalyticsRow {
            ts_micros,
            model: Some("m".into()),
            status: Status::Success,
            latency_ms: Some(1.0),
            tokens: TokenTotals { prompt: u64::MAX, completion: 1, total: u64::MAX },
            cost_usd: Some(1.0),
            span_count: u64::MAX,
        };
        let rows = vec![row(0), row(1_780_000_000_000_000), row(7_258_118_399_000_000)];
        let n = rows.len();
        let a = aggregate(rows, q.since, q.until, q.bucket_secs);
        // The range's buckets, plus one per row outside it (stores pass only rows within).
        assert!(a.timeseries.len() <= MAX_BUCKETS as usize + n, "{} buckets", a.timeseries.len());
    }
});
