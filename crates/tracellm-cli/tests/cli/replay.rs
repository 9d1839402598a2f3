//! `tracellm replay ID`, `--step` and `--rerun`.

use serde_json::{Value, json};

use crate::common::*;

/// A support agent: retrieval, an LLM call, a tool that fails once and is retried, a final LLM
/// call. Fixed ids and times, so the tree is the same on every run.
fn agent_run(id: &str) -> Value {
    let t = |s: &str| format!("2026-01-01T10:00:{s}Z");
    json!({
        "id": id, "name": "support-agent", "session_id": "sess_1", "user_id": "user_1",
        "spans": [
            {"id": "a", "name": "support-agent", "kind": "agent", "start_time": t("00.000"), "end_time": t("02.000"),
             "input": {"question": "Where is my order?"}, "output": {"answer": "It ships today."}},
            {"id": "r", "parent_id": "a", "name": "kb.search", "kind": "retriever", "start_time": t("00.100"), "end_time": t("00.300"),
             "input": {"query": "order status"}, "output": {"documents": [{"id": "kb-1", "text": "Orders ship in 24h."}]}},
            {"id": "l1", "parent_id": "a", "name": "openai.chat", "kind": "llm", "model": "gpt-4o", "provider": "openai",
             "start_time": t("00.300"), "end_time": t("01.100"),
             "input": {"messages": [{"role": "system", "content": "You are support."}, {"role": "user", "content": "Where is my order?"}]},
             "output": {"messages": [{"role": "assistant", "content": "Let me look it up."}]},
             "tokens": {"prompt": 20, "completion": 6}},
            {"id": "t1", "parent_id": "a", "name": "lookup_order", "kind": "tool", "start_time": t("01.100"), "end_time": t("01.400"),
             "tool": {"name": "lookup_order", "arguments": {"order": 42}}, "error": {"type": "TimeoutError", "message": "lookup timed out"}},
            {"id": "t2", "parent_id": "a", "name": "lookup_order", "kind": "tool", "start_time": t("01.400"), "end_time": t("01.500"),
             "tool": {"name": "lookup_order", "arguments": {"order": 42}, "result": {"status": "shipped"}}},
            {"id": "l2", "parent_id": "a", "name": "openai.chat", "kind": "llm", "model": "gpt-4o", "provider": "openai",
             "start_time": t("01.500"), "end_time": t("02.000"),
             "input": {"messages": [{"role": "user", "content": "Where is my order?"}, {"role": "tool", "content": "shipped"}]},
             "output": {"messages": [{"role": "assistant", "content": "It ships today."}]},
             "tokens": {"prompt": 30, "completion": 5}}
        ]
    })
}

#[test]
fn the_tree_and_the_steps() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path());
    post(&srv.api, &agent_run("tr_replay_tree"));
    let out = tracellm(dir.path(), &["--endpoint", &srv.api, "replay", "tr_replay_tree"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(!text.contains('\x1b'), "no colors when stdout is not a terminal");
    assert_snapshot("replay_tree", &redact(&text));

    // --step without a terminal on stdin prints every step, inputs and outputs.
    let out =
        tracellm(dir.path(), &["--endpoint", &srv.api, "replay", "tr_replay_tree", "--step"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for want in [
        "[1/6] agent support-agent",
        "[3/6] llm openai.chat (gpt-4o, openai)",
        "    system: You are support.",
        "    assistant: Let me look it up.",
        "tool lookup_order({\"order\":42})",
        "error TimeoutError: lookup timed out",
        "tokens 20 → 6 (26)",
        "[6/6] llm openai.chat",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }

    // --json gives the canonical trace.
    let out =
        tracellm(dir.path(), &["--endpoint", &srv.api, "--json", "replay", "tr_replay_tree"], &[]);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["span_count"], 6);

    let out = tracellm(dir.path(), &["--endpoint", &srv.api, "replay", "tr_nope"], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no trace \"tr_nope\""), "{}", stderr(&out));
}

#[test]
fn rerun_stores_a_linked_trace_and_shows_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path());
    let llm = Llm::start();
    post(&srv.api, &agent_run("tr_rerun_src"));
    let out = tracellm(
        dir.path(),
        &[
            "--endpoint",
            &srv.api,
            "replay",
            "tr_rerun_src",
            "--rerun",
            "--base-url",
            &llm.base(),
            "--model",
            "gpt-4o-mini",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let new_id = text
        .lines()
        .next()
        .and_then(|l| l.rsplit(' ').next())
        .filter(|id| id.starts_with("tr_"))
        .unwrap_or_else(|| panic!("first line names the new trace: {text}"))
        .to_string();
    assert!(text.starts_with(&format!("Replay of tr_rerun_src → {new_id}")), "{text}");
    for want in [
        "model    gpt-4o → gpt-4o-mini",
        "output   changed",
        "- Let me look it up.",
        "+ Reply to: Where is my order?",
        "- It ships today.",
        "+ Based on the tool result: shipped",
        "tokens   20→6 → ",
        "cost     $",
        "status   retried → retried",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    // The provider got the captured messages, with the new model.
    let reqs = llm.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0]["body"]["messages"][0]["content"], "You are support.");
    assert_eq!(reqs[1]["body"]["messages"][1]["role"], "tool");
    assert!(reqs.iter().all(|r| r["body"]["model"] == "gpt-4o-mini"));

    let new = get(&format!("{}/traces/{new_id}", srv.api));
    assert_eq!(new["metadata"]["replay_of"], "tr_rerun_src");
    assert!(new["tags"].as_array().unwrap().contains(&"replay".into()));
    assert_eq!(new["span_count"], 6, "the original spans are kept");
    assert_eq!(new["session_id"], "sess_1");
    let names: Vec<&str> =
        new["spans"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names.iter().filter(|n| **n == "lookup_order").count(), 2);
    let llm_spans: Vec<&Value> =
        new["spans"].as_array().unwrap().iter().filter(|s| s["kind"] == "llm").collect();
    assert!(llm_spans.iter().all(|s| s["model"] == "gpt-4o-mini"));
    assert_eq!(
        llm_spans[1]["output"]["messages"][0]["content"],
        "Based on the tool result: shipped"
    );
    assert_eq!(new["response"], "Based on the tool result: shipped");
    // The original is untouched.
    let orig = get(&format!("{}/traces/tr_rerun_src", srv.api));
    assert_eq!(orig["spans"][2]["model"], "gpt-4o");

    // --json: the same comparison for scripts.
    let out = tracellm(
        dir.path(),
        &[
            "--endpoint",
            &srv.api,
            "--json",
            "replay",
            "tr_rerun_src",
            "--rerun",
            "--base-url",
            &llm.base(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["original"], "tr_rerun_src");
    assert_eq!(v["calls"].as_array().unwrap().len(), 2);
    assert_eq!(
        v["calls"][0]["model"]["replay"], "gpt-4o",
        "without --model the captured model is used"
    );
    assert_eq!(v["calls"][0]["output"]["changed"], true);
}

#[test]
fn a_failing_rerun_is_stored_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path());
    let llm = Llm::start();
    post(&srv.api, &agent_run("tr_rerun_fail"));
    let out = tracellm(
        dir.path(),
        &[
            "--endpoint",
            &srv.api,
            "replay",
            "tr_rerun_fail",
            "--rerun",
            "--base-url",
            &llm.base(),
            "--model",
            "error-429",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("rate limited"), "{}", stderr(&out));
    assert!(stdout(&out).contains("status   retried → error"), "{}", stdout(&out));
}
