//! A trace's spans as an indented tree with a waterfall bar per span: the layout of `replay` and
//! of the monitor's trace view.

use std::collections::HashMap;

use tracellm_core::{Span, Status, Trace};

use crate::common::{self, Paint};

/// One row of the tree: a span, the drawing before its name, and where its bar goes.
#[derive(Debug, Clone)]
pub struct Row<'a> {
    pub span: &'a Span,
    /// `├─ `, `│  └─ `…
    pub prefix: String,
    /// What continues the prefix under this row (for lines that belong to the span).
    pub under: String,
    /// Bar start and length as fractions of the trace's duration.
    pub offset: f64,
    pub length: f64,
}

/// The spans of `t` in depth-first order, children by start time. Spans whose parent is missing
/// are shown as roots.
pub fn rows(t: &Trace) -> Vec<Row<'_>> {
    let ids: HashMap<&str, usize> =
        t.spans.iter().enumerate().map(|(i, s)| (s.id.as_str(), i)).collect();
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (i, s) in t.spans.iter().enumerate() {
        match s.parent_id.as_deref().and_then(|p| ids.get(p)) {
            Some(&p) if p != i => children.entry(p).or_default().push(i),
            _ => roots.push(i),
        }
    }
    let by_start = |v: &mut Vec<usize>| v.sort_by_key(|&i| (t.spans[i].start_time, i));
    by_start(&mut roots);
    for v in children.values_mut() {
        by_start(v);
    }
    let t0 = t.spans.iter().map(|s| s.start_time).min().unwrap_or(t.timestamp);
    let t1 =
        t.spans.iter().filter_map(|s| s.end_time).max().unwrap_or(t0).max(t.end_time.unwrap_or(t0));
    let total = tracellm_core::time::millis_between(t0, t1).max(1e-3);

    // Iterative depth-first walk: (span, its indentation, is it the last of its siblings, depth)
    let mut out = Vec::with_capacity(t.spans.len());
    let mut seen = vec![false; t.spans.len()];
    let mut stack: Vec<(usize, String, bool, bool)> = Vec::new();
    for (n, &r) in roots.iter().enumerate().rev() {
        stack.push((r, String::new(), n + 1 == roots.len(), true));
    }
    while let Some((i, indent, last, root)) = stack.pop() {
        if std::mem::replace(&mut seen[i], true) {
            continue;
        }
        let s = &t.spans[i];
        let (prefix, child_indent) = if root {
            (String::new(), String::new())
        } else if last {
            (format!("{indent}└─ "), format!("{indent}   "))
        } else {
            (format!("{indent}├─ "), format!("{indent}│  "))
        };
        let kids = children.get(&i).map(Vec::as_slice).unwrap_or(&[]);
        let under = if kids.is_empty() {
            format!("{child_indent}   ")
        } else {
            format!("{child_indent}│  ")
        };
        let start = tracellm_core::time::millis_between(t0, s.start_time.max(t0));
        let dur = s.latency_ms.unwrap_or(0.0);
        out.push(Row {
            span: s,
            prefix,
            under,
            offset: (start / total).clamp(0.0, 1.0),
            length: (dur / total).clamp(0.0, 1.0),
        });
        for (n, &c) in kids.iter().enumerate().rev() {
            stack.push((c, child_indent.clone(), n + 1 == kids.len(), false));
        }
    }
    out
}

/// A bar of `width` cells: blanks before the span starts, then its duration.
pub fn bar(offset: f64, length: f64, width: usize) -> String {
    let start = ((offset * width as f64).floor() as usize).min(width.saturating_sub(1));
    let len = ((length * width as f64).round() as usize).clamp(1, width - start);
    let mut s = String::with_capacity(width * 3);
    s.extend(std::iter::repeat_n(' ', start));
    s.extend(std::iter::repeat_n('█', len));
    s.extend(std::iter::repeat_n(' ', width - start - len));
    s
}

/// `12→184` (`~` when estimated), or empty.
pub fn tokens(s: &Span) -> String {
    match &s.tokens {
        Some(t) if t.total > 0 || t.prompt > 0 => {
            let est = if t.estimated { "~" } else { "" };
            if t.prompt == 0 && t.completion == 0 {
                format!("{est}{} tok", t.total)
            } else {
                format!("{est}{}→{} tok", t.prompt, t.completion)
            }
        }
        _ => String::new(),
    }
}

