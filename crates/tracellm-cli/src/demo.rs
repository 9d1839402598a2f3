//! `tracellm demo`: realistic sample runs — agents with tools and retrieval, failures and
//! retries, several models, sessions and users — spread over the last day, so that every page
//! of the dashboard has something to show.

use chrono::{DateTime, Duration, Utc};
use clap::Args;
use serde_json::{Value, json};

use crate::common::{self, Globals};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How many traces to load
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub count: u32,

    /// Seed of the sample generator: the same seed gives the same runs (ids and times aside)
    #[arg(long)]
    pub seed: Option<u64>,

    /// Spread the traces over this many hours before now
    #[arg(long, default_value_t = 24)]
    pub hours: u32,
}

pub fn run(args: DemoArgs, g: Globals) -> anyhow::Result<()> {
    common::runtime()?.block_on(async move {
        let client = g.client();
        client.health().await.map_err(|e| {
            anyhow::anyhow!("{e}\nstart the server first: tracellm start (or pass --endpoint)")
        })?;
        let seed = args.seed.unwrap_or_else(|| Utc::now().timestamp_micros() as u64);
        let traces = generate(args.count as usize, seed, Utc::now(), args.hours.max(1));
        let mut failed = 0;
        let mut retried = 0;
        for t in &traces {
            match t["_outcome"].as_str() {
                Some("error") => failed += 1,
                Some("retried") => retried += 1,
                _ => {}
            }
        }
        let docs: Vec<Value> = traces
            .into_iter()
            .map(|mut t| {
                t.as_object_mut().map(|o| o.remove("_outcome"));
                t
            })
            .collect();
        let mut ids = Vec::with_capacity(docs.len());
        for chunk in docs.chunks(50) {
            let acc = client.ingest(&json!({"traces": chunk})).await?;
            ids.extend(acc.ids);
        }
        if g.json {
            println!("{}", json!({"loaded": ids.len(), "failed": failed, "retried": retried, "ids": ids}));
        } else {
            println!(
                "Loaded {} demo traces into {} ({failed} failed, {retried} recovered after retries)",
                ids.len(),
                client.base_url()
            );
            println!("Try: tracellm monitor · tracellm replay {} · the dashboard", ids[0]);
        }
        Ok(())
    })
}

/// A small deterministic generator (xorshift64*), enough for sample data.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() % 10_000) as f64 / 10_000.0 < p
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Builds the spans of one run along a clock.
struct Run {
    spans: Vec<Value>,
    clock: DateTime<Utc>,
    next_id: u32,
    trace: String,
}

impl Run {
    fn id(&mut self) -> String {
        self.next_id += 1;
        format!("{}_s{}", self.trace, self.next_id)
    }

    fn advance(&mut self, ms: u64) {
        self.clock += Duration::milliseconds(ms as i64);
    }

    /// A span starting now and lasting `ms`; the clock moves to its end.
    fn leaf(&mut self, parent: &str, fields: Value, ms: u64) -> String {
        let id = self.id();
        let start = self.clock;
        self.advance(ms);
        let mut s = json!({"id": id, "parent_id": parent, "start_time": ts(start), "end_time": ts(self.clock)});
        if let (Some(o), Value::Object(f)) = (s.as_object_mut(), fields) {
            o.extend(f);
        }
        self.spans.push(s);
        self.advance(5);
        id
    }

    /// Opens a span whose end is set by `close`.
    fn open(&mut self, parent: Option<&str>, fields: Value) -> (String, usize) {
        let id = self.id();
        let mut s = json!({"id": id, "parent_id": parent, "start_time": ts(self.clock)});
        if let (Some(o), Value::Object(f)) = (s.as_object_mut(), fields) {
            o.extend(f);
        }
        self.spans.push(s);
        self.advance(3);
        (id, self.spans.len() - 1)
    }

    fn close(&mut self, at: usize, extra: Value) {
        self.advance(4);
        let s = &mut self.spans[at];
        s["end_time"] = json!(ts(self.clock));
        if let (Some(o), Value::Object(f)) = (s.as_object_mut(), extra) {
            o.extend(f);
        }
    }
}

