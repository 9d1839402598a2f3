//! The store conformance suite: every backend must pass all of it. Each backend instantiates
//! the suite with `store_suite!(module, async fn that opens a fresh store)`.

use std::sync::Arc;

use serde_json::json;
use tracellm_core::api::{AnalyticsQuery, Cursor, TraceQuery};
use tracellm_core::otel::SpanBatch;
use tracellm_core::{
    NormalizeOptions, PriceTable, Span, SpanEvent, SpanKind, Status, Tokens, Trace, TraceInput,
    normalize_trace,
};
use tracellm_store::{EventKind, NewApiKey, SqliteOptions, SqliteStore, Store, StoreError};

fn trace(project: &str, id: &str, minute: u32, doc: serde_json::Value) -> Trace {
    let mut d = doc;
    d["id"] = json!(id);
    if d.get("spans").is_none() {
        d["spans"] = json!([{"id": "root", "name": "agent", "kind": "agent",
            "start_time": format!("2026-05-31T10:{minute:02}:00Z"),
            "end_time": format!("2026-05-31T10:{minute:02}:01Z")}]);
    }
    normalize_trace(d, project, &PriceTable::builtin(), &NormalizeOptions::default()).unwrap()
}

fn query(project: &str) -> TraceQuery {
    TraceQuery { project_id: project.into(), limit: 50, ..Default::default() }
}

fn llm(
    id: &str,
    minute: u32,
    model: &str,
    prompt: &str,
    answer: &str,
    error: Option<&str>,
) -> serde_json::Value {
    json!({"id": id, "name": "chat", "kind": "llm", "model": model,
        "start_time": format!("2026-05-31T10:{minute:02}:00Z"), "end_time": format!("2026-05-31T10:{minute:02}:00.500Z"),
        "input": {"messages": [{"role": "user", "content": prompt}]},
        "output": {"messages": [{"role": "assistant", "content": answer}]},
        "tokens": {"prompt": 100, "completion": 50}, "error": error})
}

pub async fn round_trip(store: Arc<dyn Store>) {
    let t = trace(
        "default",
        "t1",
        1,
        json!({"tags": ["prod"], "session_id": "s1", "user_id": "u1",
        "metadata": {"k": "v"},
        "spans": [llm("a", 1, "gpt-4o", "Explain transformers", "A transformer is…", None)]}),
    );
    let out = store.ingest(vec![t.clone()]).await.unwrap();
    assert_eq!(out[0].id, "t1");
    assert!(out[0].created);
    let got = store.get_trace("default", "t1").await.unwrap().unwrap();
    assert_eq!(got, t, "a stored trace reads back exactly");
    assert!(store.get_trace("other", "t1").await.unwrap().is_none(), "projects are isolated");
    assert!(store.get_trace("default", "nope").await.unwrap().is_none());
}

pub async fn resending_replaces(store: Arc<dyn Store>) {
    store.ingest(vec![trace("default", "t1", 1, json!({"tags": ["a"]}))]).await.unwrap();
    let mut rx = store.subscribe();
    let out = store
        .ingest(vec![trace("default", "t1", 2, json!({"tags": ["b"], "name": "renamed"}))])
        .await
        .unwrap();
    assert!(!out[0].created);
    let ev = rx.recv().await.unwrap();
    assert_eq!(ev.kind, EventKind::Updated);
    assert_eq!(ev.trace.name, "renamed");
    let page = store.list_traces(query("default")).await.unwrap();
    assert_eq!(page.traces.len(), 1);
    assert_eq!(page.traces[0].name, "renamed");
    let by_old_tag =
        store.list_traces(TraceQuery { tag: Some("a".into()), ..query("default") }).await.unwrap();
    assert!(by_old_tag.traces.is_empty());
    let by_new_tag =
        store.list_traces(TraceQuery { tag: Some("b".into()), ..query("default") }).await.unwrap();
    assert_eq!(by_new_tag.traces.len(), 1);
}

pub async fn filters_return_exactly_the_matches(store: Arc<dyn Store>) {
    let mut batch = Vec::new();
    for i in 0..12u32 {
        let model = if i % 3 == 0 { "gpt-4o" } else { "claude-sonnet-4" };
        let err = (i % 4 == 0).then_some("boom");
        let word = if i % 2 == 0 { "kangaroo" } else { "platypus" };
        batch.push(trace(
            "default",
            &format!("t{i}"),
            i,
            json!({
            "session_id": format!("s{}", i % 2), "user_id": format!("u{}", i % 3),
            "tags": [format!("tag{}", i % 5)],
            "spans": [llm("a", i, model, &format!("tell me about the {word}"), "ok", err)]}),
        ));
    }
    batch.push(trace(
        "other",
        "x1",
        1,
        json!({"spans": [llm("a", 1, "gpt-4o", "kangaroo", "ok", None)]}),
    ));
    store.ingest(batch).await.unwrap();
    let ids = |p: &tracellm_core::api::TracePage| {
        let mut v: Vec<u32> = p.traces.iter().map(|t| t.id[1..].parse().unwrap()).collect();
        v.sort();
        v
    };
    let all = store.list_traces(query("default")).await.unwrap();
    assert_eq!(all.traces.len(), 12);
    assert!(all.traces.windows(2).all(|w| w[0].timestamp >= w[1].timestamp), "newest first");
    let q = |f: fn(&mut TraceQuery)| {
        let mut q = query("default");
        f(&mut q);
        q
    };
    let r = store.list_traces(q(|q| q.model = Some("gpt-4o".into()))).await.unwrap();
    assert_eq!(ids(&r), vec![0, 3, 6, 9]);
    let r = store.list_traces(q(|q| q.statuses = vec![Status::Error])).await.unwrap();
    assert_eq!(ids(&r), vec![0, 4, 8]);
    let r = store.list_traces(q(|q| q.session_id = Some("s1".into()))).await.unwrap();
    assert_eq!(ids(&r), vec![1, 3, 5, 7, 9, 11]);
    let r = store.list_traces(q(|q| q.user_id = Some("u2".into()))).await.unwrap();
    assert_eq!(ids(&r), vec![2, 5, 8, 11]);
    let r = store.list_traces(q(|q| q.tag = Some("tag1".into()))).await.unwrap();
    assert_eq!(ids(&r), vec![1, 6, 11]);
    let r = store.list_traces(q(|q| q.q = Some("kangaroo".into()))).await.unwrap();
    assert_eq!(ids(&r), vec![0, 2, 4, 6, 8, 10], "search sees only its project");
    let r = store.list_traces(q(|q| q.q = Some("platy*".into()))).await.unwrap();
    assert_eq!(ids(&r), vec![1, 3, 5, 7, 9, 11]);
    let r = store.list_traces(q(|q| q.q = Some("boom".into()))).await.unwrap();
    assert_eq!(ids(&r), vec![0, 4, 8], "error messages are searchable");
    let r = store
        .list_traces(q(|q| {
            q.q = Some("kangaroo".into());
            q.model = Some("gpt-4o".into())
        }))
        .await
        .unwrap();
    assert_eq!(ids(&r), vec![0, 6]);
    let since = "2026-05-31T10:03:00Z".parse().unwrap();
    let until = "2026-05-31T10:06:00Z".parse().unwrap();
    let r = store.list_traces(q(|q| q.limit = 50)).await.unwrap();
    assert_eq!(r.traces.len(), 12);
    let r = store
        .list_traces(TraceQuery { since: Some(since), until: Some(until), ..query("default") })
        .await
        .unwrap();
    assert_eq!(ids(&r), vec![3, 4, 5]);
    let f = store.failures(query("default")).await.unwrap();
    assert_eq!(f.failures.len(), 3);
    assert_eq!(f.failures[0].failure_reason.as_deref(), Some("chat: boom"));
}

