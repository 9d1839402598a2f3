//! `tracellm monitor`: htop for AI. A full-screen live view fed by the server's WebSocket: the
//! trace list, throughput and error sparklines, latency percentiles, tokens and cost, a per-model
//! table, and any trace's tree on Enter. Reconnects by itself when the server restarts.
//!
//! `state` holds the data, `view` draws it, `term` owns the terminal; this file wires the
//! connection, the keyboard and the redraws together.

pub mod state;
pub mod term;
pub mod view;

use std::io::IsTerminal;
use std::time::Duration;

use clap::Args;
use ratatui::Terminal;
use ratatui::backend::Backend;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use serde_json::Value;
use tokio::sync::mpsc;
use tracellm_client::Client;
use tracellm_core::{Trace, TraceSummary};

use crate::common::{self, Globals};
use state::{Connection, Detail, State};

#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// Recent traces loaded on (re)connect, up to 500
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u16).range(1..=500))]
    pub history: u16,

    /// Only show traces whose id, name, model, status, user, session, tag or prompt contains TEXT
    #[arg(long, value_name = "TEXT")]
    pub filter: Option<String>,
}

/// Everything the UI loop reacts to.
#[derive(Debug)]
pub enum Msg {
    Connected { version: String },
    Snapshot(Vec<TraceSummary>),
    Event { created: bool, trace: Box<TraceSummary> },
    Lagged(u64),
    Disconnected { reason: String, retry_in_ms: u64 },
    Detail { id: String, result: Result<Box<Trace>, String> },
    Key(KeyEvent),
    Redraw,
}

pub fn run(args: MonitorArgs, g: Globals) -> anyhow::Result<()> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "tracellm monitor needs a terminal; for scripts, read the live stream at {}/ws or use tracellm export",
            g.endpoint
        );
    }
    common::runtime()?.block_on(async move {
        let client = g.client();
        let (tx, mut rx) = mpsc::channel(4096);
        let conn = spawn_connection(client.clone(), usize::from(args.history), tx.clone());
        spawn_input(tx.clone());
        let mut app = App::new(client, tx);
        if let Some(f) = args.filter {
            app.st.filter = f;
        }
        let mut guard = term::TerminalGuard::new()?;
        let result = app.run(&mut guard.terminal, &mut rx).await;
        drop(guard);
        conn.abort();
        result
    })
}

/// Reads keys on a thread of its own (crossterm's reads block) until the UI is gone.
fn spawn_input(tx: mpsc::Sender<Msg>) {
    std::thread::spawn(move || {
        loop {
            if tx.is_closed() {
                return;
            }
            match event::poll(Duration::from_millis(200)) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(_) => return,
            }
            let msg = match event::read() {
                Ok(Event::Key(k)) if k.kind != KeyEventKind::Release => Msg::Key(k),
                Ok(Event::Resize(..)) => Msg::Redraw,
                Ok(_) => continue,
                Err(_) => return,
            };
            if tx.blocking_send(msg).is_err() {
                return;
            }
        }
    });
}

/// Keeps a WebSocket subscription open, reconnecting with backoff, and feeds the UI: a snapshot
/// of recent traces on every (re)connect, then each event.
pub fn spawn_connection(
    client: Client,
    history: usize,
    tx: mpsc::Sender<Msg>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff_ms = 250u64;
        loop {
            let reason = match client.subscribe().await {
                Ok(mut sub) => {
                    backoff_ms = 250;
                    let mut version = String::new();
                    let mut pending = None;
                    match sub.next().await {
                        Some(Ok(v)) if v["type"] == "system.connected" => {
                            version = v["version"].as_str().unwrap_or_default().to_string();
                        }
                        Some(Ok(v)) => pending = Some(v),
                        _ => {}
                    }
                    if tx.send(Msg::Connected { version }).await.is_err() {
                        return;
                    }
                    let limit = history.clamp(1, 500).to_string();
                    if let Ok(page) = client.list_traces(&[("limit", limit.as_str())]).await
                        && tx.send(Msg::Snapshot(page.traces)).await.is_err()
                    {
                        return;
                    }
                    if let Some(v) = pending
                        && let Some(m) = event_msg(v)
                        && tx.send(m).await.is_err()
                    {
                        return;
                    }
                    loop {
                        match sub.next().await {
                            Some(Ok(v)) => {
                                if let Some(m) = event_msg(v)
                                    && tx.send(m).await.is_err()
                                {
                                    return;
                                }
                            }
                            Some(Err(e)) => break e.to_string(),
                            None => break "the server closed the connection".to_string(),
                        }
                    }
                }
                Err(e) => match e {
                    tracellm_client::ClientError::WebSocket(m) if m.contains("refused") => {
                        "connection refused".to_string()
                    }
                    other => common::one_line(&other.to_string(), 80),
                },
            };
            if tx.send(Msg::Disconnected { reason, retry_in_ms: backoff_ms }).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
            backoff_ms = (backoff_ms * 2).min(5_000);
        }
    })
}

