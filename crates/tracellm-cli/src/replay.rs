//! `tracellm replay ID`: a recorded run in the terminal, step by step, and its LLM calls run
//! again (`--rerun`) to see what a model or prompt change does.

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};

use chrono::{DateTime, Utc};
use clap::Args;
use serde_json::{Map, Value, json};
use tracellm_core::{Span, SpanKind, Trace};

use crate::common::{self, Globals, LocalArgs, Paint, Recorded, Reported};
use crate::provider::{ChatOutcome, Provider, ProviderArgs};
use crate::tree;

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Id of the trace (as printed by `tracellm trace`, or shown in the dashboard)
    pub id: String,

    /// Walk the run one span at a time, showing inputs and outputs (Enter for the next one)
    #[arg(long)]
    pub step: bool,

    /// Run the trace's LLM calls again from their captured inputs and store the result as a
    /// new trace linked to this one; --model picks another model
    #[arg(long)]
    pub rerun: bool,

    #[command(flatten)]
    pub provider: ProviderArgs,

    #[command(flatten)]
    pub local: LocalArgs,
}

pub fn run(args: ReplayArgs, g: Globals) -> anyhow::Result<()> {
    common::runtime()?.block_on(run_async(args, g))
}

async fn run_async(args: ReplayArgs, g: Globals) -> anyhow::Result<()> {
    let trace = common::fetch_trace(&g, &args.local, &args.id).await?;
    if args.rerun {
        return rerun(&args, &g, &trace).await;
    }
    let p = Paint::stdout();
    if g.json {
        println!("{}", serde_json::to_string_pretty(&trace)?);
        return Ok(());
    }
    write!(std::io::stdout(), "{}", tree::render(&trace, p))?;
    if args.step {
        walk(&trace, p)?;
    }
    Ok(())
}

/// `--step`: each span's inputs and outputs in tree order. Waits for Enter between spans when
/// stdin is a terminal (q quits); otherwise prints every step.
fn walk(t: &Trace, p: Paint) -> anyhow::Result<()> {
    let interactive = std::io::stdin().is_terminal();
    let rows = tree::rows(t);
    let n = rows.len();
    let mut stdin = std::io::stdin().lock();
    for (i, row) in rows.iter().enumerate() {
        let mut o = std::io::stdout();
        write!(o, "\n{}", step_text(row.span, i + 1, n, p))?;
        o.flush()?;
        if interactive && i + 1 < n {
            eprint!("{}", p.dim("── Enter: next step, q: quit "));
            let mut line = String::new();
            if stdin.read_line(&mut line)? == 0 || line.trim().eq_ignore_ascii_case("q") {
                break;
            }
        }
    }
    Ok(())
}

/// One step: the span's header, inputs, outputs, tool call, error and figures.
pub fn step_text(s: &Span, i: usize, n: usize, p: Paint) -> String {
    let mut out = String::new();
    let mut head = format!("[{i}/{n}] {} {}", s.kind.as_str(), s.name);
    let mut extra = Vec::new();
    if let Some(m) = &s.model {
        extra.push(m.clone());
    }
    if let Some(pr) = &s.provider {
        extra.push(pr.clone());
    }
    if !extra.is_empty() {
        head.push_str(&format!(" ({})", extra.join(", ")));
    }
    out.push_str(&format!(
        "{}  {}  {}\n",
        p.bold(&head),
        s.latency_ms.map(common::fmt_ms).unwrap_or_else(|| "-".into()),
        tree::status_paint(p, s.status, s.status.as_str())
    ));
    if let Some(tool) = &s.tool {
        out.push_str(&format!(
            "  {} {}({})\n",
            p.cyan("tool"),
            tool.name,
            compact(&tool.arguments)
        ));
        if !tool.result.is_null() {
            out.push_str(&format!(
                "  {} {}\n",
                p.cyan("result"),
                indent_block(&shown(&tool.result), 4).trim_start()
            ));
        }
    }
    if !s.input.is_null() && s.tool.as_ref().is_none_or(|t| t.arguments != s.input) {
        out.push_str(&format!("  {}\n{}", p.cyan("input"), indent_block(&shown(&s.input), 4)));
    }
    if !s.output.is_null() && s.tool.as_ref().is_none_or(|t| t.result != s.output) {
        out.push_str(&format!("  {}\n{}", p.cyan("output"), indent_block(&shown(&s.output), 4)));
    }
    if let Some(e) = &s.error {
        out.push_str(&format!("  {}\n", p.red(&format!("error {}", e.summary()))));
    }
    let mut figures = Vec::new();
    if let Some(t) = &s.tokens {
        figures.push(format!(
            "tokens {}{} → {} ({})",
            if t.estimated { "~" } else { "" },
            t.prompt,
            t.completion,
            t.total
        ));
    }
    if let Some(c) = s.cost_usd {
        figures.push(format!("cost {}", common::fmt_cost(Some(c))));
    }
    if let Some(ttft) = s.time_to_first_token_ms {
        figures.push(format!("ttft {}", common::fmt_ms(ttft)));
    }
    if !figures.is_empty() {
        out.push_str(&format!("  {}\n", p.dim(&figures.join("  "))));
    }
    out
}