fn words(n: u64) -> u64 {
    n
}

#[allow(clippy::too_many_arguments)]
fn llm(
    r: &mut Run,
    rng: &mut Rng,
    parent: &str,
    model: &str,
    provider: &str,
    messages: Value,
    answer: &str,
    error: Option<(&str, &str)>,
) -> String {
    let prompt_tokens = rng.range(120, 1800);
    let completion_tokens = if error.is_some() { 0 } else { words(rng.range(40, 420)) };
    let ms = if error.is_some() { rng.range(150, 900) } else { rng.range(450, 3200) };
    let mut fields = json!({
        "name": format!("{provider}.chat"),
        "kind": "llm",
        "model": model,
        "provider": provider,
        "input": {"messages": messages},
        "tokens": {"prompt": prompt_tokens, "completion": completion_tokens},
        "time_to_first_token_ms": (ms as f64 * 0.25).round(),
        "attributes": {"temperature": 0.2},
    });
    match error {
        Some((kind, message)) => {
            fields["error"] = json!({"type": kind, "message": message});
        }
        None => {
            fields["output"] = json!({"messages": [{"role": "assistant", "content": answer}]});
        }
    }
    r.leaf(parent, fields, ms)
}

const USERS: &[&str] = &["user_alice", "user_bob", "user_chen", "user_dara", "user_emeka"];
const QUESTIONS: &[(&str, &str, &str)] = &[
    (
        "Where is my order #4821?",
        "lookup_order",
        "Order #4821 shipped yesterday and arrives Thursday.",
    ),
    (
        "Can I change my delivery address?",
        "update_address",
        "Yes: I updated the delivery address on your order.",
    ),
    (
        "How do I reset my password?",
        "send_reset_link",
        "I sent a password reset link to your email.",
    ),
    ("Do you ship to Canada?", "shipping_rules", "We ship to Canada in 5-7 business days."),
    (
        "I was charged twice for one order",
        "lookup_payment",
        "I see two charges; the duplicate is refunded within 3 days.",
    ),
];
const TOPICS: &[&str] = &[
    "vector databases for RAG",
    "speculative decoding",
    "LLM evaluation methods",
    "mixture of experts models",
    "prompt caching",
];
const SQL_ASKS: &[(&str, &str)] = &[
    (
        "Top 5 customers by revenue last month",
        "SELECT customer_id, SUM(total) AS revenue FROM orders WHERE created_at >= date('now','-1 month') GROUP BY 1 ORDER BY 2 DESC LIMIT 5",
    ),
    (
        "How many signups per day this week?",
        "SELECT date(created_at) AS day, COUNT(*) FROM users WHERE created_at >= date('now','-7 day') GROUP BY 1",
    ),
    (
        "Average order value by country",
        "SELECT country, AVG(total) FROM orders JOIN customers USING (customer_id) GROUP BY 1",
    ),
];

/// `count` sample traces ending before `now`.
pub fn generate(count: usize, seed: u64, now: DateTime<Utc>, hours: u32) -> Vec<Value> {
    let mut rng = Rng::new(seed);
    let span_secs = u64::from(hours) * 3600;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let back = rng.range(60, span_secs);
        let start = now - Duration::seconds(back as i64);
        let id = tracellm_core::ids::new_trace_id();
        let mut r = Run { spans: Vec::new(), clock: start, next_id: 0, trace: id.clone() };
        let user = *rng.pick(USERS);
        let session = format!("sess_{}_{}", &user[5..], rng.range(1, 4));
        let kind = match i % 10 {
            0..=3 => 0,
            4 | 5 => 1,
            6 | 7 => 2,
            8 => 3,
            _ => 4,
        };
        let (name, tags, outcome) = match kind {
            0 => support_agent(&mut r, &mut rng),
            1 => research_agent(&mut r, &mut rng),
            2 => sql_agent(&mut r, &mut rng),
            3 => rag_chain(&mut r, &mut rng),
            _ => summarizer(&mut r, &mut rng),
        };
        let env = if rng.chance(0.8) { "production" } else { "staging" };
        out.push(json!({
            "id": id,
            "name": name,
            "timestamp": ts(start),
            "session_id": session,
            "user_id": user,
            "tags": tags.iter().map(|t| t.to_string()).chain(["demo".to_string(), env.to_string()]).collect::<Vec<_>>(),
            "metadata": {"environment": env, "app_version": format!("1.{}.{}", rng.range(3, 5), rng.range(0, 9))},
            "spans": r.spans,
            "_outcome": outcome,
        }));
    }
    out
}