fn event_msg(v: Value) -> Option<Msg> {
    match v["type"].as_str()? {
        kind @ ("trace.created" | "trace.updated") => {
            let trace: TraceSummary = serde_json::from_value(v["trace"].clone()).ok()?;
            Some(Msg::Event { created: kind == "trace.created", trace: Box::new(trace) })
        }
        "system.lagged" => Some(Msg::Lagged(v["missed"].as_u64().unwrap_or(0))),
        _ => None,
    }
}

pub struct App {
    pub st: State,
    client: Client,
    tx: mpsc::Sender<Msg>,
}

impl App {
    pub fn new(client: Client, tx: mpsc::Sender<Msg>) -> App {
        App { st: State::new(client.base_url()), client, tx }
    }

    /// Draws, waits for something to happen, repeats; a tick keeps the sparklines moving.
    pub async fn run<B: Backend>(
        &mut self,
        terminal: &mut Terminal<B>,
        rx: &mut mpsc::Receiver<Msg>,
    ) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(Duration::from_millis(1000));
        loop {
            terminal
                .draw(|f| view::draw(f, &self.st))
                .map_err(|e| anyhow::anyhow!("cannot draw: {e}"))?;
            tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => if !self.handle(m) { return Ok(()) },
                    None => return Ok(()),
                },
                _ = tick.tick() => {}
            }
            // Take whatever else is queued before drawing again.
            while let Ok(m) = rx.try_recv() {
                if !self.handle(m) {
                    return Ok(());
                }
            }
        }
    }

    /// Applies one message; false means quit.
    pub fn handle(&mut self, m: Msg) -> bool {
        let st = &mut self.st;
        match m {
            Msg::Connected { version } => st.connection = Connection::Live { version },
            Msg::Snapshot(traces) => st.load(traces),
            Msg::Event { created, trace } => st.event(created, *trace),
            Msg::Lagged(n) => st.lagged += n,
            Msg::Disconnected { reason, retry_in_ms } => {
                st.connection = Connection::Down { reason, retry_in_ms }
            }
            Msg::Detail { id, result } => {
                if matches!(&st.detail, Some(Detail::Loading(l)) if *l == id) {
                    st.detail = Some(match result {
                        Ok(trace) => Detail::Open { trace, selected: 0 },
                        Err(e) => Detail::Failed(e),
                    });
                }
            }
            Msg::Key(k) => return self.key(k),
            Msg::Redraw => {}
        }
        true
    }

    fn key(&mut self, k: KeyEvent) -> bool {
        let st = &mut self.st;
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            return false;
        }
        if let Some(text) = &mut st.editing {
            match k.code {
                KeyCode::Enter => {
                    st.filter = std::mem::take(text);
                    st.editing = None;
                    st.selected = 0;
                }
                KeyCode::Esc => st.editing = None,
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Char(c) => text.push(c),
                _ => {}
            }
            return true;
        }
        if let Some(d) = &mut st.detail {
            match k.code {
                KeyCode::Char('q') => return false,
                KeyCode::Esc | KeyCode::Backspace | KeyCode::Left | KeyCode::Char('h') => {
                    st.detail = None
                }
                KeyCode::Down | KeyCode::Char('j') => {
                    if let Detail::Open { trace, selected } = d {
                        *selected = (*selected + 1).min(trace.spans.len().saturating_sub(1));
                    }
                }
                KeyCode::Up | KeyCode::Char('k') => {
                    if let Detail::Open { selected, .. } = d {
                        *selected = selected.saturating_sub(1);
                    }
                }
                _ => {}
            }
            return true;
        }
        match k.code {
            KeyCode::Char('q') => return false,
            KeyCode::Esc => {
                st.filter.clear();
                st.errors_only = false;
            }
            KeyCode::Char('p') | KeyCode::Char(' ') => st.toggle_pause(),
            KeyCode::Char('/') => st.editing = Some(st.filter.clone()),
            KeyCode::Char('e') => {
                st.errors_only = !st.errors_only;
                st.clamp_selection();
            }
            KeyCode::Char('c') => {
                st.filter.clear();
                st.errors_only = false;
            }
            KeyCode::Down | KeyCode::Char('j') => st.move_selection(1),
            KeyCode::Up | KeyCode::Char('k') => st.move_selection(-1),
            KeyCode::PageDown => st.move_selection(10),
            KeyCode::PageUp => st.move_selection(-10),
            KeyCode::Home | KeyCode::Char('g') => st.selected = 0,
            KeyCode::End | KeyCode::Char('G') => st.move_selection(isize::MAX / 2),
            KeyCode::Enter | KeyCode::Right | KeyCode::Char('l') => {
                if let Some(id) = st.selected_id() {
                    st.detail = Some(Detail::Loading(id.clone()));
                    let client = self.client.clone();
                    let tx = self.tx.clone();
                    tokio::spawn(async move {
                        let result =
                            client.get_trace(&id).await.map(Box::new).map_err(|e| e.to_string());
                        let _ = tx.send(Msg::Detail { id, result }).await;
                    });
                }
            }
            _ => {}
        }
        true
    }
}

