//! `tracellm trace PROMPT`: one traced call to the configured LLM provider.

use std::io::{IsTerminal, Write};

use clap::Args;
use serde_json::{Value, json};
use tracellm_core::Trace;

use crate::common::{self, Globals, LocalArgs, Recorded, Reported};
use crate::provider::{ChatOutcome, Provider, ProviderArgs};

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// The prompt to send
    pub prompt: String,

    /// A system message sent before the prompt
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,

    /// Name of the recorded trace
    #[arg(long, default_value = "tracellm trace")]
    pub name: String,

    /// Tag of the recorded trace (repeatable)
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,

    /// Session the trace belongs to
    #[arg(long, value_name = "ID")]
    pub session: Option<String>,

    /// User the trace belongs to
    #[arg(long, value_name = "ID")]
    pub user: Option<String>,

    #[command(flatten)]
    pub provider: ProviderArgs,

    #[command(flatten)]
    pub local: LocalArgs,
}

pub fn run(args: TraceArgs, g: Globals) -> anyhow::Result<()> {
    common::runtime()?.block_on(run_async(args, g))
}

fn messages(args: &TraceArgs) -> Vec<Value> {
    let mut m = Vec::new();
    if let Some(s) = &args.system {
        m.push(json!({"role": "system", "content": s}));
    }
    m.push(json!({"role": "user", "content": args.prompt}));
    m
}

fn document(args: &TraceArgs, spans: Vec<Value>, started: &str, ended: &str) -> Value {
    let mut tags = vec!["cli".to_string()];
    tags.extend(args.tags.iter().cloned());
    json!({
        "id": tracellm_core::ids::new_trace_id(),
        "name": args.name,
        "timestamp": started,
        "end_time": ended,
        "prompt": args.prompt,
        "session_id": args.session,
        "user_id": args.user,
        "tags": tags,
        "metadata": {"source": "tracellm trace"},
        "spans": spans,
    })
}

async fn run_async(args: TraceArgs, g: Globals) -> anyhow::Result<()> {
    let msgs = messages(&args);
    let provider = match Provider::resolve(&args.provider, &g.file) {
        Ok(p) => p,
        Err(e) => {
            // Record the attempt as well: a failed run is still a run worth seeing.
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            let span = json!({
                "id": tracellm_core::ids::new_span_id(),
                "name": "chat",
                "kind": "llm",
                "start_time": now,
                "end_time": now,
                "model": args.provider.model.clone().or_else(|| g.file.model.clone()),
                "input": {"messages": msgs},
                "error": {"type": "ConfigurationError", "message": e.to_string().lines().next().unwrap_or_default()},
            });
            let doc = document(&args, vec![span], &now, &now);
            let recorded = common::record(&g, &args.local, doc).await;
            eprintln!("error: {e}");
            if let Ok((t, _)) = recorded {
                eprintln!("recorded the failed attempt as {}", t.id);
            }
            return Err(Reported(2).into());
        }
    };

    let live = !g.json && std::io::stdout().is_terminal();
    let mut screen = LiveText::default();
    let out = provider
        .chat(&provider.model, &msgs, |piece| {
            if live {
                screen.push(piece);
            }
        })
        .await;
    if live {
        screen.erase();
    }

    let span_name = format!("{}.chat", provider.name);
    let span = out.span(&provider, &tracellm_core::ids::new_span_id(), None, &span_name, &msgs);
    let ts =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let doc = document(&args, vec![span], &ts(out.started_at), &ts(out.ended_at));
    let (trace, recorded) = common::record(&g, &args.local, doc).await?;

    if g.json {
        println!("{}", serde_json::to_string_pretty(&json_report(&trace, &out, &recorded))?);
    } else {
        print!("{}", block(&trace, &out));
        std::io::stdout().flush()?;
    }
    if let Recorded::Local(url) = &recorded {
        eprintln!(
            "{}",
            Paint::stderr()
                .dim(&format!("no TraceLLM server at {}: recorded in {url}", g.endpoint))
        );
    }
    if let Some(err) = &out.error {
        eprintln!("error: {}", err.explain(&provider));
        return Err(Reported(1).into());
    }
    Ok(())
}

use crate::common::Paint;

/// The block users know from the README: header lines, a blank line, the response.
pub fn block(t: &Trace, out: &ChatOutcome) -> String {
    let latency = t.latency_ms.unwrap_or(out.latency_ms);
    let mut s = String::new();
    s.push_str(&format!("Trace ID:     {}\n", t.id));
    s.push_str(&format!("Model:        {}\n", t.model.as_deref().unwrap_or(&out.model)));
    s.push_str(&format!("Latency:      {}\n", common::fmt_secs(latency)));
    s.push_str(&format!("Prompt Tokens:  {}\n", t.tokens.prompt));
    s.push_str(&format!("Completion Tokens: {}\n", t.tokens.completion));
    s.push_str(&format!("Status:       {}\n", t.status.as_str()));
    if !out.text.is_empty() {
        s.push('\n');
        s.push_str(&out.text);
        s.push('\n');
    }
    s
}

fn json_report(t: &Trace, out: &ChatOutcome, recorded: &Recorded) -> Value {
    json!({
        "trace_id": t.id,
        "model": t.model,
        "provider": t.provider,
        "status": t.status,
        "latency_ms": t.latency_ms,
        "time_to_first_token_ms": out.ttft_ms,
        "tokens": t.tokens,
        "cost_usd": t.cost_usd,
        "response": out.text,
        "error": out.error.as_ref().map(|e| json!({"type": e.kind, "status": e.status, "message": e.message})),
        "recorded": match recorded {
            Recorded::Server(u) => json!({"server": u}),
            Recorded::Local(u) => json!({"store": u}),
        },
    })
}

/// The response as it streams in, shown on the terminal and wiped before the final block (when
/// it still fits on the screen; otherwise it stays and the block follows it).
#[derive(Default)]
struct LiveText {
    text: String,
}

impl LiveText {
    fn push(&mut self, piece: &str) {
        self.text.push_str(piece);
        let mut o = std::io::stdout();
        let _ = o.write_all(piece.as_bytes());
        let _ = o.flush();
    }

    fn erase(&mut self) {
        use ratatui::crossterm::{cursor, execute, terminal};
        if self.text.is_empty() {
            return;
        }
        let (cols, rows) = terminal::size().unwrap_or((80, 24));
        let cols = usize::from(cols.max(1));
        let used: usize =
            self.text.split('\n').map(|l| common::width(l).div_ceil(cols).max(1)).sum();
        let mut o = std::io::stdout();
        if used < usize::from(rows) {
            let up = u16::try_from(used - 1).unwrap_or(0);
            let _ = write!(o, "\r");
            if up > 0 {
                let _ = execute!(o, cursor::MoveUp(up));
            }
            let _ = execute!(o, terminal::Clear(terminal::ClearType::FromCursorDown));
        } else {
            let _ = writeln!(o, "\n");
        }
        let _ = o.flush();
    }
}
