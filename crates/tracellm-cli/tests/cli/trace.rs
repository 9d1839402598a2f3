//! `tracellm trace PROMPT`.

use crate::common::*;

#[test]
fn prints_the_block_streams_and_stores_the_trace() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path());
    let llm = Llm::start();
    let out = tracellm(
        dir.path(),
        &[
            "--endpoint",
            &srv.api,
            "trace",
            "Explain transformers",
            "--base-url",
            &llm.base(),
            "--model",
            "slow-200-gpt-4o",
        ],
        &[],
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    let id = trace_id(&text);
    assert!(id.starts_with("tr_"), "{id}");
    let lines: Vec<&str> = text.lines().collect();
    // The test server counts words and punctuation: 3 + 4 + 2 prompt tokens; the reply
    // "Reply to: Explain transformers" is 5.
    assert_eq!(lines[1], "Model:        slow-200-gpt-4o");
    assert!(lines[2].starts_with("Latency:      ") && lines[2].ends_with('s'), "{}", lines[2]);
    assert_eq!(lines[3], "Prompt Tokens:  9");
    assert_eq!(lines[4], "Completion Tokens: 5");
    assert_eq!(lines[5], "Status:       success");
    assert_eq!(lines[6], "");
    assert_eq!(lines[7], "Reply to: Explain transformers");
    assert_eq!(lines.len(), 8);

    // Streaming was asked for, with usage in the last chunk.
    let reqs = llm.requests();
    let body = &reqs.last().unwrap()["body"];
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);

    let t = get(&format!("{}/traces/{id}", srv.api));
    assert_eq!(t["status"], "success");
    assert_eq!(t["prompt"], "Explain transformers");
    assert_eq!(t["response"], "Reply to: Explain transformers");
    assert_eq!(t["tokens"]["prompt"], 9);
    assert_eq!(t["tokens"]["completion"], 5);
    assert_eq!(t["tokens"]["estimated"], false);
    assert!(t["tags"].as_array().unwrap().contains(&"cli".into()));
    let span = &t["spans"][0];
    assert_eq!(span["kind"], "llm");
    assert_eq!(span["model"], "slow-200-gpt-4o");
    assert_eq!(span["input"]["messages"][0]["content"], "Explain transformers");
    assert_eq!(span["output"]["messages"][0]["content"], "Reply to: Explain transformers");
    // The server waits 200 ms before the first chunk: that is the time to first token.
    let ttft = span["time_to_first_token_ms"].as_f64().expect("ttft recorded");
    assert!(ttft >= 200.0, "{ttft}");
    assert!(ttft <= span["latency_ms"].as_f64().unwrap());

    // --json for scripts.
    let out = tracellm(
        dir.path(),
        &[
            "--endpoint",
            &srv.api,
            "--json",
            "trace",
            "hello",
            "--base-url",
            &llm.base(),
            "--model",
            "gpt-4o",
        ],
        &[],
    );
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["status"], "success");
    assert_eq!(v["response"], "Reply to: hello");
    assert!(v["cost_usd"].as_f64().unwrap() > 0.0, "gpt-4o has a price: {v}");
    assert_eq!(v["recorded"]["server"], srv.api.as_str());
}

