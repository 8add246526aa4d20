//! What an installation ships besides the binaries: man pages generated from
//! the CLI definitions and shell completions.

use cairn_tests::*;
use std::process::Command;

fn run(program: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(bin(program)).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn man_pages_and_completions_are_generated() {
    let dir = temp_dir("cairn-man-");
    run("cairn", &["man", dir.path().to_str().unwrap()]);
    for page in [
        "cairn.1",
        "cairn-volume.1",
        "cairn-volume-create.1",
        "cairn-volume-set.1",
        "cairn-bench.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page} is not a man page"
        );
    }
    run("cairnd", &["--man", dir.path().to_str().unwrap()]);
    let cairnd = std::fs::read_to_string(dir.path().join("cairnd.8")).unwrap();
    assert!(
        cairnd.contains("--listen") || cairnd.contains("listen"),
        "cairnd.8 lacks its options"
    );
    for shell in ["bash", "zsh", "fish"] {
        let out = run("cairn", &["completions", shell]);
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(
            script.contains("volume") && script.contains("create"),
            "{shell} completion lacks subcommands"
        );
    }
    let bad = Command::new(bin("cairn"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

#[test]
fn cairnd_logs_to_a_file_and_reopens_it_on_sighup() {
    preflight();
    watchdog();
    let dir = temp_dir("cairn-log-");
    let log = dir.path().join("logs/cairnd.log");
    let host = unique_host();
    let port = free_udp_port(&host);
    let mut child = Command::new(bin("cairnd"))
        .args(["--listen", &format!("{host}:{port}"), "--state-dir"])
        .arg(dir.path().join("state"))
        .arg("--log-file")
        .arg(&log)
        .spawn()
        .unwrap();
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    let serving = poll(std::time::Duration::from_secs(10), || {
        read(&log).contains("cairnd serving").then_some(())
    });
    assert!(
        serving.is_some(),
        "no start-up record in the log file: {:?}",
        read(&log)
    );
    // logrotate's move-then-signal.
    let rotated = dir.path().join("logs/cairnd.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    // SAFETY: plain signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let reopened = poll(std::time::Duration::from_secs(10), || {
        read(&log).contains("log file reopened").then_some(())
    });
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(reopened.is_some(), "no record in the reopened log file");
    assert!(status.success(), "cairnd exited with {status}");
    assert!(read(&rotated).contains("cairnd serving"));
    assert!(
        read(&log).contains("shutting down"),
        "records after SIGHUP went elsewhere"
    );
}
