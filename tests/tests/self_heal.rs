//! The self-heal daemon end to end: a brick's node dies, the volume
//! changes a lot meanwhile, the node comes back and the daemons heal it
//! with nobody asking — while an application keeps reading and writing —
//! copying only the blocks that changed; an emptied brick is rebuilt by a
//! full heal. Replicas end byte-identical, metadata included.

use cairn_tests::*;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const MIB: usize = 1 << 20;
const BIG: usize = 32 * MIB;

/// Three nodes (the pool keeps its majority when one dies), a `replica 2`
/// volume `rv` on nodes 0 and 1, mounted from node 2.
fn replica_2() -> (Pool, PathBuf) {
    let mut pool = Pool::new(3);
    let b0 = pool.brick(0, "b0");
    let b1 = pool.brick(1, "b1");
    pool.node(0)
        .cli_ok(&["volume", "create", "rv", "replica", "2", &b0, &b1, "force"]);
    pool.node(0).cli_ok(&["volume", "start", "rv"]);
    let mnt = pool.mount(2, "rv", "mnt", "attribute-timeout=0,entry-timeout=0");
    (pool, mnt)
}

fn heal_stats(pool: &Pool) -> serde_json::Value {
    let out = pool.node(0).cli_ok(&["--json", "volume", "heal", "rv", "statistics"]);
    serde_json::from_str(&out).expect("statistics JSON")
}

/// Entries left in every brick's heal index (None if a node did not say).
fn heal_count(pool: &Pool) -> Option<u64> {
    heal_stats(pool)["heal_statistics"]
        .as_array()?
        .iter()
        .map(|b| b["pending"].as_u64())
        .sum()
}

/// File data the daemons copied, over every crawl of every brick.
fn healed_bytes(pool: &Pool) -> u64 {
    heal_stats(pool)["heal_statistics"]
        .as_array()
        .expect("bricks")
        .iter()
        .flat_map(|b| b["crawls"].as_array().cloned().unwrap_or_default())
        .map(|c| c["bytes"].as_u64().unwrap_or(0))
        .sum()
}

fn wait_until_healed(pool: &Pool, limit: Duration) {
    let done = poll(limit, || (heal_count(pool) == Some(0)).then_some(()));
    if done.is_none() {
        let info = pool.node(0).cli(&["volume", "heal", "rv", "info"]).stdout;
        panic!("heal count never reached zero:\n{info}");
    }
}

fn assert_replicas_equal(pool: &Pool) {
    let a = brick_tree(&pool.brick_dir("b0"));
    let b = brick_tree(&pool.brick_dir("b1"));
    if let Some(d) = tree_difference(&a, &b) {
        panic!("the replicas differ: {d}");
    }
}

