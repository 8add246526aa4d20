//! Elastic growth end to end: a replicated volume grows from one replica
//! set to two and three (add-brick) and is rebalanced while an application
//! keeps a file open and writes it and another keeps creating files; the
//! rebalance is stopped and started again, and a node running it is
//! SIGKILLed and restarted. Every file is checked before and after; files
//! sit where the layout says; no link file is left for a file that moved.
//! And the rebalance finds files that lookups cannot (a lost link file, a
//! file copied straight into a brick).

mod growth;

use cairn_tests::*;
use growth::*;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

#[test]
fn a_volume_grows_and_rebalances_while_in_use() {
    let mut pool = Pool::new(3);
    let (b0, b1) = (pool.brick(0, "b0"), pool.brick(1, "b1"));
    pool.node(0)
        .cli_ok(&["volume", "create", "gv", "replica", "2", &b0, &b1, "force"]);
    pool.node(0).cli_ok(&["volume", "start", "gv"]);
    let mnt = pool.mount(2, "gv", "mnt", "attribute-timeout=0,entry-timeout=0");
    populate(&mnt);
    let before = snapshot(&mnt);

    // Rebalance refuses a volume with a single subvolume.
    let one = pool.node(0).cli(&["volume", "rebalance", "gv", "start"]);
    assert!(!one.ok(), "rebalance of a 1 x 2 volume: {}", one.stdout);

    // 1 x 2 → 2 x 2. New files in old directories stay on the old set
    // until the layout is fixed.
    let (b2, b3) = (pool.brick(2, "b2"), pool.brick(0, "b3"));
    let out = pool.node(1).cli_ok(&["volume", "add-brick", "gv", &b2, &b3, "force"]);
    assert!(out.contains("success"), "{out}");
    let info = pool.node(0).info_json().to_string();
    assert!(info.contains("b3"), "{info}");
    std::thread::sleep(Duration::from_secs(6)); // the mount's spec poll
    std::fs::write(mnt.join("d2/after-add"), b"placed by the old layout").unwrap();
    assert!(
        data_files(&pool.brick_dir("b2")).is_empty(),
        "a new set took files before a fix-layout"
    );

    let load = Load::start(&mnt);
    std::thread::sleep(Duration::from_secs(1));
    let started = Instant::now();
    let out = pool.node(0).cli_ok(&["volume", "rebalance", "gv", "start"]);
    assert!(out.contains("ID"), "{out}");
    let rows = wait_completed(
        &pool,
        &["volume", "rebalance", "gv", "status"],
        Duration::from_secs(240),
    );
    let took = started.elapsed();
    let status = pool.node(1).cli_ok(&["volume", "rebalance", "gv", "status"]);
    assert!(
        status.contains("Rebalanced-files") && status.contains("completed"),
        "{status}"
    );
    load.finish(&mnt);
    let files = sum(&rows, "files");
    assert!(files >= 150, "only {files} files moved: {rows:#?}");
    assert_eq!(sum(&rows, "failures"), 0, "{rows:#?}\n{}", warnings(&pool));
    eprintln!(
        "rebalance 1x2 → 2x2: {files} files, {} bytes in {took:?}",
        sum(&rows, "bytes")
    );

    let mut want = before.clone();
    want.insert("d2/after-add".into(), snapshot(&mnt)["d2/after-add"]);
    let after = snapshot(&mnt);
    for (k, v) in &want {
        assert_eq!(after.get(k), Some(v), "{k} changed in the rebalance");
    }
    assert_eq!(xattr(&mnt.join("d0/special"), c"user.colour"), b"blue");
    assert_eq!(
        std::fs::metadata(mnt.join("d0/special")).unwrap().mode() & 0o7777,
        0o640
    );
    assert_eq!(std::fs::metadata(mnt.join("d1/linked")).unwrap().nlink(), 2);
    let sparse = std::fs::metadata(mnt.join("sparse.img")).unwrap();
    assert!(sparse.blocks() * 512 < 4 << 20, "the sparse file lost its holes");

    // Both sets hold their share (equal bricks: half each, ±5 %), and
    // replicas agree.
    assert_placed_by_layout(&pool, &["b0", "b2"]);
    let s = shares(&pool, &["b0", "b2"]);
    assert!(s.iter().all(|x| (x - 0.5).abs() <= 0.1), "spread {s:?}");
    assert_eq!(brick_tree(&pool.brick_dir("b2")), brick_tree(&pool.brick_dir("b3")));
    assert_eq!(brick_tree(&pool.brick_dir("b0")), brick_tree(&pool.brick_dir("b1")));
    // Moved files left no link file; only the hard-linked pair is reached
    // through one (skipped, as gluster does).
    for b in ["b0", "b2"] {
        let links = link_files(&pool.brick_dir(b));
        assert!(
            links.iter().all(|l| l.contains("linked")),
            "link files left on {b}: {links:?}"
        );
    }

    // 2 x 2 → 3 x 2; the rebalance is stopped midway and started again,
    // and a node running a worker is killed and restarted on the way.
    let (b4, b5) = (pool.brick(1, "b4"), pool.brick(2, "b5"));
    pool.node(0).cli_ok(&["volume", "add-brick", "gv", &b4, &b5, "force"]);
    let out = pool.node(0).cli_ok(&["volume", "rebalance", "gv", "start"]);
    assert!(out.contains("ID"), "{out}");
    std::thread::sleep(Duration::from_secs(2));
    pool.node(0).cli_ok(&["volume", "rebalance", "gv", "stop"]);
    let stopped = poll(Duration::from_secs(30), || {
        let rows = status_rows(&pool, &["volume", "rebalance", "gv", "status"])?;
        rows.iter()
            .all(|r| matches!(r["state"].as_str(), Some("Stopped" | "Completed")))
            .then_some(())
    });
    assert!(stopped.is_some(), "rebalance did not stop");
    pool.node(0).cli_ok(&["volume", "rebalance", "gv", "start"]);
    std::thread::sleep(Duration::from_secs(3));
    pool.kill(1);
    std::thread::sleep(Duration::from_secs(2));
    pool.restart(1);
    let status = ["volume", "rebalance", "gv", "status"];
    let rows = wait_completed(&pool, &status, Duration::from_secs(300));
    if sum(&rows, "failures") > 0 {
        // Files whose brick was down were left where they were (and the
        // layout not settled): a second run moves them, as an
        // administrator would do after reading the status.
        pool.node(0).cli_ok(&["volume", "rebalance", "gv", "start"]);
        let rows = wait_completed(&pool, &status, Duration::from_secs(300));
        assert_eq!(sum(&rows, "failures"), 0, "{rows:#?}\n{}", warnings(&pool));
    }
    let after = snapshot(&mnt);
    for (k, v) in &want {
        assert_eq!(after.get(k), Some(v), "{k} changed in the second rebalance");
    }
    assert_placed_by_layout(&pool, &["b0", "b2", "b4"]);
    let s = shares(&pool, &["b0", "b2", "b4"]);
    assert!(s.iter().all(|x| (x - 1.0 / 3.0).abs() <= 0.1), "spread {s:?}");
}

