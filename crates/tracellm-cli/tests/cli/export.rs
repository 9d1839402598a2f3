//! `tracellm export`.

use serde_json::{Value, json};

use crate::common::*;

fn seed(api: &str) {
    let traces: Vec<Value> = (0..6)
        .map(|i| {
            json!({
                "id": format!("tr_export_{i}"),
                "name": if i % 2 == 0 { "qa" } else { "agent, with \"quotes\"" },
                "timestamp": format!("2026-01-0{}T12:00:00Z", i + 1),
                "model": if i < 4 { "gpt-4o" } else { "gpt-4o-mini" },
                "prompt": format!("question {i}\nsecond line"),
                "response": "answer",
                "tokens": {"prompt": 10, "completion": i},
                "latency_ms": 100 + i,
                "status": if i == 1 || i == 4 { "error" } else { "success" },
                "tags": ["export", "t"],
            })
        })
        .collect();
    post(api, &json!({"traces": traces}));
}

fn run(home: &std::path::Path, api: &str, args: &[&str]) -> String {
    let mut all = vec!["--endpoint", api, "export"];
    all.extend_from_slice(args);
    let out = tracellm(home, &all, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).is_empty(), "quiet when not on a terminal: {}", stderr(&out));
    stdout(&out)
}

#[test]
fn json_jsonl_and_csv_with_filters() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path());
    seed(&srv.api);

    let v: Vec<Value> =
        serde_json::from_str(&run(dir.path(), &srv.api, &["--format", "json"])).unwrap();
    assert_eq!(v.len(), 6);
    assert_eq!(v[0]["id"], "tr_export_5", "newest first");
    assert_eq!(v[0]["spans"].as_array().unwrap().len(), 1, "whole traces, spans included");

    let text = run(dir.path(), &srv.api, &["--format", "jsonl", "--status", "error"]);
    let rows: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["tr_export_4", "tr_export_1"]);

    let text =
        run(dir.path(), &srv.api, &["--format", "jsonl", "--model", "gpt-4o-mini", "--summaries"]);
    let rows: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2);
    assert!(rows[0].get("spans").is_none() && rows[0]["prompt_preview"].is_string());

    let text = run(
        dir.path(),
        &srv.api,
        &["--format", "csv", "--since", "2026-01-02T00:00:00Z", "--until", "2026-01-05T00:00:00Z"],
    );
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(&header[..4], ["id", "timestamp", "name", "status"]);
    let records: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let ids: Vec<&str> = records.iter().map(|r| &r[col("id")]).collect();
    assert_eq!(ids, ["tr_export_3", "tr_export_2", "tr_export_1"]);
    assert_eq!(&records[2][col("name")], "agent, with \"quotes\"", "quoting survives");
    assert_eq!(&records[2][col("status")], "error");
    assert_eq!(&records[0][col("total_tokens")], "13");
    assert_eq!(&records[0][col("tags")], "export;t");
    assert_eq!(&records[0][col("prompt_preview")], "question 3\nsecond line");

    // -o writes the file whole; nothing is left behind.
    let file = dir.path().join("out.csv");
    let printed = run(dir.path(), &srv.api, &["--format", "csv", "-o", file.to_str().unwrap()]);
    assert!(printed.is_empty());
    let mut r = csv::Reader::from_path(&file).unwrap();
    assert_eq!(r.records().count(), 6);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty());

    // An empty selection is still valid output.
    let v: Vec<Value> =
        serde_json::from_str(&run(dir.path(), &srv.api, &["--format", "json", "--model", "none"]))
            .unwrap();
    assert!(v.is_empty());

    let out = tracellm(dir.path(), &["--endpoint", &srv.api, "export", "--status", "bogus"], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("status"), "{}", stderr(&out));
}

#[test]
fn pages_through_more_than_one_page() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path());
    let traces: Vec<Value> = (0..1203)
        .map(|i| json!({"id": format!("tr_p{i}"), "prompt": "p", "response": "r", "timestamp": format!("2026-02-01T00:{:02}:{:02}Z", i / 60 % 60, i % 60)}))
        .collect();
    post(&srv.api, &json!({"traces": traces}));
    let text = run(dir.path(), &srv.api, &["--format", "csv"]);
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let ids: std::collections::HashSet<String> =
        r.records().map(|x| x.unwrap()[0].to_string()).collect();
    assert_eq!(ids.len(), 1203);
    let text = run(dir.path(), &srv.api, &["--format", "jsonl", "--summaries", "--limit", "700"]);
    assert_eq!(text.lines().count(), 700);
}
