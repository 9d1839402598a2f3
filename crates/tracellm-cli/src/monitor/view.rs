//! Drawing the monitor: header, sparklines and counters, the live trace list, the per-model table,
//! and the tree of an opened trace.

use chrono::Utc;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Borders, Cell, Clear, Paragraph, Row, Sparkline, Table, TableState, Wrap,
};
use tracellm_core::Status;

use super::state::{BUCKET_SECS, BUCKETS, Connection, Detail, State};
use crate::common::{Paint, fmt_cost, fmt_ms};
use crate::tree;

fn status_color(s: Status) -> Color {
    match s {
        Status::Success => Color::Green,
        Status::Error => Color::Red,
        Status::Retried => Color::Yellow,
        Status::Running => Color::Cyan,
    }
}

fn opt_ms(v: Option<f64>) -> String {
    v.map(fmt_ms).unwrap_or_else(|| "-".into())
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn draw(f: &mut Frame, st: &State) {
    let [header, stats, body, models, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(5),
        Constraint::Min(6),
        Constraint::Length((st.models().len().min(6) + 3) as u16),
        Constraint::Length(1),
    ])
    .areas(f.area());
    draw_header(f, header, st);
    draw_stats(f, stats, st);
    draw_list(f, body, st);
    draw_models(f, models, st);
    draw_footer(f, footer, st);
    if let Some(d) = &st.detail {
        let area = inset(f.area(), 2, 1);
        f.render_widget(Clear, area);
        draw_detail(f, area, d);
    }
}

fn inset(r: Rect, dx: u16, dy: u16) -> Rect {
    Rect {
        x: r.x + dx.min(r.width / 4),
        y: r.y + dy.min(r.height / 4),
        width: r.width.saturating_sub(2 * dx.min(r.width / 4)),
        height: r.height.saturating_sub(2 * dy.min(r.height / 4)),
    }
}

