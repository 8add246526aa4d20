//! Sizes and concurrency: files beyond 4 GiB, large directories, many
//! writers at once.

use cairn_tests::{pattern, read_file, Cluster};
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

const GIB: u64 = 1 << 30;

#[test]
fn sparse_file_beyond_4_gib() {
    let c = Cluster::new();
    let p = c.p("big");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&p)
        .expect("create");
    f.write_all_at(b"start", 0).expect("write at 0");
    // Straddles the 4 GiB boundary (32-bit offset truncation would show).
    f.write_all_at(b"ACROSS4G", 4 * GIB - 4).expect("write across 4 GiB");
    f.write_all_at(b"cairn-end", 5 * GIB).expect("write at 5 GiB");
    drop(f);

    let m = fs::metadata(&p).expect("stat");
    assert_eq!(m.len(), 5 * GIB + 9, "size");
    assert!(
        m.blocks() * 512 < 1 << 20,
        "a sparse file stays small: {} blocks",
        m.blocks()
    );
    let b = fs::metadata(c.b("big")).expect("brick stat");
    assert_eq!(b.len(), 5 * GIB + 9, "brick size");
    assert!(b.blocks() * 512 < 1 << 20, "brick file is sparse");

    let f = File::open(&p).expect("open");
    let read = |off: u64, len: usize| {
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, off)
            .unwrap_or_else(|e| panic!("pread {len} at {off}: {e}"));
        buf
    };
    assert_eq!(read(0, 5), b"start");
    assert_eq!(read(4 * GIB - 4, 8), b"ACROSS4G");
    assert_eq!(read(5 * GIB, 9), b"cairn-end");
    assert!(read(2 * GIB, 65536).iter().all(|&x| x == 0), "hole reads zero");
    assert!(
        read(4 * GIB + 4, 4096).iter().all(|&x| x == 0),
        "just past 4 GiB reads zero"
    );
    let mut tail = Vec::new();
    let n = f.read_at(&mut [0u8; 64], 5 * GIB + 9).expect("read at EOF");
    assert_eq!(n, 0, "nothing past EOF");
    tail.extend_from_slice(&read(5 * GIB - 3, 12));
    assert_eq!(tail, b"\0\0\0cairn-end");
    // The same bytes on the brick.
    let bf = File::open(c.b("big")).expect("open brick file");
    let mut buf = [0u8; 8];
    bf.read_exact_at(&mut buf, 4 * GIB - 4).expect("brick pread");
    assert_eq!(&buf, b"ACROSS4G");
    // Truncating back below 4 GiB.
    let f = OpenOptions::new().write(true).open(&p).expect("open rw");
    f.set_len(4 * GIB + 2).expect("truncate to 4 GiB + 2");
    drop(f);
    assert_eq!(fs::metadata(&p).expect("stat").len(), 4 * GIB + 2);
    let f = File::open(&p).expect("open");
    let mut buf = [0u8; 16];
    assert_eq!(f.read_at(&mut buf, 4 * GIB - 4).expect("read"), 6);
    assert_eq!(&buf[..6], b"ACROSS");
}

fn entry_name(i: usize) -> String {
    format!("entry-{i:05}-{}", "x".repeat(i % 40))
}

fn list_exact(dir: &Path, what: &str) -> (HashSet<String>, usize) {
    let mut seen = HashSet::new();
    let mut count = 0;
    for e in fs::read_dir(dir).unwrap_or_else(|e| panic!("{what}: readdir: {e}")) {
        let name = e
            .unwrap_or_else(|e| panic!("{what}: readdir entry: {e}"))
            .file_name()
            .into_string()
            .expect("utf-8");
        assert!(seen.insert(name.clone()), "{what}: {name} listed twice");
        count += 1;
    }
    (seen, count)
}

