//! Watching long tasks: `volume heal VOL info summary --watch` and `volume
//! rebalance|remove-brick … status --watch` refresh until the task is done
//! and end with the one-shot report; on a terminal as a progress bar, in a
//! pipe as plain gluster text (scripts read it), with `--json` as JSON.

use cairn_tests::*;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `cairn --state-dir … --node … ARGS` as a command to spawn.
fn cairn(node: &Daemon, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin("cairn"));
    cmd.arg("--state-dir")
        .arg(&node.state_dir)
        .arg("--node")
        .arg(&node.addr)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// The same command on a pseudo-terminal (util-linux `script`), as a
/// person at a terminal runs it; stdout and stderr both arrive on stdout.
fn on_terminal(cmd: &Command) -> Command {
    let line: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect();
    let mut script = Command::new("script");
    script
        .args(["-q", "-e", "-c", &line.join(" "), "/dev/null"])
        .env("COLUMNS", "160")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    script
}

/// Waits for `child` (killing it after `limit`); its status and stdout.
fn finish(mut child: Child, limit: Duration) -> (bool, String) {
    let exited = poll(limit, || child.try_wait().ok().flatten());
    if exited.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("collecting output");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(exited.is_some(), "the watch did not end within {limit:?}:\n{text}");
    (out.status.success(), text)
}

/// Three nodes, `replica 2` volume `rv` on nodes 0 and 1, mounted from
/// node 2, with the self-heal daemon off so entries wait until we say.
fn replica_2_without_shd() -> (Pool, PathBuf) {
    let mut pool = Pool::new(3);
    let b0 = pool.brick(0, "b0");
    let b1 = pool.brick(1, "b1");
    pool.node(0)
        .cli_ok(&["volume", "create", "rv", "replica", "2", &b0, &b1, "force"]);
    pool.node(0).cli_ok(&["volume", "start", "rv"]);
    pool.node(0)
        .cli_ok(&["volume", "set", "rv", "cluster.self-heal-daemon", "off"]);
    let mnt = pool.mount(2, "rv", "mnt", "attribute-timeout=0,entry-timeout=0");
    (pool, mnt)
}

fn heal_count(pool: &Pool) -> u64 {
    let out = pool
        .node(0)
        .cli_ok(&["--json", "volume", "heal", "rv", "statistics", "heal-count"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("heal-count JSON");
    v["heal_statistics"]
        .as_array()
        .expect("bricks")
        .iter()
        .filter_map(|b| b["pending"].as_u64())
        .sum()
}

#[test]
fn heal_watch_refreshes_until_healed_as_text_or_as_a_bar() {
    let (mut pool, mnt) = replica_2_without_shd();
    std::fs::create_dir(mnt.join("d")).unwrap();
    pool.kill(1);
    for i in 0..40 {
        std::fs::write(mnt.join(format!("d/f{i}")), format!("written while b1 was away {i}")).unwrap();
    }
    pool.restart(1);
    assert!(heal_count(&pool) > 0, "nothing to heal");

    let summary = ["volume", "heal", "rv", "info", "summary", "--watch"];
    let piped = cairn(pool.node(0), &summary).spawn().unwrap();
    let terminal = on_terminal(&cairn(pool.node(0), &summary)).spawn().unwrap();
    let json = cairn(pool.node(0), &[&["--json"][..], &summary].concat())
        .spawn()
        .unwrap();
    // Nothing heals while the daemon is off: the watches keep refreshing.
    std::thread::sleep(Duration::from_secs(5));
    pool.node(0)
        .cli_ok(&["volume", "set", "rv", "cluster.self-heal-daemon", "on"]);
    pool.node(0).cli_ok(&["volume", "heal", "rv"]);

    let (ok, text) = finish(piped, Duration::from_secs(120));
    assert!(ok, "{text}");
    assert!(
        text.contains("entries left; refreshing every 2 s"),
        "no refresh in the piped watch:\n{text}"
    );
    assert!(!text.contains('\x1b'), "terminal codes in a pipe:\n{text}");
    let last = text.rsplit("refreshing every 2 s (Ctrl-C stops) --").next().unwrap();
    assert_eq!(last.matches("Total Number of entries: 0").count(), 2, "{text}");

    let (ok, screen) = finish(terminal, Duration::from_secs(60));
    assert!(ok, "{screen}");
    assert!(
        screen.contains("heal") && screen.contains("entries left, 0 in split-brain"),
        "no progress bar on the terminal:\n{screen}"
    );
    assert!(!screen.contains("refreshing every"), "{screen}");
    assert_eq!(screen.matches("Total Number of entries: 0").count(), 2, "{screen}");

    let (ok, out) = finish(json, Duration::from_secs(60));
    assert!(ok, "{out}");
    let docs: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&out)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("--json watch is not a stream of JSON documents: {e}\n{out}"));
    let last = docs.last().expect("a final report");
    let bricks = last["heal_summary"].as_array().expect("heal_summary");
    assert!(last["ok"] == true && bricks.iter().all(|b| b["total"] == 0), "{last}");
}

