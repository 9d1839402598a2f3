//! `tracellm` alone on a terminal: a palette of the commands. Type to narrow the list, Enter to
//! pick; commands that need an argument ask for it. The choice runs as if typed in full.

use std::time::Duration;

use ratatui::Frame;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, List, ListItem, ListState, Paragraph};

use crate::monitor::term::TerminalGuard;

pub struct Entry {
    pub name: &'static str,
    pub about: &'static str,
    /// The question asked for the argument, if the command takes one.
    pub ask: Option<&'static str>,
    /// Arguments from the answer.
    pub build: fn(&str) -> Vec<String>,
}

fn words(s: &[&str]) -> Vec<String> {
    s.iter().map(|w| w.to_string()).collect()
}

pub const ENTRIES: &[Entry] = &[
    Entry {
        name: "trace",
        about: "send a prompt to your LLM provider and record the trace",
        ask: Some("prompt"),
        build: |a| vec!["trace".into(), a.into()],
    },
    Entry {
        name: "monitor",
        about: "watch traces live, like htop",
        ask: None,
        build: |_| words(&["monitor"]),
    },
    Entry {
        name: "replay",
        about: "walk a recorded trace step by step",
        ask: Some("trace id"),
        build: |a| vec!["replay".into(), a.into(), "--step".into()],
    },
    Entry {
        name: "export",
        about: "write traces to a file (.json, .jsonl or .csv)",
        ask: Some("file"),
        build: |a| {
            let format = match a.rsplit('.').next() {
                Some("csv") => "csv",
                Some("json") => "json",
                _ => "jsonl",
            };
            vec!["export".into(), "--format".into(), format.into(), "-o".into(), a.into()]
        },
    },
    Entry {
        name: "demo",
        about: "load sample agent traces into the running server",
        ask: None,
        build: |_| words(&["demo"]),
    },
    Entry {
        name: "start",
        about: "run the server and the dashboard",
        ask: None,
        build: |_| words(&["start"]),
    },
    Entry {
        name: "config init",
        about: "write a commented config file",
        ask: None,
        build: |_| words(&["config", "init"]),
    },
    Entry { name: "help", about: "every command and flag", ask: None, build: |_| words(&["help"]) },
];

#[derive(Default)]
struct Palette {
    query: String,
    selected: usize,
    /// The entry being asked about, and the answer so far.
    asking: Option<(usize, String)>,
}

impl Palette {
    fn matches(&self) -> Vec<usize> {
        let q = self.query.to_lowercase();
        (0..ENTRIES.len())
            .filter(|&i| {
                q.is_empty()
                    || ENTRIES[i].name.contains(&q)
                    || ENTRIES[i].about.to_lowercase().contains(&q)
            })
            .collect()
    }

