//! What the elastic-growth tests share: a patterned load that keeps a
//! file open and writes it while files move, snapshots of a tree, what the
//! bricks hold, and waiting on `rebalance status`.
// Each test binary uses a part of this.
#![allow(dead_code)]

use cairn_tests::*;
use std::collections::BTreeMap;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub const BLOCK: u64 = 64 << 10;

/// Content of block `n` of the long-running writer's file.
pub fn block_of(n: u64) -> Vec<u8> {
    let mut v = vec![0u8; BLOCK as usize];
    for (i, b) in v.iter_mut().enumerate() {
        *b = ((n.wrapping_mul(31) + i as u64 / 7) % 251) as u8;
    }
    v
}

/// Every regular file below `root` (relative path → content hash, mode,
/// modification time).
pub fn snapshot(root: &Path) -> BTreeMap<String, (u64, u32, i64)> {
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
            // A symlink's own times are not kept when it moves (it is made
            // again; the brick sets no times on symlinks).
            let mtime = if m.file_type().is_symlink() {
                0
            } else {
                m.mtime() * 1_000_000_000 + m.mtime_nsec()
            };
            out.insert(rel, (h.finish(), m.mode(), mtime));
        }
    }
    out
}

/// Regular files below a brick (its private `.cairn` aside): the link
/// files (mode ---------T) with `links`, else the data files.
pub fn brick_files(brick: &Path, links: bool) -> Vec<String> {
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
            } else if m.file_type().is_file() && (m.mode() & 0o7777 == 0o1000) == links {
                out.push(rel);
            }
        }
    }
    out
}

pub fn data_files(brick: &Path) -> Vec<String> {
    brick_files(brick, false)
}

pub fn link_files(brick: &Path) -> Vec<String> {
    brick_files(brick, true)
}

/// The status rows (`--json`), from whichever node answers first.
pub fn status_rows(pool: &Pool, args: &[&str]) -> Option<Vec<serde_json::Value>> {
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

pub fn find_nodes(v: &serde_json::Value) -> Option<Vec<serde_json::Value>> {
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
pub fn wait_completed(pool: &Pool, args: &[&str], limit: Duration) -> Vec<serde_json::Value> {
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
pub fn warnings(pool: &Pool) -> String {
    (0..pool.nodes.len())
        .flat_map(|i| {
            std::fs::read_to_string(pool.log(i))
                .unwrap_or_default()
                .lines()
                .filter(|l| {
                    (l.contains("WARN") || l.contains("ERROR") || l.contains("dht::rebalance"))
                        && !l.contains("no leader")
                })
                .map(|l| format!("node {i}: {l}"))
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn sum(rows: &[serde_json::Value], key: &str) -> u64 {
    rows.iter().map(|r| r[key].as_u64().unwrap_or(0)).sum()
}

/// An application holding one file open and appending patterned blocks,
/// and another creating small files, until told to stop.
pub struct Load {
    stop: Arc<AtomicBool>,
    blocks: Arc<AtomicU64>,
    created: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// fio writing crc32c-verified blocks, rate-limited so it lasts.
    fio: std::process::Child,
}

/// fio's verified-write job on `dir/fio.dat` (or its verification).
fn fio_job(dir: &Path, verify_only: bool) -> std::process::Command {
    let mut c = std::process::Command::new("fio");
    c.args([
        "--name=rebalance",
        "--rw=write",
        "--bs=64k",
        "--size=24M",
        "--ioengine=psync",
        "--verify=crc32c",
        "--do_verify=0",
        "--end_fsync=1",
        "--output-format=terse",
    ])
    .arg(format!("--filename={}", dir.join("fio.dat").display()))
    .stdout(std::process::Stdio::null());
    c.arg(if verify_only { "--verify_only" } else { "--rate=1m" });
    c
}

impl Load {
    pub fn start(mnt: &Path) -> Load {
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
        let fio = fio_job(&mnt.join("live"), false)
            .spawn()
            .expect("fio is installed (.ci/run installs it)");
        Load {
            stop,
            blocks,
            created,
            threads,
            fio,
        }
    }

    /// Stops both and checks every acknowledged block and file.
    pub fn finish(mut self, mnt: &Path) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("load thread panicked");
        }
        // fio ends on its own (24 MiB at 1 MiB/s at most) and must have
        // seen no error; then every block it wrote must verify.
        let status = self.fio.wait().expect("waiting for fio");
        assert!(status.success(), "fio failed during the rebalance: {status}");
        let verify = fio_job(&mnt.join("live"), true).status().expect("fio verify");
        assert!(verify.success(), "fio's blocks did not verify after the rebalance");
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
pub fn populate(mnt: &Path) {
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

pub fn xattr(p: &Path, name: &std::ffi::CStr) -> Vec<u8> {
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
pub fn assert_placed_by_layout(pool: &Pool, sets: &[&str]) {
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

pub fn lgetxattr(p: &Path, name: &std::ffi::CStr) -> Vec<u8> {
    let c = c_path(p);
    let mut buf = [0u8; 64];
    let n = unsafe { libc::lgetxattr(c.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n >= 0, "lgetxattr {}: {}", p.display(), std::io::Error::last_os_error());
    buf[..n as usize].to_vec()
}

/// The files in `d0`..`d2` per replica set, as a share of all of them.
pub fn shares(pool: &Pool, sets: &[&str]) -> Vec<f64> {
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