#[test]
fn provider_from_environment_and_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path());
    let llm = Llm::start();
    // OPENAI_BASE_URL + OPENAI_API_KEY, as the openai package reads them.
    let base = llm.base();
    let out = tracellm(
        dir.path(),
        &["--endpoint", &srv.api, "trace", "from env"],
        &[("OPENAI_BASE_URL", &base), ("OPENAI_API_KEY", "sk-test")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let req = llm.requests().pop().unwrap();
    assert_eq!(req["headers"]["authorization"], "Bearer sk-test");
    assert_eq!(req["body"]["model"], "gpt-4o-mini", "the OpenAI preset's default model");

    // The config file: endpoint, base-url, model, provider-key.
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!("endpoint = \"{}\"\nbase-url = \"{base}\"\nmodel = \"gpt-4.1-mini\"\nprovider-key = \"k-file\"\n", srv.api),
    )
    .unwrap();
    let out = tracellm(dir.path(), &["--config", cfg.to_str().unwrap(), "trace", "from file"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let req = llm.requests().pop().unwrap();
    assert_eq!(req["headers"]["authorization"], "Bearer k-file");
    assert_eq!(req["body"]["model"], "gpt-4.1-mini");
    let id = trace_id(&stdout(&out));
    assert_eq!(get(&format!("{}/traces/{id}", srv.api))["model"], "gpt-4.1-mini");
}

#[test]
fn missing_provider_says_what_to_set_and_records_the_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path());
    let out = tracellm(dir.path(), &["--endpoint", &srv.api, "trace", "hello"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    for hint in [
        "no LLM provider configured",
        "OPENAI_API_KEY",
        "GROQ_API_KEY",
        "--provider ollama",
        "--base-url",
    ] {
        assert!(err.contains(hint), "{hint} missing from: {err}");
    }
    assert!(stdout(&out).is_empty());
    let page = get(&format!("{}/traces?status=error", srv.api));
    let t = &page["traces"][0];
    assert!(t["failure_reason"].as_str().unwrap().contains("ConfigurationError"), "{t}");

    // Naming the OpenAI preset without a key names the variable.
    let out = tracellm(
        dir.path(),
        &["--endpoint", &srv.api, "trace", "hello", "--provider", "openai"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("OPENAI_API_KEY is not set"), "{}", stderr(&out));
}

#[test]
fn provider_errors_are_explained_and_stored_as_failed_traces() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path());
    let llm = Llm::start();
    let cases: &[(&[&str], &str, &str)] = &[
        (&["--model", "error-401"], "refused the API key (401)", "AuthenticationError"),
        (&["--model", "error-429"], "rate limited by the provider", "RateLimitError"),
        (&["--model", "slow-5000", "--timeout", "0.3"], "timed out", "TimeoutError"),
    ];
    for (extra, message, kind) in cases {
        let mut args = vec!["--endpoint", &srv.api, "trace", "will fail", "--base-url"];
        let base = llm.base();
        args.push(&base);
        args.extend_from_slice(extra);
        let out = tracellm(dir.path(), &args, &[]);
        assert_eq!(out.status.code(), Some(1), "{kind}");
        let err = stderr(&out);
        assert!(err.contains(message), "{kind}: {err}");
        let text = stdout(&out);
        assert!(text.contains("Status:       error"), "{text}");
        let t = get(&format!("{}/traces/{}", srv.api, trace_id(&text)));
        assert_eq!(t["status"], "error");
        assert!(t["failure_reason"].as_str().unwrap().contains(kind), "{t}");
        assert_eq!(t["spans"][0]["error"]["type"], *kind);
    }
    // Nothing listening at the base URL.
    let dead = dead_endpoint();
    let out =
        tracellm(dir.path(), &["--endpoint", &srv.api, "trace", "x", "--base-url", &dead], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot reach"), "{}", stderr(&out));
}

#[test]
fn without_a_server_the_trace_goes_to_the_local_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let llm = Llm::start();
    let dead = dead_endpoint();
    let out = tracellm(
        dir.path(),
        &[
            "--endpoint",
            &dead,
            "trace",
            "offline please",
            "--base-url",
            &llm.base(),
            "--model",
            "gpt-4o",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("recorded in sqlite://"), "{}", stderr(&out));
    let id = trace_id(&stdout(&out));
    assert!(data.join("traces.db").exists());

    // replay reads the same store while no server runs…
    let out = tracellm(
        dir.path(),
        &["--endpoint", &dead, "replay", &id, "--data-dir", data.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&id));
    // …and the server finds it when it starts on that data directory.
    let srv = Server::start(&data);
    let t = get(&format!("{}/traces/{id}", srv.api));
    assert_eq!(t["response"], "Reply to: offline please");
    assert_eq!(t["tokens"]["completion"], 5);
}
