//! Distribute end to end: a volume of four bricks on one node, real mounts.
//! Files land where the hash says, are found by name after everything
//! restarts, and renames, hard links and listings stay POSIX across
//! subvolumes.

use cairn_tests::*;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const BRICKS: usize = 4;

struct Dist {
    daemon: Daemon,
    bricks: Vec<PathBuf>,
    dir: PathBuf,
    mounts: Vec<Mount>,
    /// File systems mounted under the test directory for bricks; unmounted
    /// after the daemon stops and before the directory is removed.
    filesystems: Vec<Tmpfs>,
    _tmp: tempfile::TempDir,
}

impl Dist {
    fn new() -> Dist {
        Dist::with_bricks(|dir| (1..=BRICKS).map(|i| dir.join(format!("b{i}"))).collect())
    }

    /// A started, mounted volume over the bricks `layout` picks inside the
    /// test's directory (it may mount file systems there first).
    fn with_bricks(layout: impl FnOnce(&Path) -> Vec<PathBuf>) -> Dist {
        Dist::with_filesystems(|dir| (layout(dir), Vec::new()))
    }

    fn with_filesystems(layout: impl FnOnce(&Path) -> (Vec<PathBuf>, Vec<Tmpfs>)) -> Dist {
        preflight();
        watchdog();
        let tmp = temp_dir("cairn-dht-");
        let dir = tmp.path().to_path_buf();
        let daemon = Daemon::start(&dir.join("state"), &dir.join("cairnd.log"));
        let (bricks, filesystems) = layout(&dir);
        let mut args = vec!["volume".to_string(), "create".into(), "dv".into()];
        args.extend(bricks.iter().map(|b| daemon.brick_arg(b)));
        args.push("force".into());
        daemon.cli_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        daemon.cli_ok(&["volume", "start", "dv"]);
        let mut d = Dist {
            daemon,
            bricks,
            dir,
            mounts: Vec::new(),
            filesystems,
            _tmp: tmp,
        };
        d.mount("m0");
        d
    }

    fn mount(&mut self, name: &str) -> PathBuf {
        let m = Mount::new(
            &self.daemon,
            "dv",
            &self.dir.join(name),
            &self.dir.join(format!("{name}.log")),
            "",
        );
        let p = m.path.clone();
        self.mounts.push(m);
        p
    }

    fn mnt(&self) -> &Path {
        &self.mounts[0].path
    }

    /// On which bricks `rel` is a data file, and on which a link file.
    fn placement(&self, rel: &str) -> (Vec<usize>, Vec<usize>) {
        let (mut data, mut links) = (vec![], vec![]);
        for (i, b) in self.bricks.iter().enumerate() {
            if let Ok(m) = std::fs::symlink_metadata(b.join(rel)) {
                if m.mode() & 0o7777 == 0o1000 && m.len() == 0 {
                    links.push(i);
                } else {
                    data.push(i);
                }
            }
        }
        (data, links)
    }

    /// The brick `name` hashes to in directory `dir` (relative), from the
    /// layout entries stored on the bricks.
    fn hashed_brick(&self, dir: &str, name: &[u8]) -> usize {
        let hash = cairn_common::layout::name_hash(name);
        (0..self.bricks.len())
            .find(|&i| {
                let c = CString::new(self.bricks[i].join(dir).as_os_str().as_encoded_bytes()).unwrap();
                let mut buf = [0u8; 16];
                // SAFETY: buffer and length match.
                let n =
                    unsafe { libc::getxattr(c.as_ptr(), c"trusted.cairn.dht".as_ptr(), buf.as_mut_ptr().cast(), 16) };
                n == 16
                    && cairn_common::layout::LayoutEntry::decode(&buf)
                        .and_then(|e| e.range)
                        .is_some_and(|r| r.contains(hash))
            })
            .expect("a brick whose layout holds the hash")
    }

    fn link_files_left(&self) -> Vec<PathBuf> {
        let mut left = vec![];
        for b in &self.bricks {
            walk(b, &mut |p, m| {
                if m.is_file() && m.mode() & 0o7777 == 0o1000 && m.len() == 0 {
                    left.push(p.to_path_buf());
                }
            });
        }
        left
    }
}

