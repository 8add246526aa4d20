//! `cairn bench` smoke runs: every code path once, on a Cairn mount and on
//! a plain local directory. The numbers are meaningless at this size, so
//! nothing here asserts on timing — only on the shape of the JSON report
//! and on the bench leaving nothing behind.

use cairn_tests::{bin, temp_dir, with_timeout, Cluster};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const SMALLFILE_PHASES: [&str; 6] = ["create", "stat", "ls-l", "read", "rename", "delete"];

/// Runs `cairn ARGS…` with `extra_path` (if any) in front of $PATH.
fn cairn(args: &[&str], extra_path: Option<&Path>) -> Output {
    let mut cmd = Command::new(bin("cairn"));
    cmd.args(args).stdin(Stdio::null());
    if let Some(p) = extra_path {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![p.to_path_buf()];
        dirs.extend(std::env::split_paths(&path));
        cmd.env("PATH", std::env::join_paths(dirs).expect("PATH"));
    }
    with_timeout(Duration::from_secs(150), move || cmd.output())
        .unwrap_or_else(|| panic!("cairn {args:?} did not finish within 150 s"))
        .expect("running cairn")
}

/// Runs a smoke bench with `--json`, checks it succeeded, returns the report.
fn smoke(dir: &Path, extra: &[&str], extra_path: Option<&Path>) -> Value {
    let d = dir.to_str().expect("utf-8 path");
    let mut args = vec!["--json", "bench", d, "--smoke", "--proc-name", "cairnd"];
    args.extend_from_slice(extra);
    let o = cairn(&args, extra_path);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "cairn {args:?} failed ({}):\n{stderr}\n{stdout}",
        o.status
    );
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("bench JSON: {e}:\n{stdout}"));
    assert_eq!(v["ok"], true, "{v:#}");
    assert_eq!(v["schema"], 1, "{v:#}");
    check_phases(&v);
    assert_no_leftovers(dir);
    v
}

fn phases<'a>(v: &'a Value, group: &str) -> Vec<&'a Value> {
    v["phases"]
        .as_array()
        .expect("phases array")
        .iter()
        .filter(|p| p["group"] == group)
        .collect()
}

fn num(v: &Value, what: &str) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("{what} is not a number: {v}"))
}

/// The report's invariants, whatever the machine's speed.
fn check_phases(v: &Value) {
    let small = phases(v, "smallfile");
    let names: Vec<&str> = small.iter().map(|p| p["name"].as_str().expect("name")).collect();
    assert_eq!(names, SMALLFILE_PHASES, "{v:#}");
    for p in &small {
        let n = &p["name"];
        assert_eq!(p["status"], "measured", "{n}: {p:#}");
        assert_eq!(p["ops"], 200, "{n}: the smoke run's file count: {p:#}");
        assert!(num(&p["ops_per_s"], "ops_per_s") > 0.0, "{n}: {p:#}");
        assert!(num(&p["latency_us"]["p50"], "p50") > 0.0, "{n}: {p:#}");
        assert!(
            num(&p["latency_us"]["max"], "max") >= num(&p["latency_us"]["p99"], "p99"),
            "{n}: {p:#}"
        );
    }
    // fio is optional: measured with a positive rate, or skipped with a reason.
    for group in ["seq", "rand"] {
        let rows = phases(v, group);
        assert_eq!(rows.len(), 2, "{group}: {v:#}");
        for p in rows {
            match p["status"].as_str() {
                Some("measured") => {
                    let rate = if group == "seq" { "mb_per_s" } else { "ops_per_s" };
                    assert!(num(&p[rate], rate) > 0.0, "{p:#}");
                    assert!(num(&p["latency_us"]["p50"], "p50") > 0.0, "{p:#}");
                }
                Some("skipped") => assert!(
                    p["reason"].as_str().is_some_and(|r| !r.is_empty()),
                    "skipped without a reason: {p:#}"
                ),
                other => panic!("unexpected status {other:?}: {p:#}"),
            }
        }
    }
    assert_eq!(phases(v, "iozone").len(), 1, "{v:#}");
}

/// The bench works in DIR/cairn-bench-<pid> and must remove it.
fn assert_no_leftovers(dir: &Path) {
    let left: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("cairn-bench-"))
        .collect();
    assert!(left.is_empty(), "left behind in {}: {left:?}", dir.display());
}