type Shape = (&'static str, Vec<&'static str>, &'static str);

fn support_agent(r: &mut Run, rng: &mut Rng) -> Shape {
    let (question, tool, answer) = *rng.pick(QUESTIONS);
    let (root, at) = r.open(
        None,
        json!({"name": "support-agent", "kind": "agent", "input": {"question": question}}),
    );
    let docs = json!([
        {"id": "kb-112", "score": 0.83, "text": "Orders ship within 24 hours on business days."},
        {"id": "kb-087", "score": 0.77, "text": "Addresses can be changed until the parcel leaves the warehouse."},
    ]);
    let ms = rng.range(60, 260);
    r.leaf(&root, json!({"name": "kb.search", "kind": "retriever", "input": {"query": question}, "output": {"documents": docs}}), ms);
    let model = *rng.pick(&["gpt-4o", "gpt-4o-mini", "gpt-4o-mini"]);
    let system = json!({"role": "system", "content": "You are a helpful support agent for an online shop. Use the tools."});
    let user = json!({"role": "user", "content": question});
    // The first call sometimes hits the provider's rate limit and is retried.
    let mut outcome = "success";
    if rng.chance(0.15) {
        llm(
            r,
            rng,
            &root,
            model,
            "openai",
            json!([system, user]),
            "",
            Some(("RateLimitError", "Rate limit reached for requests per min (RPM): limit 500")),
        );
        r.advance(rng.range(500, 1500));
        outcome = "retried";
    }
    let plan = format!("call {tool}");
    llm(r, rng, &root, model, "openai", json!([system, user]), &plan, None);
    let ms = rng.range(40, 700);
    let tool_failed = outcome == "success" && rng.chance(0.1);
    if tool_failed {
        r.leaf(&root, json!({"name": tool, "kind": "tool", "tool": {"name": tool, "arguments": {"query": question}}, "error": {"type": "TimeoutError", "message": format!("{tool} did not answer within 5s")}}), 5000);
        r.close(at, json!({"error": {"type": "ToolError", "message": format!("{tool} failed")}}));
        return ("support-agent", vec!["support"], "error");
    }
    r.leaf(&root, json!({"name": tool, "kind": "tool", "tool": {"name": tool, "arguments": {"query": question}, "result": {"ok": true, "detail": answer}}}), ms);
    let tool_msg = json!({"role": "tool", "content": answer});
    llm(r, rng, &root, model, "openai", json!([system, user, tool_msg]), answer, None);
    r.close(at, json!({"output": {"answer": answer}}));
    ("support-agent", vec!["support"], outcome)
}

fn research_agent(r: &mut Run, rng: &mut Rng) -> Shape {
    let topic = *rng.pick(TOPICS);
    let (root, at) =
        r.open(None, json!({"name": "research-agent", "kind": "agent", "input": {"topic": topic}}));
    let model = *rng.pick(&["claude-3-5-sonnet", "claude-sonnet-4", "gpt-4.1"]);
    let provider = if model.starts_with("claude") { "anthropic" } else { "openai" };
    let (plan_span, plan_at) = r.open(Some(&root), json!({"name": "plan", "kind": "chain"}));
    llm(
        r,
        rng,
        &plan_span,
        model,
        provider,
        json!([{"role": "user", "content": format!("Plan a short report on {topic}")}]),
        "1. search 2. read 3. write",
        None,
    );
    r.close(plan_at, json!({}));
    let searches = rng.range(1, 3);
    for n in 0..searches {
        let q = format!("{topic} {}", ["overview", "benchmarks", "2025 papers"][n as usize % 3]);
        let ms = rng.range(200, 1200);
        r.leaf(&root, json!({"name": "web_search", "kind": "tool", "tool": {"name": "web_search", "arguments": {"q": q}, "result": [{"title": format!("A survey of {topic}"), "url": "https://example.org/survey"}]}}), ms);
        let ms = rng.range(100, 900);
        r.leaf(&root, json!({"name": "fetch_page", "kind": "tool", "tool": {"name": "fetch_page", "arguments": {"url": "https://example.org/survey"}, "result": {"status": 200, "chars": rng.range(2000, 40000)}}}), ms);
    }
    let failed = rng.chance(0.12);
    if failed {
        llm(
            r,
            rng,
            &root,
            model,
            provider,
            json!([{"role": "user", "content": format!("Write the report on {topic}")}]),
            "",
            Some(("APIStatusError", "overloaded_error: the model is overloaded, try again later")),
        );
        r.close(at, json!({}));
        return ("research-agent", vec!["research"], "error");
    }
    let report = format!("Report: {topic} — three findings, with sources.");
    llm(
        r,
        rng,
        &root,
        model,
        provider,
        json!([{"role": "user", "content": format!("Write the report on {topic}")}]),
        &report,
        None,
    );
    r.leaf(&root, json!({"name": "faithfulness", "kind": "evaluator", "input": {"report": report}, "output": {"score": (rng.range(70, 99) as f64) / 100.0}}), rng.range(20, 80));
    r.close(at, json!({"output": {"report": report}}));
    ("research-agent", vec!["research"], "success")
}

fn sql_agent(r: &mut Run, rng: &mut Rng) -> Shape {
    let (ask, sql) = *rng.pick(SQL_ASKS);
    let (root, at) =
        r.open(None, json!({"name": "sql-agent", "kind": "agent", "input": {"question": ask}}));
    let model = *rng.pick(&["gpt-4o-mini", "gpt-4.1-mini"]);
    let user = json!({"role": "user", "content": ask});
    let mut outcome = "success";
    if rng.chance(0.35) {
        // A first query with a typo fails; the model fixes it and the tool is called again.
        let bad = sql.replacen("GROUP BY", "GRUOP BY", 1);
        llm(r, rng, &root, model, "openai", json!([user]), &bad, None);
        let ms = rng.range(5, 40);
        r.leaf(&root, json!({"name": "run_sql", "kind": "tool", "tool": {"name": "run_sql", "arguments": {"sql": bad}}, "error": {"type": "OperationalError", "message": "near \"GRUOP\": syntax error"}}), ms);
        llm(
            r,
            rng,
            &root,
            model,
            "openai",
            json!([user, {"role": "tool", "content": "near \"GRUOP\": syntax error"}]),
            sql,
            None,
        );
        outcome = "retried";
    } else {
        llm(r, rng, &root, model, "openai", json!([user]), sql, None);
    }
    let ms = rng.range(10, 400);
    r.leaf(&root, json!({"name": "run_sql", "kind": "tool", "tool": {"name": "run_sql", "arguments": {"sql": sql}, "result": {"rows": rng.range(3, 7), "columns": 2}}}), ms);
    let answer = format!("Here is the answer to \"{ask}\" as a table.");
    llm(
        r,
        rng,
        &root,
        model,
        "openai",
        json!([user, {"role": "tool", "content": "5 rows"}]),
        &answer,
        None,
    );
    r.close(at, json!({"output": {"answer": answer}}));
    ("sql-agent", vec!["analytics", "sql"], outcome)
}

fn rag_chain(r: &mut Run, rng: &mut Rng) -> Shape {
    let topic = *rng.pick(TOPICS);
    let question = format!("What should I know about {topic}?");
    let (root, at) =
        r.open(None, json!({"name": "rag-qa", "kind": "chain", "input": {"question": question}}));
    let ms = rng.range(30, 120);
    r.leaf(&root, json!({"name": "embed.query", "kind": "embedding", "model": "text-embedding-3-small", "provider": "openai", "input": question, "tokens": {"prompt": rng.range(8, 20), "completion": 0}}), ms);
    let ms = rng.range(20, 150);
    r.leaf(&root, json!({"name": "vector_search", "kind": "retriever", "input": {"top_k": 8}, "output": {"documents": [{"id": "doc-3", "score": 0.91}, {"id": "doc-9", "score": 0.88}]}}), ms);
    let ms = rng.range(40, 200);
    r.leaf(&root, json!({"name": "rerank", "kind": "reranker", "input": {"documents": 8}, "output": {"kept": 3}}), ms);
    let model = *rng.pick(&["llama-3.3-70b-versatile", "llama-3.1-8b-instant"]);
    let answer = format!("{topic}: the key points, grounded in 3 documents.");
    llm(
        r,
        rng,
        &root,
        model,
        "groq",
        json!([{"role": "system", "content": "Answer from the context only."}, {"role": "user", "content": question}]),
        &answer,
        None,
    );
    r.close(at, json!({"output": {"answer": answer}}));
    ("rag-qa", vec!["rag"], "success")
}

fn summarizer(r: &mut Run, rng: &mut Rng) -> Shape {
    let (root, at) = r.open(None, json!({"name": "summarize-ticket", "kind": "chain", "input": {"ticket": format!("T-{}", rng.range(1000, 9999))}}));
    let blocked = rng.chance(0.3);
    let ms = rng.range(5, 30);
    if blocked {
        r.leaf(&root, json!({"name": "pii-filter", "kind": "guardrail", "input": {"text": "[redacted]"}, "error": {"type": "GuardrailViolation", "message": "ticket contains a credit card number"}}), ms);
        r.close(at, json!({}));
        return ("summarize-ticket", vec!["support", "guardrail"], "error");
    }
    r.leaf(&root, json!({"name": "pii-filter", "kind": "guardrail", "input": {"text": "[redacted]"}, "output": {"passed": true}}), ms);
    let model = *rng.pick(&["gemini-2.5-flash", "gpt-4o-mini"]);
    let provider = if model.starts_with("gemini") { "google" } else { "openai" };
    if rng.chance(0.25) {
        llm(
            r,
            rng,
            &root,
            model,
            provider,
            json!([{"role": "user", "content": "Summarize the ticket"}]),
            "",
            Some(("TimeoutError", "request timed out after 30s")),
        );
        r.close(at, json!({}));
        return ("summarize-ticket", vec!["support"], "error");
    }
    llm(
        r,
        rng,
        &root,
        model,
        provider,
        json!([{"role": "user", "content": "Summarize the ticket"}]),
        "Customer asks for a refund; order arrived damaged.",
        None,
    );
    r.close(at, json!({}));
    ("summarize-ticket", vec!["support"], "success")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracellm_core::{NormalizeOptions, PriceTable, Status};

    #[test]
    fn samples_normalize_and_cover_every_outcome() {
        let now = Utc::now();
        let docs = generate(200, 7, now, 24);
        let mut statuses = std::collections::HashSet::new();
        let mut models = std::collections::HashSet::new();
        for mut d in docs {
            let expected = d["_outcome"].as_str().unwrap().to_string();
            d.as_object_mut().unwrap().remove("_outcome");
            let t = tracellm_core::normalize_trace(
                d,
                "default",
                &PriceTable::builtin(),
                &NormalizeOptions::default(),
            )
            .unwrap();
            assert_eq!(t.status.as_str(), expected, "{}: {:?}", t.name, t.failure_reason);
            assert!(t.timestamp <= now && t.timestamp > now - Duration::hours(25));
            statuses.insert(t.status);
            models.insert(t.model.clone());
        }
        assert!(statuses.contains(&Status::Error) && statuses.contains(&Status::Retried));
        assert!(models.len() >= 5, "{models:?}");
    }
}