#[cfg(test)]
mod tests {
    //! The monitor against a real server (in this process) drawn on ratatui's test backend.

    use std::net::SocketAddr;
    use std::path::Path;

    use ratatui::backend::TestBackend;
    use serde_json::json;
    use tokio::sync::oneshot;

    use super::*;

    async fn serve(
        dir: &Path,
        port: u16,
    ) -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        let store = tracellm_store::open(
            &format!("sqlite://{}", dir.join("traces.db").display()),
            tracellm_store::SqliteOptions::default(),
        )
        .await
        .unwrap();
        let cfg = tracellm_server::ServerConfig {
            host: "127.0.0.1".into(),
            port,
            dashboard_port: None,
            otlp_grpc_port: None,
            otlp_grpc_optional: true,
            ..Default::default()
        };
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            let on_ready = move |b: tracellm_server::Bound, _admin_token: Option<String>| {
                let _ = ready_tx.send(b.api);
            };
            let _ = tracellm_server::serve(
                cfg,
                store,
                tracellm_core::PriceTable::builtin(),
                on_ready,
                async {
                    let _ = stop_rx.await;
                },
            )
            .await;
        });
        (ready_rx.await.unwrap(), stop_tx, task)
    }

    fn screen(t: &Terminal<TestBackend>) -> String {
        let buf = t.backend().buffer();
        let mut s = String::new();
        for y in 0..buf.area.height {
            for x in 0..buf.area.width {
                s.push_str(buf[(x, y)].symbol());
            }
            s.push('\n');
        }
        s
    }

    /// Applies messages until `done` holds for the state (or fails after a generous deadline).
    async fn until(
        app: &mut App,
        rx: &mut mpsc::Receiver<Msg>,
        what: &str,
        done: impl Fn(&State) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !done(&app.st) {
            let m = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
                .expect("channel open");
            app.handle(m);
        }
    }

    fn key(c: KeyCode) -> Msg {
        Msg::Key(KeyEvent::new(c, KeyModifiers::NONE))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_posted_trace_appears_and_the_monitor_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, stop, task) = serve(dir.path(), 0).await;
        let client = Client::new(format!("http://{addr}"));
        let (tx, mut rx) = mpsc::channel(1024);
        let conn = spawn_connection(client.clone(), 100, tx.clone());
        let mut app = App::new(client.clone(), tx);
        let mut term = Terminal::new(TestBackend::new(150, 40)).unwrap();

        until(&mut app, &mut rx, "connected", |s| matches!(s.connection, Connection::Live { .. }))
            .await;
        client
            .ingest(&json!({
                "id": "tr_monitor_1", "name": "checkout-agent", "model": "gpt-4o",
                "spans": [
                    {"id": "root", "name": "checkout-agent", "kind": "agent", "start_time": "2026-01-01T00:00:00Z", "end_time": "2026-01-01T00:00:02Z"},
                    {"id": "call", "parent_id": "root", "name": "openai.chat", "kind": "llm", "model": "gpt-4o",
                     "start_time": "2026-01-01T00:00:00.5Z", "end_time": "2026-01-01T00:00:01.5Z",
                     "input": {"messages": [{"role": "user", "content": "pay my cart"}]},
                     "tokens": {"prompt": 10, "completion": 20}},
                    {"id": "pay", "parent_id": "root", "name": "charge_card", "kind": "tool", "start_time": "2026-01-01T00:00:01.6Z",
                     "end_time": "2026-01-01T00:00:01.9Z", "error": {"type": "CardDeclined", "message": "insufficient funds"}}
                ]
            }))
            .await
            .unwrap();
        until(&mut app, &mut rx, "the trace", |s| s.traces.iter().any(|t| t.id == "tr_monitor_1"))
            .await;
        term.draw(|f| view::draw(f, &app.st)).unwrap();
        let s = screen(&term);
        assert!(s.contains("checkout-agent"), "{s}");
        assert!(s.contains("tr_monitor_1"), "{s}");
        assert!(s.contains("● live"), "{s}");
        assert!(s.contains("gpt-4o"), "the per-model table: {s}");

        // Enter opens the tree of the selected trace.
        app.handle(key(KeyCode::Enter));
        until(&mut app, &mut rx, "the tree", |s| matches!(s.detail, Some(Detail::Open { .. })))
            .await;
        app.handle(key(KeyCode::Down));
        term.draw(|f| view::draw(f, &app.st)).unwrap();
        let s = screen(&term);
        assert!(s.contains("openai.chat"), "{s}");
        assert!(s.contains("charge_card"), "{s}");
        assert!(s.contains("pay my cart"), "the step pane shows the selected span's input: {s}");
        app.handle(key(KeyCode::Esc));

        // Filter and pause.
        app.handle(key(KeyCode::Char('/')));
        for c in "nomatch".chars() {
            app.handle(key(KeyCode::Char(c)));
        }
        app.handle(key(KeyCode::Enter));
        assert!(app.st.visible().is_empty());
        app.handle(key(KeyCode::Char('c')));
        assert_eq!(app.st.visible().len(), 1);

        // The server stops: the monitor says so, then reconnects when it is back.
        stop.send(()).unwrap();
        task.await.unwrap();
        until(&mut app, &mut rx, "the disconnect", |s| {
            matches!(s.connection, Connection::Down { .. })
        })
        .await;
        term.draw(|f| view::draw(f, &app.st)).unwrap();
        assert!(screen(&term).contains("disconnected"));
        let (addr2, stop2, task2) = serve(dir.path(), addr.port()).await;
        assert_eq!(addr2, addr);
        until(&mut app, &mut rx, "the reconnect", |s| {
            matches!(s.connection, Connection::Live { .. })
        })
        .await;
        client.ingest(&json!({"id": "tr_monitor_2", "name": "after-restart", "prompt": "p", "response": "r"})).await.unwrap();
        until(&mut app, &mut rx, "a trace after the restart", |s| {
            s.traces.iter().any(|t| t.id == "tr_monitor_2")
        })
        .await;
        assert!(app.st.traces.iter().any(|t| t.id == "tr_monitor_1"), "the snapshot reloaded");
        assert!(!app.handle(key(KeyCode::Char('q'))), "q quits");
        conn.abort();
        stop2.send(()).unwrap();
        task2.await.unwrap();
    }
}