impl Drop for Dist {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- cairnd log ----\n{}", tail(&self.daemon.log, 60));
            for m in &self.mounts {
                eprintln!("---- {} ----\n{}", m.log.display(), tail(&m.log, 40));
            }
        }
        for m in &mut self.mounts {
            m.unmount();
        }
        self.daemon.stop();
        self.filesystems.clear();
    }
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path, &std::fs::Metadata)) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == ".cairn") {
            continue;
        }
        let Ok(m) = std::fs::symlink_metadata(&p) else { continue };
        f(&p, &m);
        if m.is_dir() {
            walk(&p, f);
        }
    }
}

#[test]
fn files_spread_evenly_and_are_found_after_a_full_restart() {
    let mut d = Dist::new();
    let n = 10_000;
    std::fs::create_dir(d.mnt().join("spread")).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let m = d.mnt().to_path_buf();
            std::thread::spawn(move || {
                for i in (t..n).step_by(4) {
                    std::fs::write(m.join(format!("spread/file{i}")), format!("content {i}")).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut per_brick = [0usize; BRICKS];
    for i in 0..n {
        let (data, links) = d.placement(&format!("spread/file{i}"));
        assert_eq!(data.len(), 1, "file{i} is data on bricks {data:?}");
        assert!(
            links.is_empty(),
            "file{i} has link files on {links:?} although it never moved"
        );
        per_brick[data[0]] += 1;
    }
    // Equal bricks (one file system): each holds a quarter within ±5 %.
    let quarter = n / BRICKS;
    for (i, c) in per_brick.iter().enumerate() {
        assert!(
            c.abs_diff(quarter) * 20 <= quarter,
            "brick {i} holds {c} of {n} files: {per_brick:?}"
        );
    }
    // Every directory exists on every brick.
    for b in &d.bricks {
        assert!(b.join("spread").is_dir());
    }
    // Restart everything: no cache survives; every name must still resolve.
    for m in &mut d.mounts {
        m.unmount();
    }
    d.mounts.clear();
    let (host, port) = (d.daemon.host.clone(), d.daemon.port);
    d.daemon.stop();
    d.daemon = Daemon::start_at(&d.daemon.state_dir.clone(), &d.daemon.log.clone(), &host, port);
    d.mount("m1");
    for i in (0..n).step_by(7) {
        let got = std::fs::read_to_string(d.mnt().join(format!("spread/file{i}"))).unwrap();
        assert_eq!(got, format!("content {i}"));
    }
    let listed = std::fs::read_dir(d.mnt().join("spread")).unwrap().count();
    assert_eq!(listed, n);
}

#[test]
fn renames_and_hard_links_across_subvolumes_keep_one_visible_name() {
    let d = Dist::new();
    let m = d.mnt().to_path_buf();
    std::fs::create_dir(m.join("a")).unwrap();
    std::fs::create_dir(m.join("b")).unwrap();
    for i in 0..200 {
        std::fs::write(m.join(format!("a/src{i}")), format!("{i}")).unwrap();
    }
    // Renames within and across directories; many land off their data
    // subvolume and need link files.
    for i in 0..200 {
        let dst = if i % 2 == 0 {
            format!("a/dst{i}")
        } else {
            format!("b/moved{i}")
        };
        std::fs::rename(m.join(format!("a/src{i}")), m.join(&dst)).unwrap();
    }
    let mut linked = 0;
    for i in 0..200 {
        let dst = if i % 2 == 0 {
            format!("a/dst{i}")
        } else {
            format!("b/moved{i}")
        };
        assert!(!m.join(format!("a/src{i}")).exists(), "old name src{i} still resolves");
        assert_eq!(std::fs::read_to_string(m.join(&dst)).unwrap(), format!("{i}"));
        let (data, links) = d.placement(&dst);
        assert_eq!(data.len(), 1, "{dst}: data on {data:?}");
        assert!(links.len() <= 1);
        linked += links.len();
        assert!(
            d.placement(&format!("a/src{i}")).1.is_empty(),
            "a link for the old name src{i} was left"
        );
    }
    assert!(
        linked > 50,
        "only {linked} of 200 renamed files needed a link file: placement is suspicious"
    );
    // Listings show each name once and never a link file.
    let a: BTreeSet<String> = std::fs::read_dir(m.join("a"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let b: BTreeSet<String> = std::fs::read_dir(m.join("b"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(a.len(), 100);
    assert_eq!(b.len(), 100);
    // Rename over an existing file replaces it wherever each lives.
    std::fs::rename(m.join("a/dst0"), m.join("b/moved1")).unwrap();
    assert_eq!(std::fs::read_to_string(m.join("b/moved1")).unwrap(), "0");
    assert!(!m.join("a/dst0").exists());
    // Hard links across subvolumes.
    for i in (2..40).step_by(2) {
        std::fs::hard_link(m.join(format!("a/dst{i}")), m.join(format!("b/hard{i}"))).unwrap();
        assert_eq!(std::fs::metadata(m.join(format!("b/hard{i}"))).unwrap().nlink(), 2);
        assert_eq!(
            std::fs::metadata(m.join(format!("b/hard{i}"))).unwrap().ino(),
            std::fs::metadata(m.join(format!("a/dst{i}"))).unwrap().ino()
        );
    }
    // Directory renames at depth carry their contents.
    std::fs::create_dir_all(m.join("a/x/y/z")).unwrap();
    std::fs::write(m.join("a/x/y/z/leaf"), "leaf").unwrap();
    std::fs::rename(m.join("a/x"), m.join("b/x2")).unwrap();
    assert_eq!(std::fs::read_to_string(m.join("b/x2/y/z/leaf")).unwrap(), "leaf");
    for b in &d.bricks {
        assert!(b.join("b/x2/y/z").is_dir() && !b.join("a/x").exists());
    }
    // Removing everything leaves no link file behind.
    std::fs::remove_dir_all(m.join("a")).unwrap();
    std::fs::remove_dir_all(m.join("b")).unwrap();
    assert_eq!(d.link_files_left(), Vec::<PathBuf>::new());
    for b in &d.bricks {
        assert!(!b.join("a").exists() && !b.join("b").exists());
    }
}

#[test]
fn rmdir_sees_files_on_every_subvolume() {
    let d = Dist::new();
    let m = d.mnt();
    std::fs::create_dir(m.join("d")).unwrap();
    std::fs::write(m.join("d/only"), "x").unwrap();
    expect_errno(
        std::fs::remove_dir(m.join("d")),
        libc::ENOTEMPTY,
        "rmdir of a non-empty directory",
    );
    for b in &d.bricks {
        assert!(b.join("d").is_dir(), "a copy was removed by a failed rmdir");
    }
    std::fs::remove_file(m.join("d/only")).unwrap();
    std::fs::remove_dir(m.join("d")).unwrap();
    expect_errno(std::fs::metadata(m.join("d")), libc::ENOENT, "stat after rmdir");
}

/// Reads a directory with libc, recording each name with the telldir
/// position after it.
fn list_with_positions(dir: &Path) -> Vec<(String, i64)> {
    let c = CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: plain libc directory stream use on a valid path.
    unsafe {
        let d = libc::opendir(c.as_ptr());
        assert!(!d.is_null(), "opendir: {}", std::io::Error::last_os_error());
        let mut out = vec![];
        loop {
            let e = libc::readdir(d);
            if e.is_null() {
                break;
            }
            let name = std::ffi::CStr::from_ptr((*e).d_name.as_ptr())
                .to_string_lossy()
                .into_owned();
            out.push((name, libc::telldir(d)));
        }
        libc::closedir(d);
        out
    }
}

#[test]
fn listings_are_complete_and_resumable_while_entries_are_added() {
    let d = Dist::new();
    let m = d.mnt();
    std::fs::create_dir(m.join("big")).unwrap();
    // CAIRN_DHT_ENTRIES=50000 for the full-size run; CI lists 5,000.
    let n: usize = std::env::var("CAIRN_DHT_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let m = m.to_path_buf();
            std::thread::spawn(move || {
                for i in (t..n).step_by(4) {
                    std::fs::File::create(m.join(format!("big/entry-{i:05}"))).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let first = list_with_positions(&m.join("big"));
    let names: Vec<&String> = first.iter().map(|(n, _)| n).filter(|n| !n.starts_with('.')).collect();
    let unique: BTreeSet<&String> = names.iter().copied().collect();
    assert_eq!(names.len(), n, "listing returned {} names", names.len());
    assert_eq!(unique.len(), n, "listing repeated names");
    // Resume from a position in the middle (seekdir) while new entries
    // appear: every old entry after the position comes exactly once.
    let c = CString::new(m.join("big").as_os_str().as_encoded_bytes()).unwrap();
    let mid = first.len() / 2;
    let (_, pos) = first[mid].clone();
    for i in 0..200 {
        std::fs::write(m.join(format!("big/late-{i}")), "").unwrap();
    }
    let mut resumed = vec![];
    // SAFETY: as above.
    unsafe {
        let dir = libc::opendir(c.as_ptr());
        assert!(!dir.is_null());
        libc::seekdir(dir, pos);
        loop {
            let e = libc::readdir(dir);
            if e.is_null() {
                break;
            }
            resumed.push(
                std::ffi::CStr::from_ptr((*e).d_name.as_ptr())
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        libc::closedir(dir);
    }
    let expected: Vec<&String> = first[mid + 1..].iter().map(|(n, _)| n).collect();
    let resumed_old: Vec<&String> = resumed.iter().filter(|n| !n.starts_with("late-")).collect();
    assert_eq!(resumed_old, expected, "resumed listing skipped or repeated entries");
    let mut counts: BTreeMap<&String, usize> = BTreeMap::new();
    for r in &resumed {
        *counts.entry(r).or_default() += 1;
    }
    assert!(counts.values().all(|&c| c == 1), "resumed listing repeated a name");
}

#[test]
fn concurrent_creates_from_two_mounts_make_each_name_once() {
    let mut d = Dist::new();
    let m1 = d.mnt().to_path_buf();
    let m2 = d.mount("m2");
    std::fs::create_dir(m1.join("race")).unwrap();
    let spawn = |m: PathBuf, tag: &'static str| {
        std::thread::spawn(move || {
            let mut won = 0;
            for i in 0..300 {
                // Shared names: O_EXCL lets exactly one mount win each.
                match std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(m.join(format!("race/shared{i}")))
                {
                    Ok(_) => won += 1,
                    Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EEXIST), "{tag}: shared{i}: {e}"),
                }
                std::fs::write(m.join(format!("race/{tag}{i}")), tag).unwrap();
                std::fs::rename(
                    m.join(format!("race/{tag}{i}")),
                    m.join(format!("race/{tag}-renamed{i}")),
                )
                .unwrap();
            }
            won
        })
    };
    let (a, b) = (spawn(m1.clone(), "one"), spawn(m2.clone(), "two"));
    let won = a.join().unwrap() + b.join().unwrap();
    assert_eq!(won, 300, "O_EXCL creates of 300 shared names succeeded {won} times");
    let names: Vec<String> = std::fs::read_dir(m1.join("race"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!(names.len(), 900);
    assert_eq!(unique.len(), 900);
    for i in 0..300 {
        let (data, _) = d.placement(&format!("race/shared{i}"));
        assert_eq!(data.len(), 1, "shared{i} exists as data on {data:?}");
    }
}

#[test]
fn a_full_subvolume_sends_new_files_elsewhere_with_a_link() {
    let d = Dist::with_filesystems(|dir| {
        (1..=2)
            .map(|i| {
                let fs_dir = dir.join(format!("fs{i}"));
                (fs_dir.join("brick"), Tmpfs::mount(&fs_dir, 16))
            })
            .unzip()
    });
    // Fill the second brick past min-free-disk (10 %) behind the volume's back.
    let filler = vec![0u8; 15 << 20];
    std::fs::write(d.bricks[1].join("filler"), &filler).unwrap();
    // Free space is sampled every 5 s: let the client see the new figure.
    std::thread::sleep(std::time::Duration::from_secs(6));
    let m = d.mnt();
    for i in 0..100 {
        std::fs::write(m.join(format!("n{i}")), format!("{i}")).unwrap();
    }
    let mut linked = 0;
    for i in 0..100 {
        let (data, links) = d.placement(&format!("n{i}"));
        assert_eq!(data, vec![0], "n{i} must have its data on the brick with room");
        linked += links.len();
        assert_eq!(
            std::fs::read_to_string(m.join(format!("n{i}"))).unwrap(),
            format!("{i}")
        );
    }
    assert!(
        linked > 20,
        "only {linked} files hashed to the full brick: the test proves nothing"
    );
    for i in 0..100 {
        std::fs::remove_file(m.join(format!("n{i}"))).unwrap();
    }
    assert_eq!(d.link_files_left(), Vec::<PathBuf>::new());
}

#[test]
fn a_missing_directory_copy_and_a_broken_layout_are_repaired_on_lookup() {
    let mut d = Dist::new();
    let m = d.mnt().to_path_buf();
    std::fs::create_dir(m.join("dir")).unwrap();
    for i in 0..40 {
        std::fs::write(m.join(format!("dir/f{i}")), "x").unwrap();
    }
    // Behind the volume's back: drop one layout entry, and remove an empty
    // directory copy from another brick.
    std::fs::create_dir(m.join("gone")).unwrap();
    let c = CString::new(d.bricks[1].join("dir").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: plain syscall on a valid path.
    let rc = unsafe { libc::removexattr(c.as_ptr(), c"trusted.cairn.dht".as_ptr()) };
    assert_eq!(rc, 0, "removexattr: {}", std::io::Error::last_os_error());
    // (Not from the hashed subvolume: mkdir makes that copy first, so only a
    // non-hashed copy can be missing short of deliberate damage.)
    let victim = (0..BRICKS).find(|&i| i != d.hashed_brick("", b"gone")).unwrap();
    std::fs::remove_dir(d.bricks[victim].join("gone")).unwrap();
    // A fresh mount has no cache: its lookups must repair both.
    let m2 = d.mount("m2");
    assert!(m2.join("gone").is_dir());
    std::fs::write(m2.join("gone/new"), "y").unwrap();
    assert!(
        d.bricks[victim].join("gone").is_dir(),
        "the missing directory copy was not re-created"
    );
    for i in 0..40 {
        assert_eq!(std::fs::read_to_string(m2.join(format!("dir/f{i}"))).unwrap(), "x");
    }
    std::fs::write(m2.join("dir/after-repair"), "z").unwrap();
    // SAFETY: as above; the layout entry is back.
    let n = unsafe { libc::getxattr(c.as_ptr(), c"trusted.cairn.dht".as_ptr(), std::ptr::null_mut(), 0) };
    assert_eq!(n, 16, "the layout entry was not rewritten");
    assert_eq!(std::fs::read_dir(m2.join("dir")).unwrap().count(), 41);
}

/// Size of `brick`'s layout range for directory `dir`, as a share of the ring.
fn range_share(brick: &Path, dir: &str) -> f64 {
    let c = CString::new(brick.join(dir).as_os_str().as_encoded_bytes()).unwrap();
    let mut buf = [0u8; 16];
    // SAFETY: buffer and length match.
    let n = unsafe { libc::getxattr(c.as_ptr(), c"trusted.cairn.dht".as_ptr(), buf.as_mut_ptr().cast(), 16) };
    assert_eq!(n, 16, "no layout on {}", brick.join(dir).display());
    let e = cairn_common::layout::LayoutEntry::decode(&buf).expect("a valid layout entry");
    e.range.map_or(0.0, |r| r.size() as f64 / 4294967296.0)
}

#[test]
fn layouts_follow_capacity_until_weighting_is_turned_off_live() {
    let d = Dist::with_filesystems(|dir| {
        [8u32, 32]
            .iter()
            .enumerate()
            .map(|(i, mb)| {
                let fs_dir = dir.join(format!("fs{i}"));
                (fs_dir.join("brick"), Tmpfs::mount(&fs_dir, *mb))
            })
            .unzip()
    });
    let m = d.mnt();
    std::fs::create_dir(m.join("weighted")).unwrap();
    let small = range_share(&d.bricks[0], "weighted");
    assert!(
        (small - 0.2).abs() < 0.01,
        "the 8 MiB brick got {small:.3} of the ring, want 0.2"
    );
    // Options reach a running mount without a remount (it polls every 5 s).
    d.daemon
        .cli_ok(&["volume", "set", "dv", "cluster.weighted-rebalance", "off"]);
    let out = d.daemon.cli_ok(&["volume", "get", "dv", "cluster.weighted-rebalance"]);
    assert!(out.contains("off") && !out.contains("(DEFAULT)"), "{out}");
    let equal = poll(std::time::Duration::from_secs(20), || {
        let name = format!(
            "equal{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        std::fs::create_dir(m.join(&name)).unwrap();
        ((range_share(&d.bricks[0], &name) - 0.5).abs() < 0.001).then_some(())
    });
    assert!(
        equal.is_some(),
        "new directories did not get equal shares after weighting was turned off"
    );
    // Bad values change nothing.
    let bad = d.daemon.cli(&["volume", "set", "dv", "cluster.min-free-disk", "150%"]);
    assert!(!bad.ok() && bad.stderr.lines().count() == 1, "{bad:?}");
    let out = d.daemon.cli_ok(&["volume", "get", "dv", "cluster.min-free-disk"]);
    assert!(out.contains("10% (DEFAULT)"), "{out}");
    d.daemon.cli_ok(&["volume", "reset", "dv"]);
    let out = d.daemon.cli_ok(&["volume", "get", "dv", "all"]);
    assert_eq!(
        out.matches("(DEFAULT)").count(),
        cairn_common::options::OPTIONS.len(),
        "{out}"
    );
}
