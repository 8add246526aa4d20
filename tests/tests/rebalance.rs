//! Elastic growth end to end: a replicated volume grows from one replica
//! set to two and three (add-brick), is rebalanced while an application
//! keeps a file open and writes it and another keeps creating files,
//! shrinks again (remove-brick start/commit), and swaps a dead brick for a
//! new one (replace-brick, then heal). Every file is checked before and
//! after; the spread follows the layout; no link file is left for a file
//! that moved; nothing acknowledged is lost when a rebalancing node is
//! SIGKILLed and restarted.

use cairn_tests::*;
use std::collections::BTreeMap;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BLOCK: u64 = 64 << 10;

/// Content of block `n` of the long-running writer's file.
fn block_of(n: u64) -> Vec<u8> {
    let mut v = vec![0u8; BLOCK as usize];
    for (i, b) in v.iter_mut().enumerate() {
        *b = ((n.wrapping_mul(31) + i as u64 / 7) % 251) as u8;
    }
    v
}

/// Every regular file below `root` (relative path → content hash, mode).
fn snapshot(root: &Path) -> BTreeMap<String, (u64, u32)> {
    use std::hash::{Hash, Hasher};
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display())) {
            let path = e.expect("entry").path();
            let m = std::fs::symlink_metadata(&path).expect("stat");
            if m.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let mut h = std::collections::hash_map::DefaultHasher::new();
            if m.file_type().is_symlink() {
                std::fs::read_link(&path).unwrap().hash(&mut h);
            } else {
                std::fs::read(&path)
                    .unwrap_or_else(|e| panic!("reading {rel}: {e}"))
                    .hash(&mut h);
            }
            out.insert(rel, (h.finish(), m.mode()));
        }
    }
    out
}

/// Data files (not link files) per brick directory, below the brick root.
fn data_files(brick: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![brick.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let rel = path.strip_prefix(brick).unwrap().display().to_string();
            if rel == ".cairn" {
                continue;
            }
            let m = std::fs::symlink_metadata(&path).unwrap();
            if m.is_dir() {
                stack.push(path);
            } else if m.mode() & 0o7777 != 0o1000 {
                out.push(rel);
            }
        }
    }
    out
}

/// Link files (mode ---------T) below a brick.
fn link_files(brick: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![brick.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let rel = path.strip_prefix(brick).unwrap().display().to_string();
            if rel == ".cairn" {
                continue;
            }
            let m = std::fs::symlink_metadata(&path).unwrap();
            if m.is_dir() {
                stack.push(path);
            } else if m.file_type().is_file() && m.mode() & 0o7777 == 0o1000 {
                out.push(rel);
            }
        }
    }
    out
}

/// The status rows (`--json`), from whichever node answers first.
fn status_rows(pool: &Pool, args: &[&str]) -> Option<Vec<serde_json::Value>> {
    for i in 0..pool.nodes.len() {
        let Some(node) = pool.nodes[i].as_ref() else { continue };
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let out = node.cli(&full);
        if !out.ok() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        return find_nodes(&v);
    }
    None
}

fn find_nodes(v: &serde_json::Value) -> Option<Vec<serde_json::Value>> {
    if let Some(n) = v.get("nodes").and_then(|n| n.as_array()) {
        return Some(n.clone());
    }
    match v {
        serde_json::Value::Object(m) => m.values().find_map(find_nodes),
        serde_json::Value::Array(a) => a.iter().find_map(find_nodes),
        _ => None,
    }
}

/// Waits until every node's row says `Completed`; returns the rows.
fn wait_completed(pool: &Pool, args: &[&str], limit: Duration) -> Vec<serde_json::Value> {
    let mut last = None;
    let done = poll(limit, || {
        let rows = status_rows(pool, args)?;
        last = Some(rows.clone());
        let states: Vec<&str> = rows.iter().filter_map(|r| r["state"].as_str()).collect();
        assert!(!states.contains(&"Failed"), "a node failed: {rows:#?}");
        (!rows.is_empty() && states.len() == rows.len() && states.iter().all(|s| *s == "Completed")).then_some(rows)
    });
    done.unwrap_or_else(|| panic!("not completed in {limit:?}: {last:#?}"))
}

/// Warnings and errors the nodes logged, for a failure message.
fn warnings(pool: &Pool) -> String {
    (0..pool.nodes.len())
        .flat_map(|i| {
            std::fs::read_to_string(pool.log(i))
                .unwrap_or_default()
                .lines()
                .filter(|l| (l.contains("WARN") || l.contains("ERROR")) && !l.contains("no leader"))
                .map(|l| format!("node {i}: {l}"))
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn sum(rows: &[serde_json::Value], key: &str) -> u64 {
    rows.iter().map(|r| r[key].as_u64().unwrap_or(0)).sum()
}

/// An application holding one file open and appending patterned blocks,
/// and another creating small files, until told to stop.
struct Load {
    stop: Arc<AtomicBool>,
    blocks: Arc<AtomicU64>,
    created: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(mnt: &Path) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let blocks = Arc::new(AtomicU64::new(0));
        let created = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        {
            let (stop, blocks) = (stop.clone(), blocks.clone());
            let path = mnt.join("live/stream.bin");
            threads.push(std::thread::spawn(move || {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .read(true)
                    .write(true)
                    .open(&path)
                    .expect("open the stream file");
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    f.write_all_at(&block_of(n), n * BLOCK)
                        .unwrap_or_else(|e| panic!("writing block {n} of the open file: {e}"));
                    n += 1;
                    blocks.store(n, Ordering::SeqCst);
                    if n % 16 == 0 {
                        f.sync_data().unwrap_or_else(|e| panic!("fsync of the open file: {e}"));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                f.sync_all().expect("final fsync");
            }));
        }
        {
            let (stop, created) = (stop.clone(), created.clone());
            let dir = mnt.join("live");
            threads.push(std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let p = dir.join(format!("new-{n:05}"));
                    std::fs::write(&p, format!("created while rebalancing #{n}\n").repeat(50))
                        .unwrap_or_else(|e| panic!("creating {}: {e}", p.display()));
                    n += 1;
                    created.store(n, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(15));
                }
            }));
        }
        Load {
            stop,
            blocks,
            created,
            threads,
        }
    }

    /// Stops both and checks every acknowledged block and file.
    fn finish(self, mnt: &Path) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("load thread panicked");
        }
        let blocks = self.blocks.load(Ordering::SeqCst);
        let data = std::fs::read(mnt.join("live/stream.bin")).expect("read the stream file");
        assert_eq!(data.len() as u64, blocks * BLOCK, "the open file lost its tail");
        for n in 0..blocks {
            let at = (n * BLOCK) as usize;
            assert!(
                data[at..at + BLOCK as usize] == block_of(n)[..],
                "block {n} of the file written during migration is wrong"
            );
        }
        for n in 0..self.created.load(Ordering::SeqCst) {
            let p = mnt.join(format!("live/new-{n:05}"));
            let got = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert_eq!(got, format!("created while rebalancing #{n}\n").repeat(50));
        }
    }
}

