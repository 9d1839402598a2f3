//! A full disk and a read-only data directory, for real: a small tmpfs filled by a file, and a
//! read-only bind mount. Mounting needs root (CI runs as root); elsewhere the tests say why they
//! skip rather than pretend.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::{Server, check_integrity, native_trace};

/// A mount that is undone when dropped, even when the test fails.
struct Mount(PathBuf);

impl Mount {
    /// Runs `mount ARGS… DIR`; `None` (with the reason printed) when mounting is not possible.
    fn new(args: &[&str], dir: &Path) -> Option<Mount> {
        let out = Command::new("mount").args(args).arg(dir).output();
        match out {
            Ok(o) if o.status.success() => Some(Mount(dir.to_path_buf())),
            Ok(o) => {
                println!(
                    "skipped: `mount {}` failed (needs root and mount rights): {}",
                    args.join(" "),
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                println!("skipped: cannot run mount: {e}");
                None
            }
        }
    }

    fn remount(&self, opts: &str) {
        let ok = Command::new("mount").args(["-o", opts]).arg(&self.0).status().unwrap();
        assert!(ok.success(), "mount -o {opts} {}", self.0.display());
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.0).status().is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

fn post_native(
    rt: &tokio::runtime::Runtime,
    srv: &Server,
    doc: &serde_json::Value,
) -> (u16, Option<String>, serde_json::Value) {
    rt.block_on(async {
        let r = support::client().post(srv.url("/traces")).json(doc).send().await.unwrap();
        let status = r.status().as_u16();
        let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
        (status, retry, r.json().await.unwrap_or_default())
    })
}

fn get_status(rt: &tokio::runtime::Runtime, srv: &Server, path: &str) -> u16 {
    rt.block_on(async {
        support::client().get(srv.url(path)).send().await.unwrap().status().as_u16()
    })
}

/// Fills the filesystem of `dir` with one file until the kernel says it is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    loop {
        match f.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    let _ = f.sync_all();
}

#[test]
fn a_full_disk_answers_507_keeps_reads_and_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let Some(_mount) = Mount::new(&["-t", "tmpfs", "-o", "size=12m", "tmpfs"], &mnt) else {
        return;
    };
    let rt = support::runtime();
    let mut srv = Server::start(&mnt, &[]);
    for i in 0..20 {
        let (code, _, v) = post_native(&rt, &srv, &native_trace(&format!("before{i}"), 3, 1000));
        assert_eq!(code, 202, "{v}");
    }
    fill(&mnt.join("fill"));

    // 2 MiB of prompt: more than any space SQLite holds in reserve
    let big = native_trace("big", 3, 2 << 20);
    let (code, retry, v) = post_native(&rt, &srv, &big);
    assert_eq!(code, 507, "{v}");
    assert_eq!(v["error"]["code"], "disk_full");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("disk is full") && msg.contains("reads still work"), "{msg}");
    assert!(!msg.contains(mnt.to_str().unwrap()), "no server paths in answers: {msg}");
    assert!(retry.is_some(), "507 carries Retry-After");
    // reads keep working; the failed write left nothing behind and wedged nothing
    assert_eq!(get_status(&rt, &srv, "/traces/before7"), 200);
    assert_eq!(get_status(&rt, &srv, "/traces?limit=5"), 200);
    assert_eq!(get_status(&rt, &srv, "/traces/big"), 404);
    let (code, _, _) = post_native(&rt, &srv, &big);
    assert_eq!(code, 507, "still full");

    std::fs::remove_file(mnt.join("fill")).unwrap();
    let (code, _, v) = post_native(&rt, &srv, &big);
    assert_eq!(code, 202, "ingest recovers without a restart once space returns: {v}");
    assert_eq!(get_status(&rt, &srv, "/traces/big"), 200);
    for i in 0..20 {
        assert_eq!(get_status(&rt, &srv, &format!("/traces/before{i}")), 200);
    }
    srv.signal("-TERM");
    assert!(srv.wait_exit(Duration::from_secs(30)).success());
    check_integrity(&mnt.join("traces.db"));
}

#[test]
fn a_read_only_data_dir_answers_503_keeps_reads_and_recovers_when_writable() {
    let dir = tempfile::tempdir().unwrap();
    let (src, mnt) = (dir.path().join("src"), dir.path().join("mnt"));
    std::fs::create_dir(&src).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let rt = support::runtime();
    {
        let mut srv = Server::start(&src, &[]);
        for i in 0..5 {
            let (code, _, v) = post_native(&rt, &srv, &native_trace(&format!("t{i}"), 3, 100));
            assert_eq!(code, 202, "{v}");
        }
        srv.signal("-TERM");
        assert!(srv.wait_exit(Duration::from_secs(30)).success());
    }
    let Some(mount) = Mount::new(&["--bind", src.to_str().unwrap()], &mnt) else {
        return;
    };
    // The kernel refuses to make a mount read-only while a process holds files on it open for
    // writing (EBUSY), so the server starts on the read-only directory.
    mount.remount("remount,ro,bind");
    let mut srv = Server::start(&mnt, &[]);
    assert_eq!(get_status(&rt, &srv, "/traces/t3"), 200, "reads work on a read-only dir");
    let (code, retry, v) = post_native(&rt, &srv, &native_trace("later", 3, 100));
    assert_eq!(code, 503, "{v}");
    assert_eq!(v["error"]["code"], "read_only_storage");
    assert!(v["error"]["message"].as_str().unwrap().contains("read-only"), "{v}");
    assert!(retry.is_some(), "503 carries Retry-After");

    mount.remount("remount,rw,bind");
    let (code, _, v) = post_native(&rt, &srv, &native_trace("later", 3, 100));
    assert_eq!(code, 202, "ingest recovers without a restart once writable: {v}");
    assert_eq!(get_status(&rt, &srv, "/traces/later"), 200);
    // and search finds it once its index is writable again too
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let page: serde_json::Value = rt.block_on(async {
            support::client()
                .get(srv.url("/traces?q=later"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        });
        if page["traces"].as_array().is_some_and(|t| t.len() == 1 && t[0]["id"] == "later") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "search never found the trace: {page}");
        std::thread::sleep(Duration::from_millis(100));
    }
    srv.signal("-TERM");
    assert!(srv.wait_exit(Duration::from_secs(30)).success());
    check_integrity(&mnt.join("traces.db"));
}