pub async fn pagination_visits_every_trace_once_while_new_ones_arrive(store: Arc<dyn Store>) {
    let batch: Vec<Trace> =
        (0..45u32).map(|i| trace("default", &format!("t{i}"), i, json!({}))).collect();
    store.ingest(batch).await.unwrap();
    let mut seen = std::collections::HashSet::new();
    let mut cursor: Option<Cursor> = None;
    let mut pages = 0;
    loop {
        let page =
            store.list_traces(TraceQuery { limit: 10, cursor, ..query("default") }).await.unwrap();
        pages += 1;
        for t in &page.traces {
            assert!(seen.insert(t.id.clone()), "{} seen twice", t.id);
        }
        // a new trace arrives between pages
        store.ingest(vec![trace("default", &format!("new{pages}"), 59, json!({}))]).await.unwrap();
        match page.next_cursor {
            Some(c) => cursor = Some(Cursor::decode(&c).unwrap()),
            None => break,
        }
    }
    assert_eq!(pages, 5);
    for i in 0..45 {
        assert!(seen.contains(&format!("t{i}")), "t{i} never seen");
    }
}

pub async fn analytics_add_up(store: Arc<dyn Store>) {
    store
        .ingest(vec![
            trace("default", "a", 1, json!({"spans": [llm("s", 1, "gpt-4o", "p", "r", None)]})),
            trace(
                "default",
                "b",
                2,
                json!({"spans": [llm("s", 2, "gpt-4o", "p", "r", Some("x"))]}),
            ),
            trace(
                "default",
                "c",
                3,
                json!({"spans": [llm("s", 3, "claude-sonnet-4", "p", "r", None)]}),
            ),
        ])
        .await
        .unwrap();
    let a = store
        .analytics(AnalyticsQuery {
            project_id: "default".into(),
            environment: None,
            since: None,
            until: None,
            bucket_secs: Some(60),
        })
        .await
        .unwrap();
    assert_eq!(a.totals.traces, 3);
    assert_eq!(a.totals.spans, 3);
    assert_eq!(a.totals.errors, 1);
    assert!((a.totals.error_rate - 1.0 / 3.0).abs() < 1e-9);
    assert_eq!(a.totals.tokens.total, 450);
    let gpt = (100.0 * 2.5 + 50.0 * 10.0) / 1e6;
    let claude = (100.0 * 3.0 + 50.0 * 15.0) / 1e6;
    assert!((a.totals.cost_usd.unwrap() - (2.0 * gpt + claude)).abs() < 1e-12);
    assert_eq!(a.totals.latency_ms.p50, Some(500.0));
    assert_eq!(a.by_model[0].model, "gpt-4o");
    assert_eq!(a.by_model[0].traces, 2);
    assert_eq!(a.timeseries.len(), 3);
    assert_eq!(a.timeseries.iter().map(|b| b.traces).sum::<u64>(), 3);
    let none = store
        .analytics(AnalyticsQuery {
            project_id: "other".into(),
            environment: None,
            since: None,
            until: None,
            bucket_secs: None,
        })
        .await
        .unwrap();
    assert_eq!(none.totals.traces, 0);
    assert!(none.timeseries.is_empty());
}

pub async fn events_follow_commits(store: Arc<dyn Store>) {
    let mut rx = store.subscribe();
    store.ingest(vec![trace("default", "t1", 1, json!({}))]).await.unwrap();
    let ev = rx.try_recv().expect("event is published before ingest returns");
    assert_eq!(ev.kind, EventKind::Created);
    assert_eq!(ev.trace.id, "t1");
}

pub async fn concurrent_ingest_is_all_stored(store: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for w in 0..8 {
        let s = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                s.ingest(vec![trace("default", &format!("w{w}-{i}"), (i % 60) as u32, json!({}))])
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.info().await.unwrap().traces, 200);
}

fn otel_span(id: &str, parent: Option<&str>, second: u32, kind: SpanKind) -> Span {
    let start = format!("2026-05-31T10:00:{second:02}Z").parse().unwrap();
    let end = format!("2026-05-31T10:00:{:02}Z", second + 1).parse().unwrap();
    Span {
        id: id.into(),
        parent_id: parent.map(String::from),
        name: format!("op-{id}"),
        kind,
        start_time: start,
        end_time: Some(end),
        latency_ms: None,
        status: Status::Success,
        model: (kind == SpanKind::Llm).then(|| "gpt-4o".to_string()),
        provider: None,
        input: json!({"messages": [{"role": "user", "content": format!("question {id}")}]}),
        output: serde_json::Value::Null,
        tool: None,
        tokens: (kind == SpanKind::Llm).then_some(Tokens {
            prompt: 10,
            completion: 5,
            total: 15,
            estimated: false,
            cached: None,
        }),
        cost_usd: None,
        time_to_first_token_ms: None,
        error: None,
        attributes: Default::default(),
        events: Vec::new(),
    }
}

fn batch(trace: &str, spans: Vec<Span>) -> SpanBatch {
    SpanBatch {
        trace_id: trace.into(),
        input: TraceInput::default(),
        spans,
        log_events: Vec::new(),
    }
}

pub async fn spans_arriving_in_any_order_assemble_one_trace(store: Arc<dyn Store>) {
    let mut rx = store.subscribe();
    // children first, root last, over three requests
    store
        .ingest_spans(
            "default",
            vec![batch("t1", vec![otel_span("c1", Some("root"), 1, SpanKind::Llm)])],
        )
        .await
        .unwrap();
    let t = store.get_trace("default", "t1").await.unwrap().unwrap();
    assert_eq!(t.status, Status::Running, "no root yet");
    assert_eq!(rx.recv().await.unwrap().kind, EventKind::Created);
    let mut session = batch("t1", vec![otel_span("c2", Some("root"), 2, SpanKind::Tool)]);
    session.input.session_id = Some("s-9".into());
    store.ingest_spans("default", vec![session]).await.unwrap();
    assert_eq!(rx.recv().await.unwrap().kind, EventKind::Updated);
    assert_eq!(store.get_trace("default", "t1").await.unwrap().unwrap().span_count, 2);
    store
        .ingest_spans(
            "default",
            vec![batch("t1", vec![otel_span("root", None, 0, SpanKind::Agent)])],
        )
        .await
        .unwrap();
    let ev = rx.recv().await.unwrap();
    assert_eq!(ev.kind, EventKind::Updated);
    assert_eq!(ev.trace.status, Status::Success);
    let t = store.get_trace("default", "t1").await.unwrap().unwrap();
    assert_eq!(t.span_count, 3);
    assert_eq!(t.name, "op-root");
    assert_eq!(t.session_id.as_deref(), Some("s-9"), "what an earlier request said is kept");
    assert_eq!(t.tokens.total, 15);
    assert!(t.spans.iter().all(|s| s.id == "root" || s.parent_id.as_deref() == Some("root")));
    // a retrying exporter resends a span: stored once
    store
        .ingest_spans(
            "default",
            vec![batch("t1", vec![otel_span("c1", Some("root"), 1, SpanKind::Llm)])],
        )
        .await
        .unwrap();
    let t = store.get_trace("default", "t1").await.unwrap().unwrap();
    assert_eq!(t.span_count, 3);
    assert_eq!(t.tokens.total, 15);
    let page = store.list_traces(query("default")).await.unwrap();
    assert_eq!(page.traces.len(), 1);
    let found = store
        .list_traces(TraceQuery { q: Some("question".into()), ..query("default") })
        .await
        .unwrap();
    assert_eq!(found.traces.len(), 1, "merged spans are searchable");
}