#[test]
fn a_returning_brick_is_healed_by_the_daemon_while_files_are_in_use() {
    let (mut pool, mnt) = replica_2();
    let status = pool.node(0).cli_ok(&["volume", "status", "rv"]);
    assert_eq!(status.matches("Self-heal Daemon on").count(), 2, "{status}");
    // Before: files that will change, go, be renamed; a big file.
    for d in ["keep", "gone", "ren"] {
        std::fs::create_dir(mnt.join(d)).unwrap();
    }
    for i in 0..200 {
        write_file(&mnt.join(format!("keep/f{i}")), &pattern(i, 4096));
    }
    for i in 0..50 {
        write_file(&mnt.join(format!("gone/f{i}")), b"bye");
    }
    for i in 0..20 {
        write_file(&mnt.join(format!("ren/f{i}")), &pattern(1000 + i, 100));
    }
    let mut big = pattern(7, BIG);
    write_file(&mnt.join("big"), &big);

    pool.kill(1);
    // While node 1 is away: ~1,500 changes.
    let mut changed_bytes = 0;
    for i in 0..100 {
        let data = pattern(5000 + i, 4096);
        write_file(&mnt.join(format!("keep/f{i}")), &data);
        changed_bytes += data.len();
    }
    for i in 100..150 {
        std::fs::set_permissions(mnt.join(format!("keep/f{i}")), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    for d in 0..10 {
        let dir = mnt.join(format!("new/d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..100 {
            let data = pattern(d * 1000 + i, 1 + (i as usize * 37) % 8192);
            changed_bytes += data.len();
            write_file(&dir.join(format!("f{i}")), &data);
        }
    }
    for i in 0..20 {
        std::fs::rename(mnt.join(format!("ren/f{i}")), mnt.join(format!("ren/g{i}"))).unwrap();
    }
    for i in 0..50 {
        std::fs::remove_file(mnt.join(format!("gone/f{i}"))).unwrap();
    }
    std::fs::remove_dir(mnt.join("gone")).unwrap();
    // The big file changes in two places (1.25 MiB of 32).
    let f = std::fs::OpenOptions::new().write(true).open(mnt.join("big")).unwrap();
    for (at, len, seed) in [(8 * MIB, MIB, 11), (20 * MIB + 4096, 256 * 1024, 12)] {
        let data = pattern(seed, len);
        f.write_all_at(&data, at as u64).unwrap();
        big[at..at + len].copy_from_slice(&data);
    }
    drop(f);
    // A sparse file made while the brick was away: 4 KiB of data at 12 MiB.
    let sparse = std::fs::File::create(mnt.join("sparse")).unwrap();
    sparse.set_len(16 * MIB as u64).unwrap();
    sparse.write_all_at(&pattern(13, 4096), 12 * MIB as u64).unwrap();
    drop(sparse);
    assert!(heal_count(&pool).is_none(), "node 1 cannot answer for its brick");

    pool.restart(1);
    // Nobody asks for a heal. An application keeps writing the first MiB
    // of the big file and reading the rest (and other files) meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let head = Arc::new(Mutex::new(big[..MIB].to_vec()));
    let rounds = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, head, path) = (stop.clone(), head.clone(), mnt.join("big"));
        std::thread::spawn(move || {
            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let at = (n as usize * 4096 * 7) % (MIB - 4096);
                let data = pattern(90_000 + n, 4096);
                let mut h = head.lock().unwrap();
                f.write_all_at(&data, at as u64).expect("writing during heal");
                h[at..at + 4096].copy_from_slice(&data);
                drop(h);
                n += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let reader = {
        let (stop, rounds, mnt, want) = (stop.clone(), rounds.clone(), mnt.clone(), big[MIB..].to_vec());
        std::thread::spawn(move || {
            let f = std::fs::File::open(mnt.join("big")).unwrap();
            let mut buf = vec![0u8; want.len()];
            while !stop.load(Ordering::Relaxed) {
                f.read_exact_at(&mut buf, MIB as u64).expect("reading during heal");
                assert!(buf == want, "a read during heal saw stale data");
                for i in (0..200).step_by(17) {
                    let want = if i < 100 {
                        pattern(5000 + i, 4096)
                    } else {
                        pattern(i, 4096)
                    };
                    assert_eq!(
                        read_file(&mnt.join(format!("keep/f{i}"))),
                        want,
                        "keep/f{i} during heal"
                    );
                }
                rounds.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let healing = std::time::Instant::now();
    wait_until_healed(&pool, Duration::from_secs(120));
    eprintln!("healed in {:?} with the files in use", healing.elapsed());
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("the writer saw no error");
    reader.join().expect("the reader saw no error");
    assert!(rounds.load(Ordering::Relaxed) > 0, "the reader ran during heal");
    // The writer's last eager hold is released, then nothing is left.
    wait_until_healed(&pool, Duration::from_secs(30));
    big[..MIB].copy_from_slice(&head.lock().unwrap());
    assert!(
        read_file(&mnt.join("big")) == big,
        "the big file differs from what was written"
    );
    assert_replicas_equal(&pool);
    // Only changed blocks crossed: the big file's two changed ranges (in
    // 128 KiB blocks), the MiB the writer kept changing (its first writes
    // may precede the mount's reopen on the returned replica), the sparse
    // file's one block, the new and rewritten files — not 32 MiB.
    let copied = healed_bytes(&pool);
    let bound = (changed_bytes + MIB + 2 * 128 * 1024 + 256 * 1024 + MIB + 128 * 1024) as u64;
    assert!(
        copied >= MIB as u64 && copied <= bound,
        "heal copied {copied} bytes; changed data bounds it at {bound}"
    );
    // The sparse file stayed sparse on the healed brick.
    let healed = std::fs::metadata(pool.brick_dir("b1").join("sparse")).unwrap();
    assert_eq!(healed.len(), 16 * MIB as u64);
    assert!(
        healed.blocks() * 512 < MIB as u64,
        "{} blocks allocated",
        healed.blocks()
    );
    let stats = pool.node(1).cli_ok(&["volume", "heal", "rv", "statistics"]);
    assert!(stats.contains("Type of crawl: INDEX"), "{stats}");
    let count = pool
        .node(1)
        .cli_ok(&["volume", "heal", "rv", "statistics", "heal-count"]);
    assert_eq!(count.matches("Number of entries: 0").count(), 2, "{count}");
    let summary = pool.node(1).cli_ok(&["volume", "heal", "rv", "info", "summary"]);
    assert_eq!(summary.matches("Total Number of entries: 0").count(), 2, "{summary}");
}

#[test]
fn a_full_heal_rebuilds_an_emptied_brick() {
    let (mut pool, mnt) = replica_2();
    for d in 0..5 {
        let dir = mnt.join(format!("a{d}/b/c"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..40 {
            write_file(&dir.join(format!("f{i}")), &pattern(d * 100 + i, 1 + i as usize * 997));
        }
        std::os::unix::fs::symlink("c/f1", mnt.join(format!("a{d}/b/link"))).unwrap();
    }
    std::fs::set_permissions(mnt.join("a0/b"), std::fs::Permissions::from_mode(0o750)).unwrap();
    write_file(&mnt.join("top"), &pattern(1, 3 * MIB));

    // The disk of node 1's brick is replaced: empty, no marks.
    pool.kill(1);
    let b1 = pool.brick_dir("b1");
    std::fs::remove_dir_all(&b1).unwrap();
    std::fs::create_dir(&b1).unwrap();
    pool.restart(1);
    let status = pool.node(0).cli_ok(&["volume", "status", "rv"]);
    assert!(
        status.lines().any(|l| l.contains("/b1") && l.contains(" N ")),
        "an unmarked brick is not served:\n{status}"
    );
    // gluster's procedure: start force makes the brick again, heal full
    // rebuilds it (start force already asks the daemon for it).
    pool.node(0).cli_ok(&["volume", "start", "rv", "force"]);
    let out = pool.node(0).cli_ok(&["volume", "heal", "rv", "full"]);
    assert!(
        out.contains("Launching heal operation to perform full self heal on volume rv has been successful"),
        "{out}"
    );
    let same = poll(Duration::from_secs(90), || {
        let a = brick_tree(&pool.brick_dir("b0"));
        let b = brick_tree(&pool.brick_dir("b1"));
        tree_difference(&a, &b).is_none().then_some(())
    });
    if same.is_none() {
        assert_replicas_equal(&pool);
    }
    wait_until_healed(&pool, Duration::from_secs(30));
    let stats = pool.node(1).cli_ok(&["volume", "heal", "rv", "statistics"]);
    assert!(stats.contains("Type of crawl: FULL"), "{stats}");
    assert_eq!(read_file(&mnt.join("top")), pattern(1, 3 * MIB));
}

#[test]
fn the_heal_commands_check_what_they_are_given() {
    let (pool, _mnt) = replica_2();
    pool.node(0)
        .cli_ok(&["volume", "set", "rv", "cluster.self-heal-daemon", "off"]);
    let out = pool.node(0).cli(&["volume", "heal", "rv"]);
    assert!(!out.ok());
    assert!(out.stderr.contains("Self-heal-daemon is disabled"), "{}", out.stderr);
    let status = poll(Duration::from_secs(10), || {
        let s = pool.node(0).cli_ok(&["volume", "status", "rv"]);
        (!s.contains("Self-heal Daemon")).then_some(s)
    });
    assert!(status.is_some(), "the daemon line goes with the daemon");
    pool.node(0)
        .cli_ok(&["volume", "set", "rv", "cluster.self-heal-daemon", "on"]);
    let out = pool.node(0).cli_ok(&["volume", "heal", "rv"]);
    assert!(
        out.contains("index self heal on volume rv has been successful"),
        "{out}"
    );
    for bad in [
        vec!["volume", "heal", "rv", "sideways"],
        vec!["volume", "heal", "rv", "info", "summary", "--later"],
        vec!["volume", "heal", "nope"],
    ] {
        let out = pool.node(0).cli(&bad);
        assert!(!out.ok(), "{bad:?} succeeded");
        assert!(!out.stderr.is_empty(), "{bad:?} said nothing");
    }
    let out = pool.node(0).cli(&["volume", "set", "rv", "cluster.heal-timeout", "1"]);
    assert!(!out.ok(), "a 1 s sweep is refused");
}
