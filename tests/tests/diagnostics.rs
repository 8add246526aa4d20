//! What administrators watch: `volume profile`, `volume top` and the
//! Prometheus metrics endpoint, checked after a known workload.

use cairn_tests::*;
use std::io::{Read, Write};

fn scrape(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn profile_top_and_metrics_reflect_a_known_workload() {
    preflight();
    watchdog();
    let tmp = temp_dir("cairn-diag-");
    let dir = tmp.path();
    let metrics = format!(
        "127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    );
    let daemon = Daemon::start_with(&dir.join("state"), &dir.join("cairnd.log"), &["--metrics", &metrics]);
    daemon.create_started_volume("vol", &dir.join("brick"));
    let client_metrics = format!(
        "127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    );
    let mut m = Mount::new(
        &daemon,
        "vol",
        &dir.join("mnt"),
        &dir.join("mnt.log"),
        &format!("metrics={client_metrics}"),
    );
    daemon.cli_ok(&["volume", "profile", "vol", "start"]);
    let again = daemon.cli(&["volume", "profile", "vol", "start"]);
    assert!(!again.ok() && again.stderr.contains("already started"), "{again:?}");

    // The workload: 3 files written in 64 KiB blocks, one of them read 5 times.
    std::fs::create_dir(m.p("w")).unwrap();
    for i in 0..3 {
        // Four write(2) calls each: without writeback caching, each is one
        // 64 KiB FUSE write.
        let mut f = std::fs::File::create(m.p(format!("w/f{i}"))).unwrap();
        for _ in 0..4 {
            f.write_all(&[7u8; 65536]).unwrap();
        }
    }
    for _ in 0..5 {
        let _ = std::fs::read(m.p("w/f1")).unwrap();
    }
    assert_eq!(std::fs::read_dir(m.p("w")).unwrap().count(), 3);

    let info = daemon.cli_ok(&["volume", "profile", "vol", "info"]);
    for needle in [
        "Cumulative Stats:",
        "Interval 0 Stats:",
        "CREATE",
        "WRITE",
        "65536b+",
        "Data Written: 786432 bytes",
    ] {
        assert!(info.contains(needle), "profile info lacks {needle:?}:\n{info}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&daemon.cli_ok(&["--json", "volume", "profile", "vol", "info"])).unwrap();
    let creates = json["profile"][0]["cumulative"]["fops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["op"] == "CREATE")
        .map(|f| f["calls"].as_u64().unwrap());
    assert_eq!(creates, Some(3), "{json}");

    let top = daemon.cli_ok(&["volume", "top", "vol", "open", "list-cnt", "1"]);
    assert!(
        top.lines()
            .any(|l| l.ends_with("/w/f1") && (l.starts_with('5') || l.starts_with('6'))),
        "top open:\n{top}"
    );
    // Every file written, four 64 KiB writes each.
    let top = daemon.cli_ok(&["volume", "top", "vol", "write", "list-cnt", "3"]);
    for i in 0..3 {
        assert!(
            top.lines().any(|l| l.ends_with(&format!("/w/f{i}"))),
            "top write lacks f{i}:\n{top}"
        );
    }
    for metric in ["opendir", "readdir"] {
        let top = daemon.cli_ok(&["volume", "top", "vol", metric]);
        assert!(
            top.starts_with("Brick: ") && top.lines().any(|l| l.ends_with("\t/w") || l.ends_with("\t\t/w")),
            "top {metric}:\n{top}"
        );
    }
    let perf = daemon.cli_ok(&["volume", "top", "vol", "write-perf", "bs", "65536", "count", "16"]);
    assert!(perf.contains("Throughput") && perf.contains("MBps"), "{perf}");
    let bad = daemon.cli(&["volume", "top", "vol", "bogus"]);
    assert!(!bad.ok() && bad.stderr.lines().count() == 1, "{bad:?}");

    let body = scrape(&metrics, "/metrics");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    let creates: u64 = body
        .lines()
        .filter(|l| l.starts_with("cairn_fop_calls_total{") && l.contains("op=\"create\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(creates, 3, "{body}");
    assert!(body.contains("cairn_fop_duration_seconds_bucket{") && body.contains("le=\"+Inf\""));
    assert!(
        body.lines()
            .any(|l| l.starts_with("cairn_connections ") && !l.ends_with(" 0")),
        "no connection counted"
    );
    assert!(scrape(&metrics, "/nope").starts_with("HTTP/1.1 404"));
    let heal_queue = body
        .lines()
        .find(|l| l.starts_with("cairn_heal_pending_entries{brick="))
        .unwrap_or_else(|| panic!("no heal queue length:\n{body}"));
    assert!(heal_queue.ends_with(" 0"), "{heal_queue}");

    // The mount's own view of the same workload.
    let body = scrape(&client_metrics, "/metrics");
    let value = |prefix: &str| -> u64 {
        body.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in:\n{body}"))
    };
    assert_eq!(value("cairn_client_written_bytes_total{"), 786432);
    assert!(value("cairn_client_read_bytes_total{") >= 262144);
    assert!(
        body.contains("op=\"create\"") && body.contains("cairn_client_fop_duration_seconds_bucket{"),
        "{body}"
    );
    let link = format!("node=\"{}\"}} 1", daemon.addr);
    assert!(
        body.lines()
            .any(|l| l.starts_with("cairn_client_node_connected{") && l.ends_with(&link)),
        "no connected node in:\n{body}"
    );

    daemon.cli_ok(&["volume", "profile", "vol", "stop"]);
    let after = daemon.cli(&["volume", "profile", "vol", "info"]);
    assert!(!after.ok() && after.stderr.contains("not started"), "{after:?}");

    // A rebalance's progress, as this node's metrics show it.
    daemon.cli_ok(&[
        "volume",
        "add-brick",
        "vol",
        &daemon.brick_arg(&dir.join("brick2")),
        "force",
    ]);
    daemon.cli_ok(&["volume", "rebalance", "vol", "start"]);
    let scanned = |body: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix("cairn_rebalance_scanned_total{volume=\"vol\"} "))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Finished: not running, and every file looked at.
    let done = poll(std::time::Duration::from_secs(60), || {
        let body = scrape(&metrics, "/metrics");
        (body.contains("cairn_rebalance_running{volume=\"vol\"} 0") && scanned(&body) >= 3).then_some(body)
    })
    .unwrap_or_else(|| panic!("rebalance never shown finished:\n{}", scrape(&metrics, "/metrics")));
    assert!(done.contains("# TYPE cairn_rebalance_files_total counter"), "{done}");
    m.unmount();
}
