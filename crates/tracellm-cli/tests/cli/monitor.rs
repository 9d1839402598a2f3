//! `tracellm monitor` in a real terminal: tmux runs it, send-keys types, capture-pane reads the
//! screen. (The state and drawing are also tested in-process on ratatui's TestBackend.)

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux").args(args).output().expect("tmux runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_for(session: &str, what: &str, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let screen = tmux(&["capture-pane", "-p", "-t", session]);
        if want(&screen) {
            return screen;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; screen:\n{screen}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Session(String);

impl Drop for Session {
    fn drop(&mut self) {
        tmux(&["kill-session", "-t", &self.0]);
    }
}

#[test]
fn live_traces_keys_and_the_terminal_given_back() {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("tmux is not installed: skipping the real-terminal monitor test");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path());
    let name = format!("tracellm-monitor-{}", std::process::id());
    let session = Session(name.clone());
    // The shell prints a marker after the monitor exits, so the test sees the terminal again.
    let cmd = format!("{BIN} --endpoint {} monitor; echo MONITOR-EXITED $?; sleep 60", srv.api);
    let out = Command::new("tmux")
        .args(["new-session", "-d", "-s", &session.0, "-x", "140", "-y", "40", "-e"])
        .arg(format!("HOME={}", dir.path().display()))
        .arg(cmd)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for(&name, "the live header", |s| s.contains("● live"));

    post(
        &srv.api,
        &json!({"id": "tr_tmux_1", "name": "tmux-agent", "model": "gpt-4o", "prompt": "hi", "response": "hello"}),
    );
    wait_for(&name, "the posted trace", |s| s.contains("tr_tmux_1") && s.contains("tmux-agent"));

    tmux(&["send-keys", "-t", &name, "Enter"]);
    wait_for(&name, "the opened trace", |s| s.contains("[1/1]"));
    // Escape alone (followed at once by a key, a terminal reads it as Alt+key).
    tmux(&["send-keys", "-t", &name, "Escape"]);
    wait_for(&name, "the list again", |s| !s.contains("[1/1]"));
    tmux(&["send-keys", "-t", &name, "p"]);
    wait_for(&name, "pause", |s| s.contains("PAUSED"));
    post(
        &srv.api,
        &json!({"id": "tr_tmux_2", "name": "while-paused", "prompt": "a", "response": "b"}),
    );
    wait_for(&name, "the held trace", |s| s.contains("1 held"));
    tmux(&["send-keys", "-t", &name, "p"]);
    wait_for(&name, "resume", |s| s.contains("while-paused"));

    tmux(&["send-keys", "-t", &name, "q"]);
    let screen = wait_for(&name, "the exit", |s| s.contains("MONITOR-EXITED"));
    assert!(screen.contains("MONITOR-EXITED 0"), "{screen}");
    assert!(!screen.contains("TraceLLM monitor"), "the alternate screen is gone:\n{screen}");
}
