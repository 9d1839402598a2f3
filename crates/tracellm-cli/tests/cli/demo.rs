//! `tracellm demo`.

use crate::common::*;

#[test]
fn loads_varied_runs_for_every_page() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path());
    let out = tracellm(
        dir.path(),
        &["--endpoint", &srv.api, "demo", "--count", "60", "--seed", "3"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("Loaded 60 demo traces"), "{}", stdout(&out));
    let page = get(&format!("{}/traces?limit=100", srv.api));
    let traces = page["traces"].as_array().unwrap();
    assert_eq!(traces.len(), 60);
    let has = |status: &str| traces.iter().any(|t| t["status"] == status);
    assert!(has("success") && has("error") && has("retried"));
    assert!(traces.iter().all(|t| t["session_id"].is_string() && t["user_id"].is_string()));
    let analytics = get(&format!("{}/analytics", srv.api));
    assert!(analytics["by_model"].as_array().unwrap().len() >= 4, "{analytics}");
    assert!(analytics["totals"]["cost_usd"].as_f64().unwrap() > 0.0);
    let failures = get(&format!("{}/failures", srv.api));
    assert!(!failures["failures"].as_array().unwrap().is_empty());
    let kinds: std::collections::HashSet<String> = traces
        .iter()
        .take(20)
        .flat_map(|t| {
            let full = get(&format!("{}/traces/{}", srv.api, t["id"].as_str().unwrap()));
            full["spans"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["kind"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    for k in ["agent", "llm", "tool", "retriever"] {
        assert!(kinds.contains(k), "{k} missing: {kinds:?}");
    }

    // Without a server the demo says how to start one.
    let out = tracellm(dir.path(), &["--endpoint", &dead_endpoint(), "demo"], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("tracellm start"), "{}", stderr(&out));
}