/// Later batches that change stored spans (a span resent with more in it, a log event for a
/// stored span) are written, while spans they leave alone read back as they were.
pub async fn merges_rewrite_the_spans_they_change(store: Arc<dyn Store>) {
    let root = otel_span("root", None, 0, SpanKind::Agent);
    let (a, b) = (
        otel_span("a", Some("root"), 1, SpanKind::Llm),
        otel_span("b", Some("root"), 2, SpanKind::Tool),
    );
    store
        .ingest_spans("default", vec![batch("m1", vec![root, a.clone(), b.clone()])])
        .await
        .unwrap();
    let before = store.get_trace("default", "m1").await.unwrap().unwrap();
    let mut a2 = a.clone();
    a2.output = json!({"messages": [{"role": "assistant", "content": "answer of a"}]});
    a2.tokens.as_mut().unwrap().completion = 50;
    a2.tokens.as_mut().unwrap().total = 60;
    let c = otel_span("c", Some("root"), 3, SpanKind::Llm);
    store.ingest_spans("default", vec![batch("m1", vec![a2, c])]).await.unwrap();
    let mut events = batch("m1", vec![]);
    events.log_events.push((
        "c".into(),
        SpanEvent {
            name: "gen_ai.choice".into(),
            time: "2026-05-31T10:00:04Z".parse().unwrap(),
            attributes: serde_json::from_value(json!({"body": {"index": 0,
                "message": {"role": "assistant", "content": "answer of c"}}}))
            .unwrap(),
        },
    ));
    store.ingest_spans("default", vec![events]).await.unwrap();
    let t = store.get_trace("default", "m1").await.unwrap().unwrap();
    let span = |id: &str| t.spans.iter().find(|s| s.id == id).unwrap();
    assert_eq!(t.span_count, 4);
    assert_eq!(span("a").output["messages"][0]["content"], "answer of a");
    assert_eq!(span("a").tokens.as_ref().unwrap().total, 60);
    assert_eq!(span("c").output["messages"][0]["content"], "answer of c");
    assert_eq!(t.tokens.total, 75, "a's new count and c's");
    let unchanged = |id: &str| before.spans.iter().find(|s| s.id == id).unwrap();
    assert_eq!(span("b"), unchanged("b"));
    assert_eq!(span("root").name, unchanged("root").name);
    let found = store
        .list_traces(TraceQuery { q: Some("answer".into()), ..query("default") })
        .await
        .unwrap();
    assert_eq!(found.traces.len(), 1, "what the merges added is searchable");
}

/// A request whose merge fails (its spans would close a cycle with stored ones) is refused
/// alone: requests committed beside it are stored, and the stored trace it touched is unchanged.
pub async fn a_failing_merge_fails_only_its_own_request(store: Arc<dyn Store>) {
    store
        .ingest_spans(
            "default",
            vec![batch("loop", vec![otel_span("a", Some("b"), 1, SpanKind::Llm)])],
        )
        .await
        .unwrap();
    let mut calls = Vec::new();
    for i in 0..16 {
        let store = Arc::clone(&store);
        calls.push(tokio::spawn(async move {
            let b = if i == 8 {
                batch("loop", vec![otel_span("b", Some("a"), 0, SpanKind::Agent)])
            } else {
                batch(&format!("ok{i}"), vec![otel_span("root", None, 0, SpanKind::Agent)])
            };
            (i, store.ingest_spans("default", vec![b]).await)
        }));
    }
    for call in calls {
        let (i, outcome) = call.await.unwrap();
        if i == 8 {
            let e = outcome.expect_err("a parent cycle is refused");
            assert!(matches!(e, StoreError::Invalid(_)), "{e:?}");
        } else {
            outcome.unwrap();
            let t = store.get_trace("default", &format!("ok{i}")).await.unwrap();
            assert_eq!(t.map(|t| t.span_count), Some(1), "request {i} is stored");
        }
    }
    let t = store.get_trace("default", "loop").await.unwrap().unwrap();
    assert_eq!(t.span_count, 1, "the stored trace is as it was");
    assert_eq!(store.list_traces(query("default")).await.unwrap().traces.len(), 16);
}

/// A long run's trace as an exporter sends it, in many requests in any order: `(requests, the
/// same trace in one request)`. 640 spans (a root sent last; agents, tools and LLM calls under
/// it at every depth; failed calls retried; spans starting together; a parent with tokens of
/// its own above calls with theirs), some spans sent twice, some first as a draft of other words,
/// and a log event that gives a stored call its answer.
fn grown_trace(id_many: &str, id_one: &str, seed: u64) -> (Vec<SpanBatch>, SpanBatch) {
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let t0: chrono::DateTime<chrono::Utc> = "2026-05-31T10:00:00Z".parse().unwrap();
    let span = |id: String, parent: Option<String>, ms: i64, kind: SpanKind, name: &str| {
        let mut s = otel_span("x", None, 0, kind);
        s.id = id;
        s.parent_id = parent;
        s.name = name.into();
        s.start_time = t0 + chrono::Duration::milliseconds(ms);
        s.end_time = Some(s.start_time + chrono::Duration::milliseconds(40));
        s
    };
    let mut root = span("root".into(), None, 0, SpanKind::Agent, "mission");
    root.input = json!({"goal": "plan the voyage"});
    root.end_time = Some(t0 + chrono::Duration::seconds(600));
    let mut spans: Vec<Span> = Vec::new();
    let mut parents = vec!["root".to_string()];
    while spans.len() < 639 {
        let i = spans.len();
        let parent = parents[rng.random_range(0..parents.len())].clone();
        // a tenth start together with the span before them
        let ms = if i > 0 && rng.random_bool(0.1) {
            (spans[i - 1].start_time - t0).num_milliseconds()
        } else {
            i as i64 * 50 + 10
        };
        match rng.random_range(0..10) {
            0 => {
                let mut agent = span(format!("s{i:03}"), Some(parent), ms, SpanKind::Agent, "step");
                if rng.random_bool(0.3) {
                    // the sum of its calls, as some frameworks report it
                    agent.tokens = Some(Tokens {
                        prompt: 1000,
                        completion: 1000,
                        total: 2000,
                        estimated: false,
                        cached: None,
                    });
                }
                parents.push(agent.id.clone());
                spans.push(agent);
            }
            1 => {
                let mut tool = span(format!("s{i:03}"), Some(parent), ms, SpanKind::Tool, "search");
                tool.output = json!(format!("found harbor {i}"));
                spans.push(tool);
            }
            2 => {
                // a failed call, then its retry under the same parent
                let mut failed =
                    span(format!("s{i:03}"), Some(parent.clone()), ms, SpanKind::Llm, "chat");
                failed.status = Status::Error;
                failed.error = Some(tracellm_core::SpanError {
                    kind: Some("RateLimit".into()),
                    message: format!("slow down {i}"),
                    stack: None,
                });
                spans.push(failed);
                let mut retry =
                    span(format!("s{:03}", i + 1), Some(parent), ms + 45, SpanKind::Llm, "chat");
                retry.output =
                    json!({"messages": [{"role": "assistant", "content": format!("answer{i}")}]});
                spans.push(retry);
            }
            _ => {
                let mut call = span(format!("s{i:03}"), Some(parent), ms, SpanKind::Llm, "chat");
                call.input = json!({"messages": [{"role": "user", "content": format!("question{i} about tides")}]});
                call.output =
                    json!({"messages": [{"role": "assistant", "content": format!("answer{i}")}]});
                call.cost_usd = Some(0.001 * (i % 7) as f64);
                if rng.random_bool(0.05) {
                    call.status = Status::Error;
                    call.error = Some(tracellm_core::SpanError {
                        kind: None,
                        message: format!("refused {i}"),
                        stack: None,
                    });
                }
                spans.push(call);
            }
        }
    }
    spans.truncate(639);
    // the stored call a log event gives its answer to
    let silent =
        spans.iter().position(|s| s.kind == SpanKind::Llm && s.status == Status::Success).unwrap();
    spans[silent].output = serde_json::Value::Null;
    let event = (
        spans[silent].id.clone(),
        SpanEvent {
            name: "gen_ai.choice".into(),
            time: t0 + chrono::Duration::seconds(1),
            attributes: serde_json::from_value(json!({"body": {"index": 0,
                "message": {"role": "assistant", "content": "answer by event"}}}))
            .unwrap(),
        },
    );
    let mut one = batch(id_one, spans.iter().cloned().chain([root.clone()]).collect());
    one.log_events.push(event.clone());
    one.input.session_id = Some("voyage-1".into());

    let mut order = spans.clone();
    order.shuffle(&mut rng);
    // resent as they were, and drafts of other words sent before their final version
    let mut sends: Vec<Span> = Vec::new();
    for (k, s) in order.into_iter().enumerate() {
        if k % 97 == 5 {
            let mut draft = s.clone();
            draft.input =
                json!({"messages": [{"role": "user", "content": format!("draftword{k}")}]});
            draft.status = Status::Running;
            sends.insert(rng.random_range(0..=sends.len()), draft);
        }
        if k % 53 == 7 {
            sends.push(s.clone());
        }
        sends.push(s);
    }
    // requests of up to 60 spans, each span once in a request (an exporter sends it again in
    // another one)
    let mut many: Vec<SpanBatch> = Vec::new();
    let mut room = 0;
    for s in sends {
        match many.last_mut() {
            Some(b) if room > 0 && b.spans.iter().all(|t| t.id != s.id) => b.spans.push(s),
            _ => {
                room = rng.random_range(1..=60);
                many.push(batch(id_many, vec![s]));
            }
        }
        room -= 1;
    }
    many[1].input.session_id = Some("voyage-1".into());
    let last = many.len() - 1;
    many[last].spans.push(root);
    many[last - 1].log_events.push(event);
    (many, one)
}

