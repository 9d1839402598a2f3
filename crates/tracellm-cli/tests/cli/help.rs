//! `--help` snapshots (so the docs cannot drift), completions, config init and the bare command.

use crate::common::*;

#[test]
fn help_text_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    for (name, args) in [
        ("help", &["--help"][..]),
        ("help_trace", &["trace", "--help"]),
        ("help_replay", &["replay", "--help"]),
        ("help_monitor", &["monitor", "--help"]),
        ("help_export", &["export", "--help"]),
        ("help_demo", &["demo", "--help"]),
    ] {
        let out = tracellm(dir.path(), args, &[]);
        assert!(out.status.success(), "{name}");
        assert_snapshot(name, &stdout(&out));
    }
}

#[test]
fn no_arguments_without_a_terminal_prints_help() {
    let dir = tempfile::tempdir().unwrap();
    let out = tracellm(dir.path(), &[], &[]);
    assert!(out.status.success());
    let text = stdout(&out);
    for cmd in ["start", "trace", "replay", "monitor", "export", "demo", "config", "completions"] {
        assert!(text.contains(&format!("  {cmd}")), "{cmd} missing from:\n{text}");
    }
}

#[test]
fn completions_and_config_init() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let out = tracellm(dir.path(), &["completions", shell], &[]);
        assert!(out.status.success(), "{shell}");
        let script = stdout(&out);
        assert!(script.contains("tracellm") && script.contains("replay"), "{shell}");
    }

    // config init writes the default file (under HOME), refuses to overwrite, and the file it
    // wrote is accepted by every command.
    let out = tracellm(dir.path(), &["config", "init"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let path = dir.path().join(".config/tracellm/config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    for key in ["endpoint", "api-key", "provider", "base-url", "provider-key", "port", "data-dir"] {
        assert!(text.contains(&format!("# {key} = ")), "{key} missing");
    }
    let out = tracellm(dir.path(), &["config", "init"], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--force"));
    let out = tracellm(dir.path(), &["config", "path"], &[]);
    assert_eq!(stdout(&out).trim(), path.to_str().unwrap());

    // Uncommented, the client keys take effect (the endpoint here).
    std::fs::write(&path, "endpoint = \"http://127.0.0.1:1\"\n").unwrap();
    let out = tracellm(dir.path(), &["demo"], &[]);
    assert!(stderr(&out).contains("127.0.0.1:1"), "{}", stderr(&out));
}

#[test]
fn monitor_needs_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let out = tracellm(dir.path(), &["monitor"], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("needs a terminal"), "{}", stderr(&out));
}