fn compact(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => common::one_line(s, 120),
        other => common::one_line(&other.to_string(), 120),
    }
}

/// Messages as `role: text` lines; other values as pretty JSON; long texts cut.
fn shown(v: &Value) -> String {
    const MAX_LINES: usize = 30;
    let text = match v.get("messages").and_then(Value::as_array) {
        Some(msgs) => msgs
            .iter()
            .map(|m| {
                let role = m["role"].as_str().unwrap_or("message");
                let mut text = tracellm_core::text::message_text(m);
                if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
                    for c in calls {
                        text.push_str(&format!(
                            "{}→ {}({})",
                            if text.is_empty() { "" } else { " " },
                            c["function"]["name"].as_str().unwrap_or("tool"),
                            c["function"]["arguments"].as_str().unwrap_or("")
                        ));
                    }
                }
                format!("{role}: {text}")
            })
            .collect::<Vec<_>>()
            .join("\n"),
        None => match v {
            Value::String(s) => s.clone(),
            other => serde_json::to_string_pretty(other).unwrap_or_default(),
        },
    };
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() > MAX_LINES {
        format!("{}\n… {} more lines", lines[..MAX_LINES].join("\n"), lines.len() - MAX_LINES)
    } else {
        text
    }
}

fn indent_block(s: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    s.lines().map(|l| format!("{pad}{l}\n")).collect()
}