/// The trace read back after its requests, with `id` for its own.
/// Batches stored from a thread of the blocking pool (`ingest_spans_blocking`, as the server
/// stores big requests) read back as the same batches stored from an async task, and merge
/// with them: every other request of a growing trace goes each way.
pub async fn ingest_from_a_blocking_thread_stores_alike(store: Arc<dyn Store>) {
    let (many, one) = grown_trace("grown", "whole", 11);
    let (fresh, _) = grown_trace("fresh", "unused", 11);
    store.ingest_spans("default", vec![one]).await.unwrap();
    for (n, b) in many.into_iter().enumerate() {
        if n % 2 == 0 {
            let s = Arc::clone(&store);
            let stored =
                tokio::task::spawn_blocking(move || s.ingest_spans_blocking("default", vec![b]))
                    .await
                    .unwrap()
                    .unwrap();
            assert_eq!(stored.len(), 1);
        } else {
            store.ingest_spans("default", vec![b]).await.unwrap();
        }
    }
    // every batch of another growing trace in one call, from the pool
    let s = Arc::clone(&store);
    let stored =
        tokio::task::spawn_blocking(move || s.ingest_spans_blocking("default", fresh)).await;
    assert!(!stored.unwrap().unwrap().is_empty());
    let whole = read_as(&store, "whole", "grown").await;
    let grown = read_as(&store, "grown", "grown").await;
    assert_eq!(grown.span_count, 640);
    assert_eq!(grown, whole);
    let fresh = read_as(&store, "fresh", "grown").await;
    assert_eq!(fresh.span_count, 640, "the pool's many batches assemble one trace");
    assert_eq!(fresh, whole);
    let s = Arc::clone(&store);
    let none = tokio::task::spawn_blocking(move || s.ingest_spans_blocking("default", vec![]));
    assert!(none.await.unwrap().unwrap().is_empty());
}

async fn read_as(store: &Arc<dyn Store>, trace: &str, id: &str) -> Trace {
    let mut t = store.get_trace("default", trace).await.unwrap().unwrap();
    t.id = id.into();
    t
}

/// A trace sent over many requests in any order (more spans than the writer keeps a state for
/// from, sqlite/merge.rs) reads back as the same trace sent in one: every figure rolled up
/// alike, every span as sent last, and search finding the words of its spans' last versions only.
pub async fn a_trace_sent_in_many_requests_reads_as_sent_in_one(store: Arc<dyn Store>) {
    let (many, one) = grown_trace("grown", "whole", 7);
    assert!(many.len() > 15, "{} requests", many.len());
    store.ingest_spans("default", vec![one]).await.unwrap();
    for b in many {
        store.ingest_spans("default", vec![b]).await.unwrap();
    }
    let whole = read_as(&store, "whole", "grown").await;
    let grown = read_as(&store, "grown", "grown").await;
    assert_eq!(grown.span_count, 640);
    assert!(
        grown.retries > 0 && grown.error_count > 0 && grown.status == Status::Error,
        "{grown:?}"
    );
    assert!(grown.cost_usd.is_some() && grown.tokens.total > 0);
    assert_eq!(grown.session_id.as_deref(), Some("voyage-1"));
    assert!(grown.spans.iter().any(|s| s.output["messages"][0]["content"] == "answer by event"));
    assert_eq!(grown, whole);
    let listed = store.list_traces(query("default")).await.unwrap().traces;
    assert_eq!(listed.len(), 2);
    let (mut a, mut b) = (listed[0].clone(), listed[1].clone());
    (a.id, b.id) = (String::new(), String::new());
    assert_eq!(a, b, "the list shows both alike");
    let found = |q: &str| {
        let store = Arc::clone(&store);
        let q = q.to_string();
        async move {
            let mut ids: Vec<String> = store
                .list_traces(TraceQuery { q: Some(q), ..query("default") })
                .await
                .unwrap()
                .traces
                .into_iter()
                .map(|t| t.id)
                .collect();
            ids.sort();
            ids
        }
    };
    let both = vec!["grown".to_string(), "whole".to_string()];
    for q in ["tides", "harbor", "answer", "mission", "voyage", "down", "refused", "event"] {
        assert_eq!(found(q).await, both, "{q}");
    }
    assert_eq!(found("draftword*").await, Vec::<String>::new(), "a draft's words go with it");
}

pub async fn log_events_wait_for_their_span(store: Arc<dyn Store>) {
    let event = SpanEvent {
        name: "gen_ai.choice".into(),
        time: "2026-05-31T10:00:01Z".parse().unwrap(),
        attributes: serde_json::from_value(json!({"body": {"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": "the answer"}}}))
        .unwrap(),
    };
    let mut logs_only = batch("t2", vec![]);
    logs_only.log_events.push(("llm".into(), event));
    store.ingest_spans("default", vec![logs_only]).await.unwrap();
    assert!(
        store.get_trace("default", "t2").await.unwrap().is_none(),
        "nothing to show before spans"
    );
    let mut s = otel_span("llm", None, 0, SpanKind::Llm);
    s.output = serde_json::Value::Null;
    store.ingest_spans("default", vec![batch("t2", vec![s])]).await.unwrap();
    let t = store.get_trace("default", "t2").await.unwrap().unwrap();
    assert_eq!(t.spans[0].output["messages"][0]["content"], "the answer");
    assert_eq!(t.response.as_deref(), Some("the answer"));
}

/// Events whose span never arrives are dropped once they are older than the cutoff, and only
/// those: a span arriving after that has nothing to fold in.
pub async fn expired_log_events_are_dropped(store: Arc<dyn Store>) {
    let event = |text: &str| SpanEvent {
        name: "gen_ai.choice".into(),
        time: "2026-05-31T10:00:01Z".parse().unwrap(),
        attributes: serde_json::from_value(json!({"body": {"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": text}}}))
        .unwrap(),
    };
    let mut old = batch("old", vec![]);
    old.log_events.push(("llm".into(), event("stale answer")));
    store.ingest_spans("default", vec![old]).await.unwrap();
    let cutoff = chrono::Utc::now().timestamp_micros() + 1;
    let mut young = batch("young", vec![]);
    young.log_events.push(("llm".into(), event("fresh answer")));
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    store.ingest_spans("default", vec![young]).await.unwrap();
    assert_eq!(store.expire_pending_events(cutoff).await.unwrap(), 1);
    assert_eq!(store.expire_pending_events(cutoff).await.unwrap(), 0, "nothing left that old");
    for id in ["old", "young"] {
        let mut s = otel_span("llm", None, 0, SpanKind::Llm);
        s.output = serde_json::Value::Null;
        store.ingest_spans("default", vec![batch(id, vec![s])]).await.unwrap();
    }
    let old = store.get_trace("default", "old").await.unwrap().unwrap();
    assert_eq!(old.spans[0].output, serde_json::Value::Null, "the expired event is gone");
    let young = store.get_trace("default", "young").await.unwrap().unwrap();
    assert_eq!(young.spans[0].output["messages"][0]["content"], "fresh answer");
}

pub async fn environments_are_kept_apart(store: Arc<dyn Store>) {
    let mut prod = trace("p1", "a", 1, json!({}));
    prod.environment = Some("production".into());
    let mut stage = trace("p1", "b", 2, json!({}));
    stage.environment = Some("staging".into());
    store.ingest(vec![prod, stage]).await.unwrap();
    let only = |env: &str| TraceQuery { environment: Some(env.into()), ..query("p1") };
    let p = store.list_traces(only("production")).await.unwrap();
    assert_eq!(p.traces.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), vec!["a"]);
    assert_eq!(p.traces[0].environment.as_deref(), Some("production"));
    assert_eq!(store.list_traces(query("p1")).await.unwrap().traces.len(), 2);
    let a = store
        .analytics(AnalyticsQuery {
            project_id: "p1".into(),
            environment: Some("staging".into()),
            since: None,
            until: None,
            bucket_secs: None,
        })
        .await
        .unwrap();
    assert_eq!(a.totals.traces, 1);
    assert_eq!(
        store.get_trace("p1", "b").await.unwrap().unwrap().environment.as_deref(),
        Some("staging")
    );
}

