//! The CLI's machine-readable side and its errors: every read command takes
//! `--json` and prints one JSON document `{"ok": true, KEY: …}` (the keys
//! documented in docs/architecture.md, "Operations"); a failure is `{"ok":
//! false, "error": …}` on stdout with `--json`, one line on stderr always,
//! and says what to do about it.

use cairn_tests::*;

/// Runs `cairn --json ARGS`, parses its output and checks `ok` and `key`.
#[track_caller]
fn json_ok(c: &Cluster, args: &[&str], key: &str) -> serde_json::Value {
    let out = c.daemon.cli_ok(&[&["--json"][..], args].concat());
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} --json is not JSON ({e}):\n{out}"));
    assert_eq!(v["ok"], true, "{args:?}: {v}");
    assert!(!v[key].is_null(), "{args:?} lacks {key:?}: {v}");
    v
}

#[test]
fn every_read_command_answers_in_json() {
    let c = Cluster::new();
    std::fs::write(c.p("f"), b"some data").unwrap();
    let v = json_ok(&c, &["volume", "info"], "volumes");
    assert_eq!(v["volumes"][0]["name"], "vol");
    json_ok(&c, &["volume", "info", "vol"], "volumes");
    let v = json_ok(&c, &["volume", "list"], "names");
    assert_eq!(v["names"], serde_json::json!(["vol"]));
    assert_eq!(c.daemon.cli_ok(&["volume", "list"]), "vol\n");
    json_ok(&c, &["volume", "status"], "status");
    for view in ["detail", "clients", "mem"] {
        let v = json_ok(&c, &["volume", "status", "vol", view], "status");
        assert!(
            v["status"][0]["bricks"].as_array().is_some_and(|b| !b.is_empty()),
            "{v}"
        );
    }
    let v = json_ok(&c, &["volume", "get", "vol", "all"], "options");
    assert!(v["options"][0]["key"].is_string(), "{v}");
    json_ok(&c, &["volume", "get", "vol", "performance.write-behind"], "options");
    json_ok(&c, &["peer", "status"], "peers");
    let v = json_ok(&c, &["pool", "list"], "peers");
    assert_eq!(v["peers"][0]["is_self"], true, "{v}");
    json_ok(&c, &["volume", "profile", "vol", "start"], "message");
    json_ok(&c, &["volume", "profile", "vol", "info"], "profile");
    json_ok(&c, &["volume", "top", "vol", "open"], "top");
    json_ok(&c, &["volume", "profile", "vol", "stop"], "message");
    let man = temp_dir("cairn-man-");
    json_ok(&c, &["man", man.path().to_str().unwrap()], "dir");
}

#[test]
fn heal_reports_answer_in_json() {
    let mut pool = Pool::new(2);
    let (b0, b1) = (pool.brick(0, "b0"), pool.brick(1, "b1"));
    pool.node(0)
        .cli_ok(&["volume", "create", "rv", "replica", "2", &b0, &b1, "force"]);
    pool.node(0).cli_ok(&["volume", "start", "rv"]);
    let mnt = pool.mount(0, "rv", "mnt", "");
    std::fs::write(mnt.join("f"), b"x").unwrap();
    let json = |args: &[&str], key: &str| {
        let out = pool.node(0).cli_ok(&[&["--json"][..], args].concat());
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}\n{out}"));
        assert!(v["ok"] == true && !v[key].is_null(), "{args:?}: {v}");
        v
    };
    json(&["volume", "heal", "rv", "info"], "heal");
    json(&["volume", "heal", "rv", "info", "split-brain"], "heal");
    let v = json(&["volume", "heal", "rv", "info", "summary"], "heal_summary");
    assert_eq!(v["heal_summary"].as_array().map(Vec::len), Some(2), "{v}");
    json(&["volume", "heal", "rv", "statistics"], "heal_statistics");
    json(&["volume", "heal", "rv", "statistics", "heal-count"], "heal_statistics");
    let v = json(
        &["volume", "heal", "rv", "split-brain", "source-brick", &b0],
        "split_brain",
    );
    assert_eq!(v["split_brain"], serde_json::json!([]), "no split-brain yet: {v}");
    // `rebalance status --json`: tests/tests/watching.rs, after a rebalance.
}

#[test]
fn errors_say_what_to_do() {
    let c = Cluster::bare();
    // An unknown volume: gluster's words first, then where to look.
    let out = c.daemon.cli(&["volume", "start", "nosuch"]);
    assert!(!out.ok());
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
    assert!(
        out.stderr
            .starts_with("volume start: nosuch: failed: Volume nosuch does not exist")
            && out.stderr.contains("'cairn volume list'"),
        "{out:?}"
    );
    let out = c.daemon.cli(&["--json", "volume", "info", "nosuch"]);
    assert!(!out.ok());
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(
        v["ok"] == false && v["error"].as_str().unwrap().contains("does not exist"),
        "{v}"
    );

    let out = c.daemon.cli(&["volume", "get", "vol", "no.such-option"]);
    assert!(
        !out.ok() && out.stderr.contains("'cairn volume get VOL all'"),
        "{out:?}"
    );
    assert_eq!(c.daemon.cli_ok(&["volume", "list"]), "No volumes present in cluster\n");

    // A usage mistake, with --json: JSON on stdout as well.
    let out = c.daemon.cli(&["--json", "volume", "bogus"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert!(
        v["ok"] == false && v["error"].as_str().unwrap().contains("bogus"),
        "{v}"
    );

    // No cairnd at the address: start one, or name another.
    let host = unique_host();
    let nobody = format!("{host}:{}", free_udp_port(&host));
    let out = std::process::Command::new(bin("cairn"))
        .arg("--state-dir")
        .arg(&c.daemon.state_dir)
        .args(["--node", &nobody, "volume", "info"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("cairnd is operational on {nobody}"))
            && err.contains("systemctl start cairnd")
            && err.contains("--node"),
        "{err}"
    );
}