#[test]
fn directory_of_10000_entries() {
    const N: usize = 10_000;
    // Creating through the mount costs two round trips per entry and the
    // kernel serializes creates in one directory, so with debug binaries 10k
    // creations take most of a minute. Most entries are therefore made on
    // the brick directly (a supported way to seed a brick: entries without a
    // gfid get one when first seen), the rest through the mount.
    const VIA_MOUNT: usize = 1_000;
    let c = Cluster::new();
    let dir = c.p("many");
    fs::create_dir(&dir).expect("mkdir");
    for i in VIA_MOUNT..N {
        File::create(c.b("many").join(entry_name(i))).expect("create on the brick");
    }
    let half = VIA_MOUNT / 2;
    let workers: Vec<_> = [(0, half), (half, VIA_MOUNT)]
        .into_iter()
        .map(|(from, to)| {
            let dir = dir.clone();
            std::thread::spawn(move || {
                for i in from..to {
                    let name = entry_name(i);
                    File::create(dir.join(&name)).unwrap_or_else(|e| panic!("create {name} through the mount: {e}"));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("creator thread");
    }
    let want: HashSet<String> = (0..N).map(entry_name).collect();
    let (seen, count) = list_exact(&dir, "first listing");
    assert_eq!(count, N, "readdir returned {count} entries");
    assert_eq!(seen, want, "readdir returns exactly the names");
    let (seen, count) = list_exact(&dir, "second listing");
    assert_eq!((count, &seen), (N, &want), "a second listing agrees");
    // Every entry is a usable file through the mount.
    for i in (0..N).step_by(997) {
        let m = fs::metadata(dir.join(entry_name(i))).expect("stat an entry");
        assert!(m.is_file());
    }

    // Remove every tenth entry and rename a few through the mount.
    for i in (0..N).step_by(10) {
        fs::remove_file(dir.join(entry_name(i))).expect("unlink");
    }
    let renamed: Vec<usize> = (1..N).step_by(999).filter(|i| i % 10 != 0).collect();
    for &i in &renamed {
        fs::rename(dir.join(entry_name(i)), dir.join(format!("renamed-{i}"))).expect("rename");
    }
    let mut want2: HashSet<String> = (0..N).filter(|i| i % 10 != 0).map(entry_name).collect();
    for &i in &renamed {
        assert!(want2.remove(&entry_name(i)));
        want2.insert(format!("renamed-{i}"));
    }
    let (seen, count) = list_exact(&dir, "listing after unlinks and renames");
    assert_eq!(count, want2.len());
    assert_eq!(seen, want2, "listing after unlinks and renames");
    let brick_count = fs::read_dir(c.b("many")).expect("brick readdir").count();
    assert_eq!(brick_count, want2.len(), "the brick agrees");
}

#[test]
fn concurrent_writers() {
    const THREADS: u64 = 8;
    const REGION: u64 = 768 << 10;
    const CHUNK: usize = 48 << 10;
    let c = Cluster::new();
    let shared = c.p("shared");
    File::create(&shared).expect("create shared");
    let mnt = c.mnt().to_path_buf();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let shared = shared.clone();
            let own = mnt.join(format!("own-{t}"));
            std::thread::spawn(move || {
                let data = pattern(1000 + t, REGION as usize);
                let f = OpenOptions::new().write(true).open(&shared).expect("open shared");
                let mut o = File::create(&own).expect("create own");
                // Interleave the two files so the threads really overlap.
                for (i, chunk) in data.chunks(CHUNK).enumerate() {
                    f.write_all_at(chunk, t * REGION + (i * CHUNK) as u64)
                        .expect("pwrite shared");
                    o.write_all(chunk).expect("write own");
                }
                o.sync_all().expect("fsync own");
            })
        })
        .collect();
    for w in workers {
        w.join().expect("writer thread");
    }
    let all = read_file(&shared);
    assert_eq!(all.len() as u64, THREADS * REGION, "shared file size");
    for t in 0..THREADS {
        let want = pattern(1000 + t, REGION as usize);
        let region = &all[(t * REGION) as usize..((t + 1) * REGION) as usize];
        assert!(region == want, "region of writer {t} in the shared file");
        assert!(read_file(&c.p(format!("own-{t}"))) == want, "file of writer {t}");
        assert!(read_file(&c.b(format!("own-{t}"))) == want, "brick file of writer {t}");
    }
    assert!(read_file(&c.b("shared")) == all, "brick copy of the shared file");
}

#[test]
fn concurrent_appends_stay_whole() {
    const THREADS: usize = 4;
    const RECORDS: usize = 150;
    const LEN: usize = 100;
    let c = Cluster::new();
    let p = c.p("log");
    File::create(&p).expect("create");
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let p = p.clone();
            std::thread::spawn(move || {
                let mut f = OpenOptions::new().append(true).open(&p).expect("open");
                for r in 0..RECORDS {
                    let mut rec = format!("t{t} r{r:04} ").into_bytes();
                    rec.resize(LEN - 1, b'a' + t as u8);
                    rec.push(b'\n');
                    f.write_all(&rec).expect("append");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("appender");
    }
    let all = read_file(&p);
    assert_eq!(all.len(), THREADS * RECORDS * LEN, "no append lost or torn");
    let mut next = [0usize; THREADS];
    for rec in all.chunks(LEN) {
        let text = String::from_utf8_lossy(rec);
        let t: usize = text[1..2].parse().unwrap_or_else(|_| panic!("torn record {text:?}"));
        let r: usize = text[4..8].parse().unwrap_or_else(|_| panic!("torn record {text:?}"));
        assert_eq!(r, next[t], "records of thread {t} in order");
        next[t] += 1;
        assert!(
            rec[..LEN - 1].ends_with(&[b'a' + t as u8]) && rec[LEN - 1] == b'\n',
            "torn record {text:?}"
        );
    }
    assert_eq!(next, [RECORDS; THREADS]);
}

#[test]
fn directory_of_maximum_length_names() {
    // Long names fill each readdir reply with fewer entries: the listing
    // must still page through all of them exactly once.
    const N: usize = 1500;
    let c = Cluster::new();
    fs::create_dir(c.p("long")).expect("mkdir");
    let name = |i: usize| format!("{i:05}{}", "L".repeat(250));
    for i in 0..N {
        File::create(c.b("long").join(name(i))).expect("create on the brick");
    }
    let want: HashSet<String> = (0..N).map(name).collect();
    let (seen, count) = list_exact(&c.p("long"), "listing of 255-byte names");
    assert_eq!(count, N);
    assert_eq!(seen, want);
}

#[test]
fn rm_rf_of_a_large_directory() {
    // remove_dir_all reads and unlinks as it goes, like `rm -rf`: the
    // listing must not skip or repeat entries while the directory shrinks.
    const N: usize = 1200;
    let c = Cluster::new();
    fs::create_dir_all(c.p("tree/sub")).expect("mkdir");
    for i in 0..N {
        File::create(c.b("tree").join(entry_name(i))).expect("create on the brick");
    }
    for i in 0..50 {
        File::create(c.p("tree/sub").join(format!("s{i}"))).expect("create through the mount");
    }
    fs::remove_dir_all(c.p("tree")).expect("rm -rf through the mount");
    expect_gone(&c.p("tree"));
    assert!(!c.b("tree").exists(), "gone from the brick");
}

fn expect_gone(p: &Path) {
    match fs::metadata(p) {
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{}: {e}", p.display()),
        Ok(_) => panic!("{} still exists", p.display()),
    }
}