pub fn status_paint(p: Paint, status: Status, text: &str) -> String {
    match status {
        Status::Success => p.green(text),
        Status::Error => p.red(text),
        Status::Retried => p.yellow(text),
        Status::Running => p.cyan(text),
    }
}

pub const NAME_WIDTH: usize = 40;
pub const BAR_WIDTH: usize = 24;

/// Kind and name (with the model of LLM calls), cut to fit `width` columns after `prefix`.
pub fn label(s: &Span, prefix_width: usize, width: usize) -> (String, String) {
    let kind = format!("{:<9}", s.kind.as_str());
    let mut name = s.name.clone();
    if let Some(m) = &s.model
        && !name.contains(m.as_str())
    {
        name = format!("{name} ({m})");
    }
    let room = width.saturating_sub(prefix_width + 10).max(8);
    let name = if common::width(&name) > room {
        let cut: String = name.chars().take(room - 1).collect();
        format!("{cut}…")
    } else {
        name
    };
    (kind, name)
}

/// The header and tree of `t` as terminal text.
pub fn render(t: &Trace, p: Paint) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{}  {}  {}  {}  {}  {}\n",
        p.bold(&t.id),
        p.bold(&t.name),
        status_paint(p, t.status, t.status.as_str()),
        t.latency_ms.map(common::fmt_ms).unwrap_or_else(|| "-".into()),
        format_args!("{} tok", t.tokens.total),
        common::fmt_cost(t.cost_usd),
    ));
    let mut facts = vec![format!(
        "started {}",
        t.timestamp.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    )];
    let plural = |n: u32, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    facts.push(format!(
        "{}, {}",
        plural(t.span_count, "span", "spans"),
        plural(t.error_count, "error", "errors")
    ));
    if t.retries > 0 {
        facts.push(plural(t.retries, "retry", "retries"));
    }
    if let Some(m) = &t.model {
        facts.push(m.clone());
    }
    if let Some(s) = &t.session_id {
        facts.push(format!("session {s}"));
    }
    if let Some(u) = &t.user_id {
        facts.push(format!("user {u}"));
    }
    out.push_str(&p.dim(&facts.join(" · ")));
    out.push('\n');
    if let Some(r) = &t.failure_reason {
        out.push_str(&p.red(&format!("failure: {r}")));
        out.push('\n');
    }
    out.push('\n');
    for row in rows(t) {
        out.push_str(&render_row(&row, p));
    }
    out
}

fn render_row(row: &Row<'_>, p: Paint) -> String {
    let s = row.span;
    let pw = common::width(&row.prefix);
    let (kind, name) = label(s, pw, NAME_WIDTH);
    let pad = NAME_WIDTH.saturating_sub(pw + common::width(&kind) + 1 + common::width(&name));
    let kind_painted = match s.kind {
        tracellm_core::SpanKind::Llm => p.magenta(&kind),
        tracellm_core::SpanKind::Tool => p.yellow(&kind),
        tracellm_core::SpanKind::Retriever | tracellm_core::SpanKind::Embedding => p.cyan(&kind),
        _ => p.dim(&kind),
    };
    let name_painted = if s.status == Status::Error { p.red(&name) } else { name };
    let bar_text = bar(row.offset, row.length, BAR_WIDTH);
    let bar_painted = status_paint(p, s.status, &bar_text);
    let dur = s.latency_ms.map(common::fmt_ms).unwrap_or_else(|| "-".into());
    let mut line = format!(
        "{}{kind_painted} {name_painted}{} {bar_painted} {dur:>7}  {:<14} {}",
        p.dim(&row.prefix),
        " ".repeat(pad),
        tokens(s),
        status_paint(p, s.status, s.status.as_str()),
    );
    while line.ends_with(' ') {
        line.pop();
    }
    line.push('\n');
    if let Some(e) = &s.error {
        line.push_str(&format!(
            "{}{}\n",
            p.dim(&row.under),
            p.red(&format!("✗ {}", common::one_line(&e.summary(), 100)))
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_fill_their_share() {
        assert_eq!(bar(0.0, 1.0, 4), "████");
        assert_eq!(bar(0.5, 0.25, 4), "  █ ");
        assert_eq!(bar(0.99, 0.0, 4), "   █");
    }
}
