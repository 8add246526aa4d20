//! Brick changes end to end: remove-brick drains a replica set before
//! commit drops it (hard links included); replace-brick swaps a dead brick
//! for an empty one that self-heal fills; a higher replica count is filled
//! by heal while a file held open keeps being written.

mod growth;

use cairn_tests::*;
use growth::*;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::time::Duration;

/// remove-brick drains a replica set onto the others; commit is refused
/// until that is done, then drops it with every file still readable.
#[test]
fn remove_brick_drains_a_set_before_commit() {
    let mut pool = Pool::new(3);
    let bricks: Vec<String> = (0..4).map(|i| pool.brick(i % 3, &format!("r{i}"))).collect();
    let mut args = vec!["volume", "create", "rm", "replica", "2"];
    args.extend(bricks.iter().map(String::as_str));
    args.push("force");
    pool.node(0).cli_ok(&args);
    pool.node(0).cli_ok(&["volume", "start", "rm"]);
    let mnt = pool.mount(0, "rm", "mnt", "attribute-timeout=0,entry-timeout=0");
    populate(&mnt);
    let before = snapshot(&mnt);
    assert!(!data_files(&pool.brick_dir("r2")).is_empty());

    let leaving = [bricks[2].as_str(), bricks[3].as_str()];
    let bad = pool.node(0).cli(&["volume", "remove-brick", "rm", leaving[0], "start"]);
    assert!(!bad.ok(), "half a replica set was accepted: {}", bad.stdout);
    let early = pool
        .node(0)
        .cli(&["volume", "remove-brick", "rm", leaving[0], leaving[1], "commit"]);
    assert!(!early.ok(), "commit without a drain was accepted: {}", early.stdout);

    pool.node(1)
        .cli_ok(&["volume", "remove-brick", "rm", leaving[0], leaving[1], "start"]);
    let status = ["volume", "remove-brick", "rm", leaving[0], leaving[1], "status"];
    let rows = wait_completed(&pool, &status, Duration::from_secs(240));
    assert_eq!(
        sum(&rows, "failures") + sum(&rows, "skipped"),
        0,
        "{rows:#?}\n{}",
        warnings(&pool)
    );
    let left = data_files(&pool.brick_dir("r2"));
    assert!(left.is_empty(), "files left on the leaving set: {left:?}");
    let out = pool
        .node(2)
        .cli_ok(&["volume", "remove-brick", "rm", leaving[0], leaving[1], "commit"]);
    assert!(out.contains("Check the removed bricks"), "{out}");
    let info = pool.node(0).info_json().to_string();
    assert!(!info.contains("/r2") && !info.contains("/r3"), "{info}");
    std::thread::sleep(Duration::from_secs(6)); // the mount's spec poll
    let after = snapshot(&mnt);
    for (k, v) in &before {
        assert_eq!(after.get(k), Some(v), "{k} after remove-brick");
    }
    assert_eq!(std::fs::metadata(mnt.join("d1/linked")).unwrap().nlink(), 2);
    std::fs::write(mnt.join("d1/linked"), b"still one file").unwrap();
    assert_eq!(std::fs::read(mnt.join("d1/linked-too")).unwrap(), b"still one file");
}

/// A dead brick is swapped for an empty one; self-heal fills it.
#[test]
fn replace_brick_swaps_a_dead_brick_and_heals_it() {
    let mut pool = Pool::new(3);
    let (b0, b1) = (pool.brick(0, "p0"), pool.brick(1, "p1"));
    pool.node(0)
        .cli_ok(&["volume", "create", "rp", "replica", "2", &b0, &b1, "force"]);
    pool.node(0).cli_ok(&["volume", "start", "rp"]);
    let mnt = pool.mount(0, "rp", "mnt", "attribute-timeout=0,entry-timeout=0");
    for i in 0..100 {
        std::fs::write(mnt.join(format!("f{i}")), format!("{i}").repeat(100)).unwrap();
    }
    pool.kill(1);
    for i in 100..150 {
        std::fs::write(mnt.join(format!("f{i}")), format!("{i}").repeat(100)).unwrap();
    }
    let new = pool.brick(2, "p2");
    let bad = pool.node(0).cli(&["volume", "replace-brick", "rp", &b1, &new, "start"]);
    assert!(!bad.ok());
    let out = pool
        .node(0)
        .cli_ok(&["volume", "replace-brick", "rp", &b1, &new, "commit", "force"]);
    assert!(out.contains("successful"), "{out}");
    let healed = poll(Duration::from_secs(120), || {
        (brick_tree(&pool.brick_dir("p2")) == brick_tree(&pool.brick_dir("p0"))).then_some(())
    });
    if healed.is_none() {
        panic!(
            "the new brick was not filled: {:?}",
            tree_difference(&brick_tree(&pool.brick_dir("p0")), &brick_tree(&pool.brick_dir("p2")))
        );
    }
    for i in 0..150 {
        assert_eq!(
            std::fs::read_to_string(mnt.join(format!("f{i}"))).unwrap(),
            format!("{i}").repeat(100)
        );
    }
}

/// `add-brick VOL replica 3 BRICK`: the new replica is filled by a full
/// heal, and a file held open across the change keeps being written to
/// every replica.
#[test]
fn raising_the_replica_count_fills_the_new_replica() {
    let mut pool = Pool::new(3);
    let (b0, b1) = (pool.brick(0, "q0"), pool.brick(1, "q1"));
    pool.node(0)
        .cli_ok(&["volume", "create", "qv", "replica", "2", &b0, &b1, "force"]);
    pool.node(0).cli_ok(&["volume", "start", "qv"]);
    let mnt = pool.mount(0, "qv", "mnt", "attribute-timeout=0,entry-timeout=0");
    std::fs::create_dir(mnt.join("d")).unwrap();
    for i in 0..60 {
        std::fs::write(mnt.join(format!("d/f{i}")), format!("{i}").repeat(1000)).unwrap();
    }
    let open = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(mnt.join("held"))
        .unwrap();
    open.write_all_at(&block_of(0), 0).unwrap();
    let b2 = pool.brick(2, "q2");
    let out = pool
        .node(1)
        .cli_ok(&["volume", "add-brick", "qv", "replica", "3", &b2, "force"]);
    assert!(out.contains("success"), "{out}");
    let info = pool.node(0).info_json().to_string();
    assert!(info.contains("q2"), "{info}");
    std::thread::sleep(Duration::from_secs(6)); // the mount's spec poll
    for n in 1..8 {
        open.write_all_at(&block_of(n), n * BLOCK).unwrap();
    }
    open.sync_all().unwrap();
    drop(open);
    let same = poll(Duration::from_secs(120), || {
        let want = brick_tree(&pool.brick_dir("q0"));
        (brick_tree(&pool.brick_dir("q1")) == want && brick_tree(&pool.brick_dir("q2")) == want).then_some(())
    });
    if same.is_none() {
        panic!(
            "the new replica was not filled: {:?}\n{}",
            tree_difference(&brick_tree(&pool.brick_dir("q0")), &brick_tree(&pool.brick_dir("q2"))),
            warnings(&pool)
        );
    }
    let data = std::fs::read(pool.brick_dir("q2").join("held")).unwrap();
    assert_eq!(data.len() as u64, 8 * BLOCK);
}