/// The messages an LLM span was called with, if they were captured.
fn captured_messages(s: &Span) -> Option<Vec<Value>> {
    match &s.input {
        Value::Object(o) => match o.get("messages") {
            Some(Value::Array(m)) if !m.is_empty() => Some(m.clone()),
            _ => o
                .get("prompt")
                .and_then(Value::as_str)
                .map(|p| vec![json!({"role": "user", "content": p})]),
        },
        Value::Array(m) if m.iter().all(|x| x.get("role").is_some()) && !m.is_empty() => {
            Some(m.clone())
        }
        Value::String(p) => Some(vec![json!({"role": "user", "content": p})]),
        _ => None,
    }
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// One re-executed call and what it replaced.
struct Redo {
    old: usize,
    new_id: String,
    out: ChatOutcome,
}

async fn rerun(args: &ReplayArgs, g: &Globals, orig: &Trace) -> anyhow::Result<()> {
    let provider = Provider::resolve(&args.provider, &g.file)?;
    let model_override = args.provider.model.clone().or_else(|| g.file.model.clone());
    let llm: Vec<usize> = orig
        .spans
        .iter()
        .enumerate()
        .filter(|(_, s)| s.kind == SpanKind::Llm && captured_messages(s).is_some())
        .map(|(i, _)| i)
        .collect();
    if llm.is_empty() {
        anyhow::bail!(
            "trace {} has no LLM call with captured input messages to run again",
            orig.id
        );
    }
    let t0 = orig.spans.iter().map(|s| s.start_time).min().unwrap_or(orig.timestamp);
    let now = Utc::now();
    let shift = now - t0;
    let mut new_ids: HashMap<&str, String> = HashMap::new();
    for s in &orig.spans {
        new_ids.insert(s.id.as_str(), tracellm_core::ids::new_span_id());
    }

    let quiet = g.json;
    let pe = Paint::stderr();
    let mut redos = Vec::new();
    for &i in &llm {
        let s = &orig.spans[i];
        let msgs = captured_messages(s).unwrap_or_default();
        let model =
            model_override.clone().or_else(|| s.model.clone()).unwrap_or(provider.model.clone());
        if !quiet {
            eprintln!("{}", pe.dim(&format!("running {} again with {model}…", s.name)));
        }
        let out = provider.chat(&model, &msgs, |_| {}).await;
        redos.push(Redo { old: i, new_id: new_ids[s.id.as_str()].clone(), out });
    }

    // The new trace: the original spans moved to now, the re-run calls replaced. Time after a
    // re-run call moves by how much longer or shorter it took, so parents and the run's
    // latency reflect the new calls.
    let changes: Vec<(DateTime<Utc>, chrono::Duration)> = redos
        .iter()
        .map(|r| {
            let old = &orig.spans[r.old];
            let old_end = old.end_time.unwrap_or(old.start_time);
            let new_len = chrono::Duration::microseconds((r.out.latency_ms * 1000.0) as i64);
            (old_end, new_len - (old_end - old.start_time))
        })
        .collect();
    let warp = |t: DateTime<Utc>| {
        changes.iter().filter(|(end, _)| *end <= t).fold(t + shift, |acc, (_, d)| acc + *d)
    };
    let mut spans = Vec::with_capacity(orig.spans.len());
    for (i, s) in orig.spans.iter().enumerate() {
        let parent = s.parent_id.as_deref().and_then(|p| new_ids.get(p)).cloned();
        if let Some(r) = redos.iter().find(|r| r.old == i) {
            let msgs = captured_messages(s).unwrap_or_default();
            let mut timed = r.out.clone();
            timed.started_at = warp(s.start_time);
            timed.ended_at = timed.started_at
                + chrono::Duration::microseconds((r.out.latency_ms * 1000.0) as i64);
            let mut v = timed.span(&provider, &r.new_id, parent.as_deref(), &s.name, &msgs);
            v["attributes"]["replay_of_span"] = json!(s.id);
            v["attributes"]["replayed_at"] = json!(ts(r.out.started_at));
            spans.push(v);
            continue;
        }
        let mut v = serde_json::to_value(s)?;
        v["id"] = json!(new_ids[s.id.as_str()]);
        v["parent_id"] = json!(parent);
        v["start_time"] = json!(ts(warp(s.start_time)));
        v["latency_ms"] = Value::Null;
        if let Some(e) = s.end_time {
            v["end_time"] = json!(ts(warp(e).max(warp(s.start_time))));
        }
        if let Some(evs) = v.get_mut("events").and_then(Value::as_array_mut) {
            for (e, orig_e) in evs.iter_mut().zip(&s.events) {
                e["time"] = json!(ts(warp(orig_e.time)));
            }
        }
        spans.push(v);
    }
    let mut tags = orig.tags.clone();
    if !tags.iter().any(|t| t == "replay") {
        tags.push("replay".into());
    }
    let mut metadata: Map<String, Value> = orig.metadata.clone();
    metadata.insert("replay_of".into(), json!(orig.id));
    if let Some(m) = &model_override {
        metadata.insert("replay_model".into(), json!(m));
    }
    let response = redos.last().map(|r| r.out.text.clone()).filter(|t| !t.is_empty());
    let doc = json!({
        "id": tracellm_core::ids::new_trace_id(),
        "name": orig.name,
        "timestamp": ts(now),
        "prompt": orig.prompt,
        "response": response.or_else(|| orig.response.clone()),
        "session_id": orig.session_id,
        "user_id": orig.user_id,
        "tags": tags,
        "metadata": metadata,
        "spans": spans,
    });
    let (new, recorded) = common::record(g, &args.local, doc).await?;
    if g.json {
        println!("{}", serde_json::to_string_pretty(&diff_json(orig, &new, &redos))?);
    } else {
        write!(std::io::stdout(), "{}", diff_text(orig, &new, &redos, Paint::stdout()))?;
    }
    if let Recorded::Local(url) = &recorded {
        eprintln!(
            "{}",
            pe.dim(&format!("no TraceLLM server at {}: recorded in {url}", g.endpoint))
        );
    }
    let failed: Vec<_> = redos.iter().filter_map(|r| r.out.error.as_ref()).collect();
    if let Some(e) = failed.first() {
        eprintln!("error: {}", e.explain(&provider));
        return Err(Reported(1).into());
    }
    Ok(())
}

fn span_text(s: &Span) -> String {
    let mut t = tracellm_core::text::response_text(&s.output).unwrap_or_default();
    if t.is_empty()
        && let Some(calls) = s.output["messages"][0]["tool_calls"].as_array()
    {
        t = calls
            .iter()
            .map(|c| {
                format!(
                    "→ {}({})",
                    c["function"]["name"].as_str().unwrap_or("tool"),
                    c["function"]["arguments"].as_str().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join(" ");
    }
    t
}

fn signed_ms(d: f64) -> String {
    let sign = if d >= 0.0 { "+" } else { "-" };
    format!("{sign}{}", common::fmt_ms(d.abs()))
}

fn signed(d: i64) -> String {
    if d >= 0 { format!("+{d}") } else { d.to_string() }
}

fn cost_change(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(x), Some(y)) => {
            let d = y - x;
            let sign = if d >= 0.0 { "+" } else { "-" };
            format!(
                "{} → {} ({sign}{})",
                common::fmt_cost(a),
                common::fmt_cost(b),
                common::fmt_cost(Some(d.abs()))
            )
        }
        _ => format!("{} → {}", common::fmt_cost(a), common::fmt_cost(b)),
    }
}

/// What changed, call by call and for the whole run.
fn diff_text(orig: &Trace, new: &Trace, redos: &[Redo], p: Paint) -> String {
    let mut out = String::new();
    out.push_str(&format!("{} {} → {}\n", p.bold("Replay of"), orig.id, p.bold(&new.id)));
    out.push_str(&p.dim("stored with metadata replay_of and tag replay\n"));
    for r in redos {
        let old = &orig.spans[r.old];
        let Some(now) = new.spans.iter().find(|s| s.id == r.new_id) else { continue };
        out.push('\n');
        out.push_str(&format!("{} {}\n", p.magenta("llm"), p.bold(&old.name)));
        let (om, nm) = (old.model.as_deref().unwrap_or("-"), now.model.as_deref().unwrap_or("-"));
        if om == nm {
            out.push_str(&format!("  model    {om}\n"));
        } else {
            out.push_str(&format!("  model    {om} → {nm}  {}\n", p.yellow("changed")));
        }
        let (ot, nt) = (span_text(old), span_text(now));
        if ot == nt {
            out.push_str(&format!("  output   unchanged: {}\n", common::one_line(&nt, 100)));
        } else {
            out.push_str(&format!("  output   {}\n", p.yellow("changed")));
            out.push_str(&format!("    {} {}\n", p.red("-"), p.red(&common::one_line(&ot, 200))));
            out.push_str(&format!(
                "    {} {}\n",
                p.green("+"),
                p.green(&common::one_line(&nt, 200))
            ));
        }
        let (otk, ntk) = (old.tokens.unwrap_or_default(), now.tokens.unwrap_or_default());
        out.push_str(&format!(
            "  tokens   {}→{} → {}→{} ({})\n",
            otk.prompt,
            otk.completion,
            ntk.prompt,
            ntk.completion,
            signed(ntk.total as i64 - otk.total as i64)
        ));
        let (ol, nl) = (old.latency_ms.unwrap_or(0.0), now.latency_ms.unwrap_or(0.0));
        out.push_str(&format!(
            "  latency  {} → {} ({})\n",
            common::fmt_ms(ol),
            common::fmt_ms(nl),
            signed_ms(nl - ol)
        ));
        out.push_str(&format!("  cost     {}\n", cost_change(old.cost_usd, now.cost_usd)));
        if old.status != now.status {
            out.push_str(&format!(
                "  status   {} → {}\n",
                tree::status_paint(p, old.status, old.status.as_str()),
                tree::status_paint(p, now.status, now.status.as_str())
            ));
        }
        if let Some(e) = &now.error {
            out.push_str(&format!("  {}\n", p.red(&format!("error {}", e.summary()))));
        }
    }
    out.push('\n');
    out.push_str(&format!("{}\n", p.bold("Run")));
    out.push_str(&format!(
        "  status   {} → {}\n",
        tree::status_paint(p, orig.status, orig.status.as_str()),
        tree::status_paint(p, new.status, new.status.as_str())
    ));
    out.push_str(&format!(
        "  tokens   {} → {} ({})\n",
        orig.tokens.total,
        new.tokens.total,
        signed(new.tokens.total as i64 - orig.tokens.total as i64)
    ));
    let (ol, nl) = (orig.latency_ms.unwrap_or(0.0), new.latency_ms.unwrap_or(0.0));
    out.push_str(&format!(
        "  latency  {} → {} ({})\n",
        common::fmt_ms(ol),
        common::fmt_ms(nl),
        signed_ms(nl - ol)
    ));
    out.push_str(&format!("  cost     {}\n", cost_change(orig.cost_usd, new.cost_usd)));
    out
}

fn diff_json(orig: &Trace, new: &Trace, redos: &[Redo]) -> Value {
    let calls: Vec<Value> = redos
        .iter()
        .filter_map(|r| {
            let old = &orig.spans[r.old];
            let now = new.spans.iter().find(|s| s.id == r.new_id)?;
            Some(json!({
                "name": old.name,
                "span_id": {"original": old.id, "replay": now.id},
                "model": {"original": old.model, "replay": now.model},
                "output": {"original": span_text(old), "replay": span_text(now), "changed": span_text(old) != span_text(now)},
                "tokens": {"original": old.tokens, "replay": now.tokens},
                "latency_ms": {"original": old.latency_ms, "replay": now.latency_ms},
                "cost_usd": {"original": old.cost_usd, "replay": now.cost_usd},
                "status": {"original": old.status, "replay": now.status},
                "error": now.error,
            }))
        })
        .collect();
    json!({
        "original": orig.id,
        "replay": new.id,
        "calls": calls,
        "trace": {
            "status": {"original": orig.status, "replay": new.status},
            "tokens": {"original": orig.tokens, "replay": new.tokens},
            "latency_ms": {"original": orig.latency_ms, "replay": new.latency_ms},
            "cost_usd": {"original": orig.cost_usd, "replay": new.cost_usd},
        },
    })
}