/// gluster users' "rebalance brings back an accidentally deleted file": a
/// file whose link file was removed on a brick, and a file copied straight
/// into a brick off its hashed subvolume, cannot be found by name in a
/// settled directory; the rebalance finds both on the bricks and moves
/// them where their names hash, after which they resolve.
#[test]
fn rebalance_brings_back_files_lookups_cannot_find() {
    let mut pool = Pool::new(2);
    let (b0, b1) = (pool.brick(0, "o0"), pool.brick(1, "o1"));
    pool.node(0).cli_ok(&["volume", "create", "ov", &b0, &b1, "force"]);
    pool.node(0).cli_ok(&["volume", "start", "ov"]);
    let mnt = pool.mount(0, "ov", "mnt", "attribute-timeout=0,entry-timeout=0,negative-timeout=0");
    std::fs::create_dir(mnt.join("A")).unwrap();
    for i in 0..40 {
        std::fs::write(mnt.join(format!("A/f{i}")), format!("{i}")).unwrap();
    }
    // A rename leaves the data where it was and a link file where the new
    // name hashes; find one whose new name hashes to the other brick.
    let bricks = [pool.brick_dir("o0"), pool.brick_dir("o1")];
    let mut moved = None;
    for i in 0..40 {
        let (from, to) = (format!("A/f{i}"), format!("A/moved{i}"));
        std::fs::rename(mnt.join(&from), mnt.join(&to)).unwrap();
        let data = bricks
            .iter()
            .position(|b| std::fs::symlink_metadata(b.join(&to)).is_ok_and(|m| m.mode() & 0o7777 != 0o1000));
        let link = bricks
            .iter()
            .position(|b| std::fs::symlink_metadata(b.join(&to)).is_ok_and(|m| m.mode() & 0o7777 == 0o1000));
        if let (Some(d), Some(l)) = (data, link) {
            moved = Some((to, i, d, l));
            break;
        }
    }
    let (moved, n, data_at, link_at) = moved.expect("a rename that made a link file");
    // The link file is "cleaned up" on the brick.
    std::fs::remove_file(bricks[link_at].join(&moved)).unwrap();
    // And a file is copied straight into both bricks' copies of A (on
    // one of them it is off its hashed brick).
    std::fs::write(bricks[0].join("A/orphan0"), b"zero").unwrap();
    std::fs::write(bricks[1].join("A/orphan1"), b"one").unwrap();
    // A settled directory trusts its hashed subvolume: the name is lost.
    expect_errno(
        std::fs::metadata(mnt.join(&moved)),
        libc::ENOENT,
        "stat of the unlinked link's file",
    );
    pool.node(0).cli_ok(&["volume", "rebalance", "ov", "start"]);
    let rows = wait_completed(
        &pool,
        &["volume", "rebalance", "ov", "status"],
        Duration::from_secs(120),
    );
    assert_eq!(sum(&rows, "failures"), 0, "{rows:#?}\n{}", warnings(&pool));
    std::thread::sleep(Duration::from_secs(6)); // the mount's spec poll
    assert_eq!(
        std::fs::read_to_string(mnt.join(&moved)).unwrap(),
        format!("{n}"),
        "the file whose link file was lost"
    );
    assert_eq!(std::fs::read(mnt.join("A/orphan0")).unwrap(), b"zero");
    assert_eq!(std::fs::read(mnt.join("A/orphan1")).unwrap(), b"one");
    // The lost file now lives where its name hashes, with no link file.
    let m = std::fs::symlink_metadata(bricks[link_at].join(&moved)).expect("moved to its hashed brick");
    assert_ne!(m.mode() & 0o7777, 0o1000);
    assert!(!bricks[data_at].join(&moved).exists());

    // Draining that brick moves the file back where it came from (whose
    // brick still remembers it moved away) and everything else with it.
    let leaving = [b0.as_str(), b1.as_str()][link_at];
    pool.node(0).cli_ok(&["volume", "remove-brick", "ov", leaving, "start"]);
    let status = ["volume", "remove-brick", "ov", leaving, "status"];
    let rows = wait_completed(&pool, &status, Duration::from_secs(120));
    assert_eq!(
        sum(&rows, "failures") + sum(&rows, "skipped"),
        0,
        "{rows:#?}\n{}",
        warnings(&pool)
    );
    pool.node(0)
        .cli_ok(&["volume", "remove-brick", "ov", leaving, "commit"]);
    std::thread::sleep(Duration::from_secs(6)); // the mount's spec poll
    assert_eq!(std::fs::read_to_string(mnt.join(&moved)).unwrap(), format!("{n}"));
    for i in (0..40).filter(|&i| i != n) {
        let name = if i < n {
            format!("A/moved{i}")
        } else {
            format!("A/f{i}")
        };
        assert_eq!(
            std::fs::read_to_string(mnt.join(&name)).unwrap(),
            format!("{i}"),
            "{name}"
        );
    }
    assert_eq!(std::fs::read(mnt.join("A/orphan0")).unwrap(), b"zero");
    assert_eq!(std::fs::read(mnt.join("A/orphan1")).unwrap(), b"one");
    assert!(data_files(&bricks[link_at]).is_empty());
}