pub async fn projects_and_keys(store: Arc<dyn Store>) {
    let projects = store.list_projects().await.unwrap();
    assert_eq!(projects.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), vec!["default"]);
    let p = store.create_project("my-app", "My App", Some("the app")).await.unwrap();
    assert_eq!(p.id, "my-app");
    assert!(matches!(
        store.create_project("my-app", "again", None).await,
        Err(StoreError::Conflict(_))
    ));
    let key = NewApiKey {
        id: "key_1".into(),
        project_id: "my-app".into(),
        environment: "production".into(),
        name: Some("ci".into()),
        prefix: "tlm_sk_abcd".into(),
        hash: vec![7; 32],
    };
    let created = store.create_api_key(key.clone()).await.unwrap();
    assert_eq!(created.environment, "production");
    let missing = NewApiKey {
        id: "key_2".into(),
        project_id: "nope".into(),
        hash: vec![8; 32],
        ..key.clone()
    };
    assert!(matches!(store.create_api_key(missing).await, Err(StoreError::NotFound(_))));
    let found = store.find_api_key(&[7; 32]).await.unwrap().unwrap();
    assert_eq!((found.id.as_str(), found.project_id.as_str()), ("key_1", "my-app"));
    assert!(found.revoked_at.is_none());
    assert!(store.find_api_key(&[9; 32]).await.unwrap().is_none());
    assert_eq!(store.list_api_keys(Some("my-app")).await.unwrap().len(), 1);
    assert_eq!(store.list_api_keys(Some("default")).await.unwrap().len(), 0);
    let revoked = store.revoke_api_key("key_1").await.unwrap().unwrap();
    assert!(revoked.revoked_at.is_some());
    assert!(store.find_api_key(&[7; 32]).await.unwrap().unwrap().revoked_at.is_some());
    assert!(store.revoke_api_key("key_x").await.unwrap().is_none());
    // last use: recorded, never moved backwards, unknown ids ignored
    assert_eq!(store.list_api_keys(Some("my-app")).await.unwrap()[0].last_used_at, None);
    let t1 = 1_780_000_000_000_000;
    store.note_key_use(vec![("key_1".into(), t1), ("key_x".into(), t1)]).await.unwrap();
    store.note_key_use(vec![("key_1".into(), t1 - 5_000_000)]).await.unwrap();
    let used = store.list_api_keys(Some("my-app")).await.unwrap()[0].last_used_at;
    assert_eq!(used.map(|t| t.timestamp_micros()), Some(t1));
    assert_eq!(store.get_setting("admin").await.unwrap(), None);
    store.set_setting("admin", "h1").await.unwrap();
    store.set_setting("admin", "h2").await.unwrap();
    assert_eq!(store.get_setting("admin").await.unwrap().as_deref(), Some("h2"));
}

/// Both backends split words at anything that is not a letter or digit, ignore case and
/// accents, and take `word*` as a prefix: one query finds the same traces on either.
pub async fn search_splits_and_folds_words_alike(store: Arc<dyn Store>) {
    let texts = [
        "Crème brûlée for the CUSTOMER",
        "rate-limit hit on gpt-4o (429)",
        "user_id=42; naïve retry",
        "nothing to see",
    ];
    let batch = texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            trace(
                "default",
                &format!("t{i}"),
                i as u32,
                json!({"spans": [llm("a", i as u32, "gpt-4o", text, "fine", None)]}),
            )
        })
        .collect();
    store.ingest(batch).await.unwrap();
    let found = |words: &'static str| {
        let store = Arc::clone(&store);
        async move {
            let page = store
                .list_traces(TraceQuery { q: Some(words.into()), ..query("default") })
                .await
                .unwrap();
            let mut ids: Vec<String> = page.traces.into_iter().map(|t| t.id).collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(found("creme BRULEE").await, ["t0"], "case and accents are ignored");
    assert_eq!(found("crème").await, ["t0"]);
    assert_eq!(found("customer").await, ["t0"]);
    assert_eq!(found("rate limit").await, ["t1"], "punctuation splits words");
    assert_eq!(found("rate-limit").await, ["t1"]);
    assert_eq!(found("gpt 4o").await, ["t1"]);
    assert_eq!(found("429").await, ["t1"]);
    assert_eq!(found("naive").await, ["t2"]);
    assert_eq!(found("user_id").await, ["t2"]);
    assert_eq!(found("cust*").await, ["t0"], "a trailing * is a prefix");
    assert_eq!(found("r*").await, ["t1", "t2"]);
    assert!(found("custom").await.is_empty(), "whole words without *");
    assert!(found("brulee rate").await.is_empty(), "every word must occur");
    assert!(found("'\"&|!():*").await.is_empty(), "operators are only punctuation");
}

/// A big trace read in pages: the head is the trace without spans, the span ids list every span
/// in the order of the whole trace, and pages of them read back the same spans as the whole does.
pub async fn a_trace_reads_back_in_pages_as_whole(store: Arc<dyn Store>) {
    // spans arrive in three requests, their start times out of order
    for part in 0..3u32 {
        let spans = (0..40u32)
            .map(|i| {
                let n = part * 40 + i;
                let parent = (n != 0).then_some("s000");
                let kind = if n % 2 == 0 { SpanKind::Llm } else { SpanKind::Tool };
                otel_span(&format!("s{n:03}"), parent, (n * 7) % 59, kind)
            })
            .collect();
        store.ingest_spans("default", vec![batch("big", spans)]).await.unwrap();
    }
    let whole = store.get_trace("default", "big").await.unwrap().unwrap();
    let head = store.get_trace_head("default", "big").await.unwrap().unwrap();
    let ids = store.get_span_ids("default", "big").await.unwrap();
    assert_eq!(ids.len(), 120);
    assert_eq!(head.span_count, 120);
    assert_eq!(ids, whole.spans.iter().map(|s| s.id.clone()).collect::<Vec<_>>());
    assert!(head.spans.is_empty());
    assert_eq!(Trace { spans: whole.spans.clone(), ..head }, whole, "the head is the trace");
    let mut paged = Vec::new();
    for page in ids.chunks(50) {
        paged.extend(store.get_spans("default", "big", page.to_vec()).await.unwrap());
    }
    assert_eq!(paged, whole.spans);
    // the order asked for is the order given; ids not stored are skipped
    let asked = vec!["s007".to_string(), "nope".into(), "s001".into()];
    let got = store.get_spans("default", "big", asked).await.unwrap();
    assert_eq!(got.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["s007", "s001"]);
    // a span sent again with a change replaces the stored one; the others stay as they were
    let mut changed = otel_span("s005", Some("s000"), 35, SpanKind::Tool);
    changed.name = "renamed".into();
    store.ingest_spans("default", vec![batch("big", vec![changed])]).await.unwrap();
    let after = store.get_trace("default", "big").await.unwrap().unwrap();
    assert_eq!(after.span_count, 120);
    for (a, b) in after.spans.iter().zip(&whole.spans) {
        if a.id == "s005" {
            assert_eq!(a.name, "renamed");
        } else {
            assert_eq!(a, b);
        }
    }
    // projects are isolated
    assert!(store.get_trace_head("other", "big").await.unwrap().is_none());
    assert!(store.get_span_ids("other", "big").await.unwrap().is_empty());
    assert!(store.get_spans("other", "big", ids).await.unwrap().is_empty());
}