#[test]
fn rebalance_and_remove_brick_watches_end_with_the_final_report() {
    let c = Cluster::new();
    for d in 0..4 {
        std::fs::create_dir(c.p(format!("d{d}"))).unwrap();
        for i in 0..100 {
            std::fs::write(c.p(format!("d{d}/f{i}")), vec![b'x'; 1 + i * 100]).unwrap();
        }
    }
    let second = c.daemon.brick_arg(&c.dir.join("brick2"));
    c.daemon.cli_ok(&["volume", "add-brick", "vol", &second, "force"]);
    c.daemon.cli_ok(&["volume", "rebalance", "vol", "start"]);
    let status = ["volume", "rebalance", "vol", "status", "--watch"];
    let terminal = on_terminal(&cairn(&c.daemon, &status)).spawn().unwrap();
    let (ok, text) = finish(cairn(&c.daemon, &status).spawn().unwrap(), Duration::from_secs(120));
    assert!(ok, "{text}");
    let last = text.rsplit("refreshing every 2 s (Ctrl-C stops) --").next().unwrap();
    assert!(
        last.contains("Rebalanced-files") && last.contains("completed") && !last.contains("in progress"),
        "{text}"
    );
    assert!(last.contains("volume rebalance: vol: success"), "{text}");
    let (ok, screen) = finish(terminal, Duration::from_secs(60));
    assert!(ok && screen.contains("completed"), "{screen}");
    let out = c.daemon.cli_ok(&["--json", "volume", "rebalance", "vol", "status"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(
        v["ok"] == true && v["rebalance"]["nodes"][0]["state"] == "Completed",
        "{v}"
    );
    assert!(!screen.contains("refreshing every"), "{screen}");

    c.daemon.cli_ok(&["volume", "remove-brick", "vol", &second, "start"]);
    let (ok, text) = finish(
        cairn(
            &c.daemon,
            &["volume", "remove-brick", "vol", &second, "status", "--watch"],
        )
        .spawn()
        .unwrap(),
        Duration::from_secs(120),
    );
    assert!(ok, "{text}");
    let last = text.rsplit("refreshing every 2 s (Ctrl-C stops) --").next().unwrap();
    assert!(last.contains("completed") && !last.contains("in progress"), "{text}");
    let out = c.daemon.cli_ok(&["volume", "remove-brick", "vol", &second, "commit"]);
    assert!(out.contains("success"), "{out}");
    // Every file is still there once the mount follows the new spec.
    let count = || {
        (0..4)
            .map(|d| std::fs::read_dir(c.p(format!("d{d}"))).unwrap().count())
            .sum::<usize>()
    };
    let all = poll(Duration::from_secs(20), || (count() == 400).then_some(()));
    assert!(all.is_some(), "{} of 400 files after the remove-brick", count());

    // --watch is a status-only flag.
    let bad = c.daemon.cli(&["volume", "rebalance", "vol", "start", "--watch"]);
    assert!(!bad.ok() && bad.stderr.contains("status only"), "{bad:?}");
}