fn draw_header(f: &mut Frame, area: Rect, st: &State) {
    let (conn, color) = match &st.connection {
        Connection::Connecting => ("○ connecting".to_string(), Color::Yellow),
        Connection::Live { .. } => ("● live".to_string(), Color::Green),
        Connection::Down { reason, retry_in_ms } => (
            format!("✗ disconnected ({reason}); retrying in {}", fmt_ms(*retry_in_ms as f64)),
            Color::Red,
        ),
    };
    let mut spans = vec![
        Span::styled(
            " TraceLLM monitor ",
            Style::default().add_modifier(Modifier::BOLD).fg(Color::Black).bg(Color::Cyan),
        ),
        Span::raw(format!(" {} ", st.endpoint)),
        Span::styled(conn, Style::default().fg(color)),
    ];
    if let Connection::Live { version } = &st.connection {
        spans.push(Span::styled(format!(" v{version}"), Style::default().fg(Color::DarkGray)));
    }
    if st.paused {
        spans.push(Span::styled(
            format!("  ⏸ PAUSED ({} held)", st.held.len()),
            Style::default().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        ));
    }
    if st.lagged > 0 {
        spans.push(Span::styled(
            format!("  {} events missed", st.lagged),
            Style::default().fg(Color::Yellow),
        ));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_stats(f: &mut Frame, area: Rect, st: &State) {
    let [thr, err, lat, tok] = Layout::horizontal([
        Constraint::Percentage(30),
        Constraint::Percentage(25),
        Constraint::Percentage(22),
        Constraint::Percentage(23),
    ])
    .areas(area);
    let (traces, errors) = st.series(Utc::now());
    let window = format!("{}m", BUCKETS as i64 * BUCKET_SECS / 60);
    let per_min: u64 = traces.iter().rev().take((60 / BUCKET_SECS) as usize).sum();
    let keep = |v: Vec<u64>, w: u16| -> Vec<u64> {
        let w = usize::from(w.saturating_sub(2));
        v[v.len().saturating_sub(w)..].to_vec()
    };
    f.render_widget(
        Sparkline::default()
            .block(Block::bordered().title(format!(" throughput {per_min}/min · {window} ")))
            .style(Style::default().fg(Color::Cyan))
            .data(keep(traces, thr.width)),
        thr,
    );
    let err_min: u64 = errors.iter().rev().take((60 / BUCKET_SECS) as usize).sum();
    f.render_widget(
        Sparkline::default()
            .block(Block::bordered().title(format!(" errors {err_min}/min ")))
            .style(Style::default().fg(Color::Red))
            .data(keep(errors, err.width)),
        err,
    );
    let l = st.latency();
    let lat_text = vec![
        Line::from(format!("p50 {:>8}  avg {:>8}", opt_ms(l.p50), opt_ms(l.avg))),
        Line::from(format!("p95 {:>8}", opt_ms(l.p95))),
        Line::from(format!("p99 {:>8}", opt_ms(l.p99))),
    ];
    f.render_widget(Paragraph::new(lat_text).block(Block::bordered().title(" latency ")), lat);
    let (n, tokens, cost, errs) = st.totals();
    let rate = if n == 0 { 0.0 } else { errs as f64 * 100.0 / n as f64 };
    let tok_text = vec![
        Line::from(format!("traces {:>7}  errors {rate:.1}%", thousands(n))),
        Line::from(format!("tokens {:>7}  cost {}", thousands(tokens), fmt_cost(cost))),
        Line::from(Span::styled(
            format!("live   {:>7}  {} tok", thousands(st.live_traces), thousands(st.live_tokens)),
            Style::default().fg(Color::DarkGray),
        )),
    ];
    f.render_widget(Paragraph::new(tok_text).block(Block::bordered().title(" totals ")), tok);
}

fn draw_list(f: &mut Frame, area: Rect, st: &State) {
    let vis = st.visible();
    let title = if st.filter.is_empty() && !st.errors_only {
        format!(" traces ({}) ", vis.len())
    } else {
        let mut what = Vec::new();
        if !st.filter.is_empty() {
            what.push(format!("/{}", st.filter));
        }
        if st.errors_only {
            what.push("errors only".into());
        }
        format!(" traces ({} of {}) · {} ", vis.len(), st.traces.len(), what.join(" · "))
    };
    let rows = vis.iter().map(|t| {
        let tokens = if t.tokens.total > 0 { thousands(t.tokens.total) } else { "-".into() };
        Row::new(vec![
            Cell::from(t.timestamp.with_timezone(&chrono::Local).format("%H:%M:%S").to_string()),
            Cell::from(Span::styled(
                t.status.as_str(),
                Style::default().fg(status_color(t.status)),
            )),
            Cell::from(t.name.clone()),
            Cell::from(t.model.clone().unwrap_or_else(|| "-".into())),
            Cell::from(opt_ms(t.latency_ms)),
            Cell::from(tokens),
            Cell::from(fmt_cost(t.cost_usd)),
            Cell::from(format!("{}", t.span_count)),
            Cell::from(Span::styled(t.id.clone(), Style::default().fg(Color::DarkGray))),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(8),
            Constraint::Length(7),
            Constraint::Min(16),
            Constraint::Length(24),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(10),
            Constraint::Length(5),
            Constraint::Length(16),
        ],
    )
    .header(
        Row::new(["time", "status", "name", "model", "latency", "tokens", "cost", "spans", "id"])
            .style(Style::default().add_modifier(Modifier::BOLD)),
    )
    .block(Block::bordered().title(title))
    .row_highlight_style(Style::default().bg(Color::DarkGray).add_modifier(Modifier::BOLD))
    .highlight_symbol("▶ ");
    let mut ts =
        TableState::default().with_selected(if vis.is_empty() { None } else { Some(st.selected) });
    f.render_stateful_widget(table, area, &mut ts);
}

fn draw_models(f: &mut Frame, area: Rect, st: &State) {
    let rows = st.models().into_iter().take(6).map(|m| {
        let err = if m.traces == 0 { 0.0 } else { m.errors as f64 * 100.0 / m.traces as f64 };
        Row::new(vec![
            Cell::from(m.model),
            Cell::from(thousands(m.traces)),
            Cell::from(Span::styled(
                format!("{err:.1}%"),
                Style::default().fg(if m.errors > 0 { Color::Red } else { Color::Reset }),
            )),
            Cell::from(opt_ms(m.latency.p50)),
            Cell::from(opt_ms(m.latency.p95)),
            Cell::from(thousands(m.tokens)),
            Cell::from(fmt_cost(m.cost)),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Min(20),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(10),
            Constraint::Length(10),
        ],
    )
    .header(
        Row::new(["model", "traces", "errors", "p50", "p95", "tokens", "cost"])
            .style(Style::default().add_modifier(Modifier::BOLD)),
    )
    .block(Block::bordered().title(" models "));
    f.render_widget(table, area);
}

fn draw_footer(f: &mut Frame, area: Rect, st: &State) {
    let line = match &st.editing {
        Some(text) => Line::from(vec![
            Span::styled(" filter: ", Style::default().fg(Color::Cyan)),
            Span::raw(text.clone()),
            Span::styled("▏", Style::default().fg(Color::Cyan)),
            Span::styled("   Enter: apply  Esc: cancel", Style::default().fg(Color::DarkGray)),
        ]),
        None => {
            let keys: &[(&str, &str)] = if st.detail.is_some() {
                &[("↑↓", "span"), ("Esc", "back"), ("q", "quit")]
            } else {
                &[
                    ("↑↓", "select"),
                    ("Enter", "open"),
                    ("p", if st.paused { "resume" } else { "pause" }),
                    ("/", "filter"),
                    ("e", "errors only"),
                    ("c", "clear"),
                    ("q", "quit"),
                ]
            };
            let mut spans = vec![Span::raw(" ")];
            for (k, what) in keys {
                spans.push(Span::styled(*k, Style::default().fg(Color::Black).bg(Color::Gray)));
                spans.push(Span::raw(format!(" {what}  ")));
            }
            Line::from(spans)
        }
    };
    f.render_widget(Paragraph::new(line), area);
}

fn draw_detail(f: &mut Frame, area: Rect, d: &Detail) {
    let block = Block::default().borders(Borders::ALL).style(Style::default());
    match d {
        Detail::Loading(id) => f.render_widget(
            Paragraph::new(format!("loading {id}…")).block(block.title(" trace ")),
            area,
        ),
        Detail::Failed(msg) => f.render_widget(
            Paragraph::new(Span::styled(msg.clone(), Style::default().fg(Color::Red)))
                .block(block.title(" trace ")),
            area,
        ),
        Detail::Open { trace, selected } => {
            let t = trace.as_ref();
            let title = format!(
                " {} · {} · {} · {} · {} tok · {} ",
                t.id,
                t.name,
                t.status.as_str(),
                opt_ms(t.latency_ms),
                t.tokens.total,
                fmt_cost(t.cost_usd)
            );
            let rows = tree::rows(t);
            let inner_h = area.height.saturating_sub(2);
            let tree_h = (rows.len() as u16 + 1).min(inner_h / 2).max(3.min(inner_h));
            let [tree_area, step_area] =
                Layout::vertical([Constraint::Length(tree_h + 2), Constraint::Min(0)]).areas(area);
            let bar_w = 20usize;
            // Name, bar, duration, tokens, status: the name takes what the others leave.
            let name_w = usize::from(tree_area.width.saturating_sub(2))
                .saturating_sub(bar_w + 2 + 8 + 14 + 8)
                .max(20);
            let lines: Vec<Line> = rows
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let s = r.span;
                    let (kind, name) = tree::label(s, crate::common::width(&r.prefix), name_w);
                    let left = format!("{}{kind} {name}", r.prefix);
                    let pad = name_w.saturating_sub(crate::common::width(&left));
                    let mut style = Style::default();
                    if i == *selected {
                        style = style.bg(Color::DarkGray).add_modifier(Modifier::BOLD);
                    }
                    let name_style =
                        if s.status == Status::Error { style.fg(Color::Red) } else { style };
                    Line::from(vec![
                        Span::styled(format!("{left}{}", " ".repeat(pad)), name_style),
                        Span::styled(
                            format!(" {} ", tree::bar(r.offset, r.length, bar_w)),
                            style.fg(status_color(s.status)),
                        ),
                        Span::styled(format!("{:>7} ", opt_ms(s.latency_ms)), style),
                        Span::styled(format!("{:<14}", tree::tokens(s)), style),
                        Span::styled(s.status.as_str(), style.fg(status_color(s.status))),
                    ])
                })
                .collect();
            let scroll = (*selected as u16).saturating_sub(tree_h.saturating_sub(1));
            f.render_widget(
                Paragraph::new(lines).scroll((scroll, 0)).block(block.title(title)),
                tree_area,
            );
            if let Some(r) = rows.get(*selected) {
                let text =
                    crate::replay::step_text(r.span, selected + 1, rows.len(), Paint { on: false });
                f.render_widget(
                    Paragraph::new(text)
                        .wrap(Wrap { trim: false })
                        .block(Block::bordered().title(" step ")),
                    step_area,
                );
            }
        }
    }
}
