//! What the monitor knows: the recent traces and the figures computed from them. No drawing here.

use std::collections::{BTreeMap, HashMap, VecDeque};

use chrono::{DateTime, Utc};
use tracellm_core::api::LatencyStats;
use tracellm_core::{Status, Trace, TraceSummary};

/// Most traces kept in memory (the list and the window figures).
pub const KEEP: usize = 2_000;
/// Width of a sparkline bucket, in seconds, and how many buckets are kept.
pub const BUCKET_SECS: i64 = 10;
pub const BUCKETS: usize = 90;

#[derive(Debug, Clone, PartialEq)]
pub enum Connection {
    Connecting,
    Live { version: String },
    Down { reason: String, retry_in_ms: u64 },
}

/// The trace opened with Enter.
#[derive(Debug, Clone)]
pub enum Detail {
    Loading(String),
    Failed(String),
    Open { trace: Box<Trace>, selected: usize },
}

/// Per-model figures over the traces in memory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelRow {
    pub model: String,
    pub traces: u64,
    pub errors: u64,
    pub tokens: u64,
    pub cost: Option<f64>,
    pub latency: LatencyStats,
}

#[derive(Debug)]
pub struct State {
    pub endpoint: String,
    /// Newest first.
    pub traces: VecDeque<TraceSummary>,
    /// Events that arrived while paused, applied on resume.
    pub held: Vec<(bool, TraceSummary)>,
    pub paused: bool,
    pub errors_only: bool,
    pub filter: String,
    /// Some while the filter is being typed.
    pub editing: Option<String>,
    pub selected: usize,
    pub connection: Connection,
    pub detail: Option<Detail>,
    /// (traces, errors) per bucket start (epoch seconds).
    pub buckets: BTreeMap<i64, (u64, u64)>,
    /// Live events since the monitor opened.
    pub live_traces: u64,
    pub live_tokens: u64,
    pub live_cost: f64,
    pub lagged: u64,
}

impl State {
    pub fn new(endpoint: &str) -> State {
        State {
            endpoint: endpoint.to_string(),
            traces: VecDeque::new(),
            held: Vec::new(),
            paused: false,
            errors_only: false,
            filter: String::new(),
            editing: None,
            selected: 0,
            connection: Connection::Connecting,
            detail: None,
            buckets: BTreeMap::new(),
            live_traces: 0,
            live_tokens: 0,
            live_cost: 0.0,
            lagged: 0,
        }
    }

    fn count(&mut self, t: &TraceSummary) {
        let b = t.timestamp.timestamp().div_euclid(BUCKET_SECS) * BUCKET_SECS;
        let e = self.buckets.entry(b).or_default();
        e.0 += 1;
        e.1 += (t.status == Status::Error) as u64;
        while self.buckets.len() > BUCKETS * 2 {
            self.buckets.pop_first();
        }
    }

    /// The recent traces, as loaded on (re)connect; replaces what was there.
    pub fn load(&mut self, mut page: Vec<TraceSummary>) {
        page.sort_by_key(|t| std::cmp::Reverse(t.timestamp));
        page.truncate(KEEP);
        self.buckets.clear();
        for t in &page {
            self.count(t);
        }
        self.traces = page.into();
        self.clamp_selection();
    }

    /// A `trace.created` (`created`) or `trace.updated` event.
    pub fn event(&mut self, created: bool, t: TraceSummary) {
        if self.paused {
            self.held.push((created, t));
            return;
        }
        self.apply(created, t);
    }

    fn apply(&mut self, created: bool, t: TraceSummary) {
        if let Some(i) = self.traces.iter().position(|x| x.id == t.id) {
            self.traces[i] = t;
            return;
        }
        if created {
            self.live_traces += 1;
            self.live_tokens += t.tokens.total;
            self.live_cost += t.cost_usd.unwrap_or(0.0);
        }
        self.count(&t);
        // Keep newest first even when a late trace arrives with an old timestamp.
        let at = self
            .traces
            .iter()
            .position(|x| x.timestamp <= t.timestamp)
            .unwrap_or(self.traces.len());
        self.traces.insert(at, t);
        if at <= self.selected && self.selected > 0 {
            // The row under the cursor stays under it.
            self.selected += 1;
        }
        self.traces.truncate(KEEP);
        self.clamp_selection();
    }