    /// `Some(Some(args))`: run; `Some(None)`: quit; `None`: keep going.
    fn key(&mut self, k: KeyEvent) -> Option<Option<Vec<String>>> {
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            return Some(None);
        }
        if let Some((i, answer)) = &mut self.asking {
            match k.code {
                KeyCode::Enter if !answer.trim().is_empty() => {
                    return Some(Some((ENTRIES[*i].build)(answer.trim())));
                }
                KeyCode::Esc => self.asking = None,
                KeyCode::Backspace => {
                    answer.pop();
                }
                KeyCode::Char(c) => answer.push(c),
                _ => {}
            }
            return None;
        }
        let m = self.matches();
        match k.code {
            KeyCode::Esc => return Some(None),
            KeyCode::Up => self.selected = self.selected.saturating_sub(1),
            KeyCode::Down => self.selected = (self.selected + 1).min(m.len().saturating_sub(1)),
            KeyCode::Enter => {
                let i = *m.get(self.selected)?;
                match ENTRIES[i].ask {
                    Some(_) => self.asking = Some((i, String::new())),
                    None => return Some(Some((ENTRIES[i].build)(""))),
                }
            }
            KeyCode::Backspace => {
                self.query.pop();
                self.selected = 0;
            }
            KeyCode::Char(c) => {
                self.query.push(c);
                self.selected = 0;
            }
            _ => {}
        }
        None
    }

    fn draw(&self, f: &mut Frame) {
        let [title, search, list, footer] = Layout::vertical([
            Constraint::Length(2),
            Constraint::Length(3),
            Constraint::Min(3),
            Constraint::Length(1),
        ])
        .areas(f.area());
        f.render_widget(
            Paragraph::new(Line::from(vec![
                Span::styled(
                    " TraceLLM ",
                    Style::default().fg(Color::Black).bg(Color::Cyan).add_modifier(Modifier::BOLD),
                ),
                Span::raw("  local-first tracing for LLM apps and agents"),
            ])),
            title,
        );
        let (label, text) = match &self.asking {
            Some((i, answer)) => (
                format!(" {} › {} ", ENTRIES[*i].name, ENTRIES[*i].ask.unwrap_or("")),
                answer.clone(),
            ),
            None => (" command ".to_string(), self.query.clone()),
        };
        f.render_widget(
            Paragraph::new(format!("{text}▏")).block(Block::bordered().title(label)),
            search,
        );
        let m = self.matches();
        let items: Vec<ListItem> = m
            .iter()
            .map(|&i| {
                ListItem::new(Line::from(vec![
                    Span::styled(
                        format!("{:<13}", ENTRIES[i].name),
                        Style::default().add_modifier(Modifier::BOLD),
                    ),
                    Span::styled(ENTRIES[i].about, Style::default().fg(Color::Gray)),
                ]))
            })
            .collect();
        let mut state = ListState::default().with_selected(Some(self.selected));
        f.render_stateful_widget(
            List::new(items)
                .block(Block::bordered())
                .highlight_style(Style::default().bg(Color::DarkGray))
                .highlight_symbol("▶ "),
            list,
            &mut state,
        );
        let help = if self.asking.is_some() {
            " Enter: run   Esc: back"
        } else {
            " type to filter   ↑↓: choose   Enter: run   Esc: quit"
        };
        f.render_widget(
            Paragraph::new(Span::styled(help, Style::default().fg(Color::DarkGray))),
            footer,
        );
    }
}

/// Shows the palette; returns the arguments of the chosen command, or None when the user left.
pub fn choose() -> anyhow::Result<Option<Vec<String>>> {
    let mut guard = TerminalGuard::new()?;
    let mut p = Palette::default();
    loop {
        guard.terminal.draw(|f| p.draw(f))?;
        if !event::poll(Duration::from_millis(500))? {
            continue;
        }
        if let Event::Key(k) = event::read()?
            && k.kind != KeyEventKind::Release
            && let Some(choice) = p.key(k)
        {
            return Ok(choice);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(p: &mut Palette, c: KeyCode) -> Option<Option<Vec<String>>> {
        p.key(KeyEvent::new(c, KeyModifiers::NONE))
    }

    #[test]
    fn typing_narrows_and_enter_asks_then_runs() {
        let mut p = Palette::default();
        for c in "rep".chars() {
            press(&mut p, KeyCode::Char(c));
        }
        assert_eq!(p.matches().len(), 1);
        assert!(press(&mut p, KeyCode::Enter).is_none(), "replay asks for an id");
        for c in "tr_1".chars() {
            press(&mut p, KeyCode::Char(c));
        }
        assert_eq!(press(&mut p, KeyCode::Enter), Some(Some(words(&["replay", "tr_1", "--step"]))));
        let mut p = Palette::default();
        press(&mut p, KeyCode::Down);
        assert_eq!(press(&mut p, KeyCode::Enter), Some(Some(words(&["monitor"]))));
        assert_eq!(press(&mut Palette::default(), KeyCode::Esc), Some(None));
        assert_eq!((ENTRIES[3].build)("out.csv")[2], "csv");
    }
}