macro_rules! store_suite {
    ($backend:ident, $open:expr) => {
        mod $backend {
            use super::*;
            macro_rules! case {
                ($name:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let (store, _guard) = $open.await;
                        super::$name(Arc::clone(&store)).await;
                        store.close().await.unwrap();
                    }
                };
            }
            case!(round_trip);
            case!(resending_replaces);
            case!(filters_return_exactly_the_matches);
            case!(search_splits_and_folds_words_alike);
            case!(pagination_visits_every_trace_once_while_new_ones_arrive);
            case!(analytics_add_up);
            case!(events_follow_commits);
            case!(concurrent_ingest_is_all_stored);
            case!(spans_arriving_in_any_order_assemble_one_trace);
            case!(a_failing_merge_fails_only_its_own_request);
            case!(merges_rewrite_the_spans_they_change);
            case!(a_trace_sent_in_many_requests_reads_as_sent_in_one);
            case!(ingest_from_a_blocking_thread_stores_alike);
            case!(log_events_wait_for_their_span);
            case!(expired_log_events_are_dropped);
            case!(environments_are_kept_apart);
            case!(projects_and_keys);
            case!(a_trace_reads_back_in_pages_as_whole);
        }
    };
}

async fn open_sqlite() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store =
        SqliteStore::open(&dir.path().join("traces.db"), SqliteOptions::default()).await.unwrap();
    (Arc::new(store), dir)
}

store_suite!(sqlite, open_sqlite());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traces.db");
    let t = trace(
        "default",
        "t1",
        1,
        json!({"spans": [llm("a", 1, "gpt-4o", "persist me", "ok", None)]}),
    );
    {
        let s = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
        s.ingest(vec![t.clone()]).await.unwrap();
        s.close().await.unwrap();
    }
    let s = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
    assert_eq!(s.get_trace("default", "t1").await.unwrap().unwrap(), t);
    let found =
        s.list_traces(TraceQuery { q: Some("persist".into()), ..query("default") }).await.unwrap();
    assert_eq!(found.traces.len(), 1);
}

/// A growing trace's state is the writer's memory only: after a restart the next request reads
/// it back from the stored spans and the trace goes on as if sent in one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_growing_trace_goes_on_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traces.db");
    let (many, one) = grown_trace("grown", "whole", 11);
    let half = many.len() * 2 / 3;
    let mut many = many.into_iter();
    {
        let s = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
        s.ingest_spans("default", vec![one]).await.unwrap();
        for b in many.by_ref().take(half) {
            s.ingest_spans("default", vec![b]).await.unwrap();
        }
        assert!(s.get_trace("default", "grown").await.unwrap().unwrap().span_count > 300);
        s.close().await.unwrap();
    }
    let s = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
    for b in many {
        s.ingest_spans("default", vec![b]).await.unwrap();
    }
    let s: Arc<dyn Store> = Arc::new(s);
    assert_eq!(read_as(&s, "grown", "grown").await, read_as(&s, "whole", "grown").await);
    let q = TraceQuery { q: Some("draftword*".into()), ..query("default") };
    assert!(s.list_traces(q).await.unwrap().traces.is_empty());
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL: TRACELLM_TEST_PG_URL names a server whose user may create databases; without it,
// one throwaway cluster per test binary is started with scripts/pg-test-cluster and stopped
// when the binary exits. Each test gets a database of its own.

mod pg {
    use std::sync::OnceLock;

    use super::*;

    /// The URL of the server, started on first use.
    fn server() -> &'static str {
        static URL: OnceLock<String> = OnceLock::new();
        URL.get_or_init(|| {
            if let Ok(url) = std::env::var("TRACELLM_TEST_PG_URL") {
                return url;
            }
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/pg-test-cluster");
            let dir = std::env::temp_dir().join(format!("tracellm-pg-test-{}", std::process::id()));
            let out = std::process::Command::new(script)
                .arg("start")
                .arg(&dir)
                .output()
                .expect("cannot run scripts/pg-test-cluster");
            assert!(
                out.status.success(),
                "the PostgreSQL conformance tests need a server: set TRACELLM_TEST_PG_URL, or \
                 install PostgreSQL (apt-get install postgresql) so that a throwaway cluster \
                 can be started: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            // Stop and remove the cluster once this test binary has exited: the watcher must
            // outlive this process, so it is never waited for.
            let watch = format!(
                "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \"$0\" stop \"$1\"; rm -rf \"$1\"",
                pid = std::process::id()
            );
            #[allow(clippy::zombie_processes)]
            std::process::Command::new("sh")
                .arg("-c")
                .arg(watch)
                .arg(script)
                .arg(&dir)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("cannot watch the test cluster");
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        })
    }

    fn with_database(url: &str, db: &str) -> String {
        let (base, _) = url.rsplit_once('/').expect("a URL with a database");
        format!("{base}/{db}")
    }

    async fn admin(sql: String) {
        let (client, conn) =
            tokio_postgres::connect(server(), tokio_postgres::NoTls).await.unwrap();
        let driver = tokio::spawn(conn);
        client.batch_execute(&sql).await.unwrap();
        drop(client);
        let _ = driver.await;
    }

    /// Drops the test's database when the test ends.
    pub struct Database(String);

    impl Drop for Database {
        fn drop(&mut self) {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0);
            let _ = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(admin(sql))
            })
            .join();
        }
    }

    /// Few connections per store: tests run side by side on one server, whose default limit
    /// is 100 connections.
    pub fn options() -> PostgresOptions {
        PostgresOptions { pool_size: 4, ..Default::default() }
    }

    /// A fresh database: its URL, and the guard that drops it.
    pub async fn database() -> (String, Database) {
        let name = format!("t_{:016x}", rand::random::<u64>());
        admin(format!("CREATE DATABASE {name}")).await;
        (with_database(server(), &name), Database(name))
    }

    pub async fn open() -> (Arc<dyn Store>, Database) {
        let (url, db) = database().await;
        let store = PostgresStore::open(&url, pg::options()).await.unwrap();
        (Arc::new(store), db)
    }
}

use tracellm_store::postgres::{PostgresOptions, PostgresStore};

store_suite!(postgres, pg::open());

// PostgreSQL only: several instances sharing one database.