#[test]
fn smoke_on_a_cairn_mount() {
    let c = Cluster::new();
    let v = smoke(c.mnt(), &["--proc-name", "mount-cairn"], None);
    assert_eq!(v["fs_type"], "fuse.cairn", "{v:#}");
    // The daemon and this mount's client were found and watched.
    for p in phases(&v, "smallfile") {
        for name in ["cairnd", "mount-cairn"] {
            let g = p["processes"]
                .as_array()
                .expect("processes")
                .iter()
                .find(|g| g["name"] == name)
                .unwrap_or_else(|| panic!("no {name} group: {p:#}"));
            assert!(!g["pids"].as_array().expect("pids").is_empty(), "{name}: {g:#}");
            assert!(num(&g["peak_rss_mib"], "peak_rss_mib") > 0.0, "{name}: {g:#}");
        }
    }
    assert_no_leftovers(&c.brick);
}

#[test]
fn smoke_on_a_local_dir_without_credentials() {
    let tmp = temp_dir("cairn-bench-test-");
    let dir = tmp.path().join("data");
    std::fs::create_dir(&dir).expect("mkdir");
    // A stand-in iozone (the real one is rarely installed) that prints what
    // iozone prints in throughput mode and records its arguments.
    let fake = tmp.path().join("bin");
    std::fs::create_dir(&fake).expect("mkdir bin");
    let args_file = tmp.path().join("iozone.args");
    let script = format!(
        "#!/bin/sh\necho \"$@\" > '{}'\n\
         printf '\\tChildren see throughput for  2 initial writers \\t=  512345.67 kB/sec\\n'\n\
         printf '\\tParent sees throughput for  2 initial writers \\t=  500000.12 kB/sec\\n'\n\
         printf '\\tChildren see throughput for 2 random writers \\t=  123456.78 kB/sec\\n'\n",
        args_file.display()
    );
    let iozone = fake.join("iozone");
    std::fs::write(&iozone, script).expect("write fake iozone");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&iozone, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    // An empty state dir: bench must not need a node's credentials.
    let state = tmp.path().join("no-state");
    let output = tmp.path().join("report.json");
    let (s, o) = (state.to_str().unwrap(), output.to_str().unwrap());
    let v = smoke(&dir, &["--state-dir", s, "--output", o], Some(&fake));

    let io = &phases(&v, "iozone")[0];
    assert_eq!(io["status"], "measured", "{io:#}");
    assert_eq!(io["iozone"][0]["test"], "initial writers", "{io:#}");
    assert_eq!(io["iozone"][0]["kb_per_s"], 512345.67, "{io:#}");
    assert_eq!(io["iozone"][1]["test"], "random writers", "{io:#}");
    let args = std::fs::read_to_string(&args_file).expect("fake iozone ran");
    assert!(args.starts_with("-i 0 -i 1 -i 2 -r 64k -s 16384k -t 2 -F "), "{args}");
    let bench_dir = format!("{}/cairn-bench-", dir.display());
    assert_eq!(
        args.matches(&bench_dir).count(),
        2,
        "iozone's files lie in the bench dir: {args}"
    );

    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(&output).expect("--output written")).expect("--output is JSON");
    assert_eq!(file["phases"], v["phases"], "--output holds the same report");
    assert!(!state.exists(), "bench created a state dir");
    assert_eq!(
        std::fs::read_dir(&dir).expect("list").count(),
        0,
        "the data dir is empty again"
    );
}

#[test]
fn bad_input_is_one_line_on_stderr() {
    let tmp = temp_dir("cairn-bench-bad-");
    let file = tmp.path().join("plain-file");
    std::fs::write(&file, b"x").expect("write");
    let d = tmp.path().to_str().unwrap();
    let f = file.to_str().unwrap();
    let missing = format!("{d}/missing");
    for args in [
        vec!["bench", missing.as_str()],
        vec!["bench", f],
        vec!["bench", d, "--size", "12Q"],
        vec!["bench", d, "--phases", "smallfile,nope"],
        vec!["bench", d, "--files", "0"],
    ] {
        let o = cairn(&args, None);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(o.stdout.is_empty(), "{args:?}: {}", String::from_utf8_lossy(&o.stdout));
    }
    assert_eq!(
        std::fs::read_dir(tmp.path()).expect("list").count(),
        1,
        "nothing created"
    );
}