    pub fn toggle_pause(&mut self) {
        self.paused = !self.paused;
        if !self.paused {
            for (c, t) in std::mem::take(&mut self.held) {
                self.apply(c, t);
            }
        }
    }

    fn matches(&self, t: &TraceSummary) -> bool {
        if self.errors_only && t.status != Status::Error {
            return false;
        }
        if self.filter.is_empty() {
            return true;
        }
        let f = self.filter.to_lowercase();
        [
            Some(t.id.as_str()),
            Some(t.name.as_str()),
            t.model.as_deref(),
            Some(t.status.as_str()),
            t.user_id.as_deref(),
            t.session_id.as_deref(),
            t.prompt_preview.as_deref(),
        ]
        .into_iter()
        .flatten()
        .any(|s| s.to_lowercase().contains(&f))
            || t.tags.iter().any(|tag| tag.to_lowercase().contains(&f))
    }

    /// The traces the list shows.
    pub fn visible(&self) -> Vec<&TraceSummary> {
        self.traces.iter().filter(|t| self.matches(t)).collect()
    }

    pub fn clamp_selection(&mut self) {
        let n = self.visible().len();
        self.selected = self.selected.min(n.saturating_sub(1));
    }

    pub fn move_selection(&mut self, delta: isize) {
        let n = self.visible().len();
        if n == 0 {
            self.selected = 0;
            return;
        }
        self.selected = (self.selected as isize + delta).clamp(0, n as isize - 1) as usize;
    }

    pub fn selected_id(&self) -> Option<String> {
        self.visible().get(self.selected).map(|t| t.id.clone())
    }

    /// Traces and errors per bucket, oldest first, ending with the bucket of `now`.
    pub fn series(&self, now: DateTime<Utc>) -> (Vec<u64>, Vec<u64>) {
        let last = now.timestamp().div_euclid(BUCKET_SECS) * BUCKET_SECS;
        let mut traces = Vec::with_capacity(BUCKETS);
        let mut errors = Vec::with_capacity(BUCKETS);
        for k in (0..BUCKETS as i64).rev() {
            let (t, e) = self.buckets.get(&(last - k * BUCKET_SECS)).copied().unwrap_or_default();
            traces.push(t);
            errors.push(e);
        }
        (traces, errors)
    }

    /// Latency statistics over the visible traces.
    pub fn latency(&self) -> LatencyStats {
        let mut v: Vec<f64> = self.visible().iter().filter_map(|t| t.latency_ms).collect();
        LatencyStats::of(&mut v)
    }

    /// Token, cost and error totals over the visible traces.
    pub fn totals(&self) -> (u64, u64, Option<f64>, u64) {
        let vis = self.visible();
        let tokens = vis.iter().map(|t| t.tokens.total).sum();
        let cost = vis
            .iter()
            .filter_map(|t| t.cost_usd)
            .fold(None, |a: Option<f64>, c| Some(a.unwrap_or(0.0) + c));
        let errors = vis.iter().filter(|t| t.status == Status::Error).count() as u64;
        (vis.len() as u64, tokens, cost, errors)
    }

    /// Per-model figures over the visible traces, busiest model first.
    pub fn models(&self) -> Vec<ModelRow> {
        let mut acc: HashMap<String, (ModelRow, Vec<f64>)> = HashMap::new();
        for t in self.visible() {
            let name = t.model.clone().unwrap_or_else(|| "(none)".into());
            let (row, lat) = acc
                .entry(name.clone())
                .or_insert_with(|| (ModelRow { model: name, ..ModelRow::default() }, Vec::new()));
            row.traces += 1;
            row.errors += (t.status == Status::Error) as u64;
            row.tokens += t.tokens.total;
            if let Some(c) = t.cost_usd {
                row.cost = Some(row.cost.unwrap_or(0.0) + c);
            }
            if let Some(l) = t.latency_ms {
                lat.push(l);
            }
        }
        let mut rows: Vec<ModelRow> = acc
            .into_values()
            .map(|(mut r, mut lat)| {
                r.latency = LatencyStats::of(&mut lat);
                r
            })
            .collect();
        rows.sort_by(|a, b| b.traces.cmp(&a.traces).then(a.model.cmp(&b.model)));
        rows
    }
}