/// Two stores on one database, as two `tracellm start` instances would be.
async fn two_instances() -> (PostgresStore, PostgresStore, pg::Database) {
    let (url, db) = pg::database().await;
    let (a, b) = tokio::join!(
        PostgresStore::open(&url, pg::options()),
        PostgresStore::open(&url, pg::options())
    );
    (a.unwrap(), b.unwrap(), db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_instances_starting_together_migrate_once() {
    let (url, _db) = pg::database().await;
    let opens = (0..4).map(|_| PostgresStore::open(&url, pg::options()));
    let stores = futures::future::join_all(opens).await;
    for s in stores {
        let s = s.unwrap();
        assert_eq!(s.list_projects().await.unwrap().len(), 1);
        s.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_events_reach_every_instance() {
    let (a, b, _db) = two_instances().await;
    let mut on_a = a.subscribe();
    let mut on_b = b.subscribe();
    a.ingest(vec![trace("default", "t1", 1, json!({"name": "from a"}))]).await.unwrap();
    let ev = on_a.try_recv().expect("the writing instance publishes before ingest returns");
    assert_eq!((ev.kind, ev.trace.id.as_str()), (EventKind::Created, "t1"));
    let ev = tokio::time::timeout(std::time::Duration::from_secs(10), on_b.recv())
        .await
        .expect("the other instance hears of the trace")
        .unwrap();
    assert_eq!(ev.kind, EventKind::Created);
    assert_eq!(ev.trace.name, "from a");
    assert!(on_a.try_recv().is_err(), "the writer does not publish its own trace twice");
    assert_eq!(b.get_trace("default", "t1").await.unwrap().unwrap().name, "from a");
    a.close().await.unwrap();
    b.close().await.unwrap();
}

/// A growing trace whose requests go to two instances in turn, some at once: each instance
/// keeps a state of the trace between its requests (`crate::merge`), which the other's writes
/// make stale; the trace still reads back as sent in one request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_instances_growing_one_trace_read_it_as_sent_in_one() {
    let (a, b, _db) = two_instances().await;
    let (a, b): (Arc<dyn Store>, Arc<dyn Store>) = (Arc::new(a), Arc::new(b));
    let (many, one) = grown_trace("grown", "whole", 23);
    a.ingest_spans("default", vec![one]).await.unwrap();
    let n = many.len();
    let mut many = many.into_iter().enumerate();
    // the first two thirds in turn, one at a time
    for (i, req) in many.by_ref().take(n * 2 / 3) {
        let store = if (i / 3) % 2 == 0 { &a } else { &b };
        store.ingest_spans("default", vec![req]).await.unwrap();
    }
    // the rest, two at a time, one to each instance (the root and the log event last)
    let rest: Vec<SpanBatch> = many.map(|(_, r)| r).collect();
    let (last, rest) = rest.split_last().unwrap();
    for pair in rest.chunks(2) {
        let (x, y) = (a.clone(), b.clone());
        let first = pair[0].clone();
        let second = pair.get(1).cloned();
        let t = tokio::spawn(async move { x.ingest_spans("default", vec![first]).await.unwrap() });
        if let Some(second) = second {
            y.ingest_spans("default", vec![second]).await.unwrap();
        }
        t.await.unwrap();
    }
    b.ingest_spans("default", vec![last.clone()]).await.unwrap();
    for store in [&a, &b] {
        assert_eq!(read_as(store, "grown", "grown").await, read_as(store, "whole", "grown").await);
        let q = TraceQuery { q: Some("draftword*".into()), ..query("default") };
        assert!(store.list_traces(q).await.unwrap().traces.is_empty());
    }
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_instances_merging_one_trace_lose_no_spans() {
    let (a, b, _db) = two_instances().await;
    let (a, b) = (Arc::new(a), Arc::new(b));
    let mut tasks = Vec::new();
    for (w, store) in [a.clone(), b.clone(), a.clone(), b.clone()].into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for i in 0..10u32 {
                let id = format!("w{w}-{i}");
                let span = otel_span(&id, Some("root"), i, SpanKind::Tool);
                store.ingest_spans("default", vec![batch("t1", vec![span])]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let t = a.get_trace("default", "t1").await.unwrap().unwrap();
    assert_eq!(t.span_count, 40, "every span of every instance is kept");
    assert_eq!(b.info().await.unwrap().spans, 40);
    a.close().await.unwrap();
    b.close().await.unwrap();
}

/// A cluster of its own, stopped and removed when dropped.
struct OwnCluster(std::path::PathBuf);

impl OwnCluster {
    const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/pg-test-cluster");

    fn start(&self, port: Option<&str>) -> String {
        let mut cmd = std::process::Command::new(Self::SCRIPT);
        cmd.arg("start").arg(&self.0);
        cmd.args(port);
        let out = cmd.output().expect("cannot run scripts/pg-test-cluster");
        assert!(
            out.status.success(),
            "this test starts and stops a PostgreSQL cluster of its own and needs PostgreSQL \
             installed (apt-get install postgresql): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn stop(&self) {
        let ok = std::process::Command::new(Self::SCRIPT)
            .arg("stop")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot stop the test cluster");
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new(Self::SCRIPT).arg("stop").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_is_unavailable_then_resumes_with_nothing_lost() {
    let cluster = OwnCluster(std::env::temp_dir().join(format!(
        "tracellm-pg-outage-{}-{:x}",
        std::process::id(),
        rand::random::<u32>()
    )));
    let url = cluster.start(None);
    let port = url.rsplit_once(':').unwrap().1.split('/').next().unwrap().to_string();
    let a = PostgresStore::open(&url, pg::options()).await.unwrap();
    let b = PostgresStore::open(&url, pg::options()).await.unwrap();
    a.ingest(vec![trace("default", "before", 1, json!({}))]).await.unwrap();

    cluster.stop();
    let down = a.ingest(vec![trace("default", "during", 2, json!({}))]).await;
    assert!(matches!(down, Err(StoreError::Unavailable(_))), "{down:?}");
    assert!(matches!(a.get_trace("default", "before").await, Err(StoreError::Unavailable(_))));

    assert_eq!(cluster.start(Some(&port)), url);
    let mut on_b = b.subscribe();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        match a.ingest(vec![trace("default", "after", 3, json!({}))]).await {
            Ok(_) => break,
            Err(StoreError::Unavailable(e)) if std::time::Instant::now() < deadline => {
                eprintln!("still unavailable: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => panic!("ingest did not resume: {e}"),
        }
    }
    assert!(b.get_trace("default", "before").await.unwrap().is_some(), "acknowledged, kept");
    assert!(b.get_trace("default", "during").await.unwrap().is_none());
    assert!(b.get_trace("default", "after").await.unwrap().is_some());
    // The other instance's event connection comes back too: a later trace reaches it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut n = 0;
    'heard: loop {
        n += 1;
        a.ingest(vec![trace("default", &format!("later{n}"), 4, json!({}))]).await.unwrap();
        while let Ok(Ok(ev)) =
            tokio::time::timeout(std::time::Duration::from_millis(500), on_b.recv()).await
        {
            if ev.trace.id.starts_with("later") {
                break 'heard;
            }
        }
        assert!(std::time::Instant::now() < deadline, "events never reached the other instance");
    }
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_queue_memory_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    // a bound smaller than two traces
    let opts = SqliteOptions { queue_bytes: 4 * 1024, ..SqliteOptions::default() };
    let store = Arc::new(SqliteStore::open(&path, opts).await.unwrap());
    let big = |id: &str| {
        trace(
            "default",
            id,
            1,
            json!({"spans": [llm("a", 1, "gpt-4o", &"word ".repeat(800), "ok", None)]}),
        )
    };
    // another connection holds the write lock, so the first request waits in the queue
    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let s = Arc::clone(&store);
    let first_trace = big("first");
    let first = tokio::spawn(async move { s.ingest(vec![first_trace]).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    match store.ingest(vec![big("second")]).await {
        Err(StoreError::Unavailable(m)) => assert!(m.contains("memory bound"), "{m}"),
        other => panic!("a full queue must answer busy, got {other:?}"),
    }
    blocker.execute_batch("COMMIT").unwrap();
    first.await.unwrap().unwrap();
    // once the queue drains, ingest works again, and only acknowledged traces are stored
    store.ingest(vec![big("after")]).await.unwrap();
    assert_eq!(store.info().await.unwrap().traces, 2);
    assert!(store.get_trace("default", "second").await.unwrap().is_none());
    store.close().await.unwrap();
}

/// Full-text search lives in `traces.search.db`, indexed by a thread of its own from a queue in
/// the main database: a search right after ingest finds the trace, a lost or stale index file is
/// rebuilt from the stored traces, and texts queued but not yet indexed at a crash are indexed
/// on the next start (once each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_search_index_is_rebuilt_and_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traces.db");
    let search_db = dir.path().join("traces.search.db");
    let one = |id: &str, words: &str| {
        trace("default", id, 1, json!({"spans": [llm("a", 1, "gpt-4o", words, "ok", None)]}))
    };
    async fn found(s: &SqliteStore, words: &str) -> Vec<String> {
        let q = TraceQuery { q: Some(words.into()), ..query("default") };
        let mut ids: Vec<String> =
            s.list_traces(q).await.unwrap().traces.into_iter().map(|t| t.id).collect();
        ids.sort();
        ids
    }
    async fn eventually(s: &SqliteStore, words: &str, want: &[&str]) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let got = found(s, words).await;
            if got == want {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "search {words:?}: {got:?}, want {want:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    {
        let s = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
        for i in 0..50 {
            s.ingest(vec![one(&format!("t{i:02}"), &format!("alpha word{i}"))]).await.unwrap();
            // read-your-writes: found by the very next search
            assert_eq!(found(&s, &format!("word{i}")).await, [format!("t{i:02}")]);
        }
        s.ingest(vec![one("t00", "gamma")]).await.unwrap();
        assert_eq!(found(&s, "gamma").await, ["t00"]);
        assert!(!found(&s, "alpha").await.contains(&"t00".to_string()));
        s.close().await.unwrap();
    }
    assert!(search_db.exists());
    let alpha: Vec<String> = (1..50).map(|i| format!("t{i:02}")).collect();
    let alpha: Vec<&str> = alpha.iter().map(String::as_str).collect();

    // the index file is lost: rebuilt from the traces
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", search_db.display()));
    }
    {
        let s = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
        eventually(&s, "alpha", &alpha).await;
        eventually(&s, "gamma", &["t00"]).await;
        s.close().await.unwrap();
    }

    // a crash after commits the indexer had not indexed: its marks are behind the log
    {
        let c = rusqlite::Connection::open(&search_db).unwrap();
        c.execute("UPDATE indexed SET seq = 0, texts_seq = 0", []).unwrap();
    }
    {
        let s = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
        eventually(&s, "alpha", &alpha).await;
        eventually(&s, "gamma", &["t00"]).await;
        assert_eq!(found(&s, "word7").await, ["t07"]);
        s.ingest(vec![one("t07", "delta")]).await.unwrap();
        assert_eq!(found(&s, "delta").await, ["t07"]);
        assert!(
            found(&s, "word7").await.is_empty(),
            "an updated trace is found by its new text only"
        );
        s.close().await.unwrap();
    }
    let c = rusqlite::Connection::open(&search_db).unwrap();
    c.execute("INSERT INTO trace_fts (trace_fts) VALUES ('integrity-check')", []).unwrap();
    let rows: i64 = c.query_row("SELECT count(*) FROM trace_fts", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 50, "one index row per trace");
}

/// Sessions and users are indexed in the search database: a filter by them still finds every
/// trace committed before it (at once, after a re-ingest that moves a trace, while the index is
/// rebuilt, and after a crash left it behind), newest first, page after page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_session_and_user_filters_read_their_own_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traces.db");
    let search_db = dir.path().join("traces.search.db");
    let one = |id: &str, minute: u32, session: Option<&str>, user: Option<&str>| {
        trace(
            "default",
            id,
            minute,
            json!({"session_id": session, "user_id": user,
                "spans": [llm("a", minute, "gpt-4o", "hello", "ok", None)]}),
        )
    };
    // every page of a filter, in order
    async fn pages(s: &SqliteStore, session: Option<&str>, user: Option<&str>) -> Vec<String> {
        let mut q = TraceQuery {
            session_id: session.map(String::from),
            user_id: user.map(String::from),
            limit: 3,
            ..query("default")
        };
        let mut ids = Vec::new();
        loop {
            let page = s.list_traces(q.clone()).await.unwrap();
            ids.extend(page.traces.into_iter().map(|t| t.id));
            match page.next_cursor {
                Some(c) => q.cursor = Some(Cursor::decode(&c).unwrap()),
                None => return ids,
            }
        }
    }
    // s1: minutes 0, 2, 4, … (newest first: t18, t16, …); users u0/u1/u2 by i % 3; every
    // fifth trace has neither
    let s1: Vec<String> =
        (0..20).rev().filter(|i| i % 2 == 0 && i % 5 != 0).map(|i| format!("t{i:02}")).collect();
    let u1: Vec<String> =
        (0..20).rev().filter(|i| i % 3 == 1 && i % 5 != 0).map(|i| format!("t{i:02}")).collect();
    {
        let s = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
        for i in 0..20u32 {
            let (session, user) = if i % 5 == 0 {
                (None, None)
            } else {
                (Some(format!("s{}", i % 2)), Some(format!("u{}", i % 3)))
            };
            let id = format!("t{i:02}");
            s.ingest(vec![one(&id, i, session.as_deref(), user.as_deref())]).await.unwrap();
            // read-your-writes: listed by the very next query
            if let Some(session) = &session {
                assert_eq!(pages(&s, Some(session), None).await.first(), Some(&id));
            }
        }
        assert_eq!(pages(&s, Some("s1"), None).await.len(), 8);
        assert_eq!(pages(&s, Some("s0"), None).await, s1);
        assert_eq!(pages(&s, None, Some("u1")).await, u1);
        let both: Vec<String> = s1.iter().filter(|id| u1.contains(id)).cloned().collect();
        assert_eq!(pages(&s, Some("s0"), Some("u1")).await, both);
        // a trace moves to another session and an earlier minute
        s.ingest(vec![one("t18", 1, Some("s9"), None)]).await.unwrap();
        assert_eq!(pages(&s, Some("s9"), None).await, ["t18"]);
        assert_eq!(pages(&s, Some("s0"), None).await, s1[1..]);
        assert!(!pages(&s, None, Some("u0")).await.contains(&"t18".to_string()));
        s.ingest(vec![one("t18", 18, Some("s0"), Some("u0"))]).await.unwrap();
        assert_eq!(pages(&s, Some("s0"), None).await, s1);
        assert!(pages(&s, Some("s9"), None).await.is_empty());
        // filters stay within their project
        let q = TraceQuery { session_id: Some("s0".into()), ..query("other") };
        assert!(s.list_traces(q).await.unwrap().traces.is_empty());
        s.close().await.unwrap();
    }
    // an index file from before the session index, then a lost one: rebuilt, and the filters
    // answer completely meanwhile
    {
        let c = rusqlite::Connection::open(&search_db).unwrap();
        c.execute_batch("DROP TABLE trace_keys").unwrap();
    }
    for round in 0..2 {
        if round == 1 {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", search_db.display()));
            }
        }
        let s = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
        assert_eq!(pages(&s, Some("s0"), None).await, s1, "round {round}");
        assert_eq!(pages(&s, None, Some("u1")).await, u1, "round {round}");
        s.close().await.unwrap();
    }
    let c = rusqlite::Connection::open(&search_db).unwrap();
    let rows: i64 = c.query_row("SELECT count(*) FROM trace_keys", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 16, "a row per trace with a session or user, none for the others");
    // a crash left the index behind the log: its keys, then its texts and keys
    for texts_seq in ["texts_seq", "0"] {
        c.execute(&format!("UPDATE indexed SET seq = 0, texts_seq = {texts_seq}"), []).unwrap();
        c.execute("DELETE FROM trace_keys", []).unwrap();
        let s = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
        assert_eq!(pages(&s, Some("s0"), None).await, s1, "texts from {texts_seq}");
        assert_eq!(pages(&s, None, Some("u1")).await, u1, "texts from {texts_seq}");
        s.close().await.unwrap();
        let rows: i64 = c.query_row("SELECT count(*) FROM trace_keys", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 16, "texts from {texts_seq}");
    }
    // a file an earlier binary left behind the log: one number, for texts and keys alike
    c.execute_batch(
        "CREATE TABLE earlier AS SELECT id, main_id, seq FROM indexed;
         DROP TABLE indexed;
         ALTER TABLE earlier RENAME TO indexed;
         UPDATE indexed SET seq = 0;
         DELETE FROM trace_keys;",
    )
    .unwrap();
    let s = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
    assert_eq!(pages(&s, Some("s0"), None).await, s1);
    assert_eq!(pages(&s, None, Some("u1")).await, u1);
    s.close().await.unwrap();
    let (seq, texts_seq): (i64, i64) = c
        .query_row("SELECT seq, texts_seq FROM indexed", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert!(seq > 0 && texts_seq == seq, "{seq} {texts_seq}");
    let rows: i64 = c.query_row("SELECT count(*) FROM trace_keys", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 16);
}

/// Checkpoints run beside the writer, not inside its commits: the WAL is still copied into the
/// database and started again from its beginning, so it does not grow with what is written
/// (passes start at 4-16 MB; the bound leaves room for a machine too busy to run them at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_wal_stays_small_under_steady_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traces.db");
    let wal = dir.path().join("traces.db-wal");
    let s = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
    // text that does not compress: ~10 KB per trace
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut words = |n: usize| {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                format!("{x:x}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut largest_wal = 0;
    for r in 0..640 {
        let batch: Vec<Trace> = (0..10)
            .map(|i| {
                let text = words(600);
                trace(
                    "default",
                    &format!("w{r}-{i}"),
                    1,
                    json!({"spans": [llm("a", 1, "gpt-4o", &text, "ok", None)]}),
                )
            })
            .collect();
        s.ingest(batch).await.unwrap();
        largest_wal = largest_wal.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
    }
    let db = std::fs::metadata(&path).unwrap().len();
    assert!(db > 60 << 20, "the data reached the database file: {db} bytes");
    assert!(largest_wal < 32 << 20, "the WAL grew to {largest_wal} bytes");
    assert_eq!(s.info().await.unwrap().traces, 6400);
    s.close().await.unwrap();
}