/// Three directories of small files, a sparse file, a file with an xattr
/// and odd mode, a hard-linked pair and a symlink.
fn populate(mnt: &Path) {
    for d in 0..3 {
        let dir = mnt.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..150 {
            std::fs::write(dir.join(format!("f{i:03}")), format!("file {d}/{i}\n").repeat(i + 1)).unwrap();
        }
    }
    std::fs::create_dir_all(mnt.join("live")).unwrap();
    let sparse = std::fs::File::create(mnt.join("sparse.img")).unwrap();
    sparse.write_all_at(b"head", 0).unwrap();
    sparse.write_all_at(b"tail", 24 << 20).unwrap();
    drop(sparse);
    let special = mnt.join("d0/special");
    std::fs::write(&special, b"with an xattr").unwrap();
    std::fs::set_permissions(&special, std::fs::Permissions::from_mode(0o640)).unwrap();
    let c = c_path(&special);
    let rc = unsafe { libc::setxattr(c.as_ptr(), c"user.colour".as_ptr(), b"blue".as_ptr().cast(), 4, 0) };
    assert_eq!(rc, 0, "setxattr: {}", std::io::Error::last_os_error());
    std::fs::write(mnt.join("d1/linked"), b"two names").unwrap();
    std::fs::hard_link(mnt.join("d1/linked"), mnt.join("d1/linked-too")).unwrap();
    std::os::unix::fs::symlink("d0/f001", mnt.join("to-f001")).unwrap();
}

fn xattr(p: &Path, name: &std::ffi::CStr) -> Vec<u8> {
    let c = c_path(p);
    let mut buf = [0u8; 64];
    let n = unsafe { libc::getxattr(c.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n >= 0, "getxattr {}: {}", p.display(), std::io::Error::last_os_error());
    buf[..n as usize].to_vec()
}

/// Checks that every data file in `d0`..`d2` sits on the replica set its
/// name hashes to under the directory's layout as the bricks hold it, and
/// that each set's ranges are its share of the ring (equal bricks: 1/n of
/// it, ±5 %).
fn assert_placed_by_layout(pool: &Pool, sets: &[&str]) {
    use cairn_common::layout::{name_hash, LayoutEntry};
    let mut ring = vec![0u64; sets.len()];
    for d in 0..3 {
        for (k, b) in sets.iter().enumerate() {
            let dir = pool.brick_dir(b).join(format!("d{d}"));
            let raw = lgetxattr(&dir, c"trusted.cairn.dht");
            let entry = LayoutEntry::decode(&raw).unwrap_or_else(|| panic!("no layout on {}", dir.display()));
            let range = entry.range.unwrap_or_else(|| panic!("{} has no range", dir.display()));
            ring[k] += range.size();
            for f in std::fs::read_dir(&dir).unwrap() {
                let f = f.unwrap();
                let m = f.metadata().unwrap();
                if m.is_file() && m.mode() & 0o7777 != 0o1000 {
                    let name = f.file_name();
                    let h = name_hash(name.as_encoded_bytes());
                    assert!(
                        range.contains(h) || name.to_string_lossy().contains("linked"),
                        "{}/{} is not where the layout says",
                        dir.display(),
                        name.to_string_lossy()
                    );
                }
            }
        }
    }
    let total: u64 = ring.iter().sum();
    for share in ring.iter().map(|&r| r as f64 / total as f64) {
        assert!((share - 1.0 / sets.len() as f64).abs() <= 0.05, "ring shares {ring:?}");
    }
}

fn lgetxattr(p: &Path, name: &std::ffi::CStr) -> Vec<u8> {
    let c = c_path(p);
    let mut buf = [0u8; 64];
    let n = unsafe { libc::lgetxattr(c.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n >= 0, "lgetxattr {}: {}", p.display(), std::io::Error::last_os_error());
    buf[..n as usize].to_vec()
}

/// The files in `d0`..`d2` per replica set, as a share of all of them.
fn shares(pool: &Pool, sets: &[&str]) -> Vec<f64> {
    let counts: Vec<usize> = sets
        .iter()
        .map(|b| {
            data_files(&pool.brick_dir(b))
                .iter()
                .filter(|f| f.starts_with('d') && f.contains("/f"))
                .count()
        })
        .collect();
    let total: usize = counts.iter().sum();
    assert_eq!(total, 450, "files per set {counts:?}");
    counts.iter().map(|&c| c as f64 / total as f64).collect()
}

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
