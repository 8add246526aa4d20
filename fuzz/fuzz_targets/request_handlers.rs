//! Sequences of decoded file operations run against a real brick in a temp
//! directory, through the brick's own dispatch (`brick/src/fops.rs`) and,
//! for some, the root-squash checks (`brick/src/access.rs`). No operation
//! may panic, and none may change anything outside the brick: a directory
//! beside it, reachable through symlinks planted on the brick, must stay
//! exactly as it was, and so must the brick's identity file.
//!
//! The first input byte picks the form: even, a compact op language over
//! the inodes known so far and a table of hostile names (so the fuzzer
//! reaches real inodes quickly); odd, raw postcard-encoded `Fop`s (the
//! exact bytes a peer could send).
#![no_main]

// The brick is a binary crate: its store and dispatch are compiled in.
#[allow(dead_code)]
#[path = "../../brick/src/access.rs"]
mod access;
#[allow(dead_code)]
#[path = "../../brick/src/fops.rs"]
mod fops;
#[allow(dead_code)]
#[path = "../../brick/src/store/mod.rs"]
mod store;
#[allow(dead_code)]
#[path = "../../brick/src/sys.rs"]
mod sys;

use bytes::Bytes;
use cairn_common::proto::{Creds, Fop, SetAttr, TimeSet, Timespec};
use cairn_common::Gfid;
use libfuzzer_sys::fuzz_target;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use store::namespace::NewKind;
use store::Brick;
use uuid::Uuid;

/// Inputs run on one brick before it is thrown away, bounding its size.
const RUNS_PER_BRICK: u32 = 2000;
/// Largest write, allocation or copy an op may ask for here (the real
/// limits are larger; this keeps the fuzzer off the disk).
const MAX_BYTES: u64 = 256 << 10;

struct World {
    _tmp: tempfile::TempDir,
    brick: Arc<Brick>,
    brick_path: PathBuf,
    outside: PathBuf,
    outside_before: Vec<(PathBuf, u32, u64, u32, i64)>,
    identity: Vec<u8>,
    known: Vec<Gfid>,
    runs: u32,
}

fn snapshot(root: &Path) -> Vec<(PathBuf, u32, u64, u32, i64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).expect("read outside") {
            let path = entry.expect("entry").path();
            let m = std::fs::symlink_metadata(&path).expect("stat outside");
            if m.is_dir() {
                todo.push(path.clone());
            }
            out.push((path, m.mode(), m.size(), m.uid(), m.mtime()));
        }
    }
    out.sort();
    out
}

fn small_gfid(n: u8) -> Gfid {
    let mut g = [0u8; 16];
    g[15] = n;
    Gfid(g)
}

const ROOT_CREDS: Creds = Creds { uid: 0, gid: 0 };

impl World {
    fn new() -> World {
        let tmp = tempfile::tempdir().expect("temp dir");
        let brick_path = tmp.path().join("brick");
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).expect("outside");
        std::fs::write(outside.join("canary"), b"canary").expect("canary");
        std::fs::create_dir(outside.join("sub")).expect("outside/sub");
        let (bid, vid) = (Uuid::from_u128(1), Uuid::from_u128(2));
        Brick::initialize(&brick_path, bid, vid, "fuzz", true).expect("initialize brick");
        let brick = Arc::new(Brick::open_existing(&brick_path, bid, vid).expect("open brick"));
        // Known inodes: a directory, a file, and symlinks leading out, both
        // made by the brick and planted behind its back.
        let mut known = vec![Gfid::ROOT];
        let made = [
            (b"d".as_slice(), 2u8, NewKind::Dir, 0o755),
            (b"f", 3, NewKind::Special(0), libc::S_IFREG | 0o644),
            (
                b"to-outside",
                4,
                NewKind::Symlink(outside.as_os_str().as_encoded_bytes()),
                0o777,
            ),
        ];
        for (name, n, kind, mode) in made {
            let a = brick
                .make_entry(&Gfid::ROOT, name, &small_gfid(n), kind, mode, 0, &ROOT_CREDS)
                .expect("seed entry");
            known.push(a.gfid);
        }
        std::os::unix::fs::symlink(&outside, brick_path.join("planted-dir")).expect("plant");
        std::os::unix::fs::symlink(outside.join("canary"), brick_path.join("planted-file")).expect("plant");
        std::os::unix::fs::symlink(&outside, brick_path.join("d").join("up")).expect("plant");
        for name in [&b"planted-dir"[..], b"planted-file"] {
            known.push(brick.lookup(&Gfid::ROOT, name).expect("planted").gfid);
        }
        let identity = std::fs::read(brick_path.join(".cairn/brick.json")).expect("brick.json");
        let outside_before = snapshot(&outside);
        World {
            _tmp: tmp,
            brick,
            brick_path,
            outside,
            outside_before,
            identity,
            known,
            runs: 0,
        }
    }

    fn check_nothing_escaped(&self) {
        assert_eq!(
            snapshot(&self.outside),
            self.outside_before,
            "the directory beside the brick changed"
        );
        assert_eq!(std::fs::read(self.outside.join("canary")).expect("canary"), b"canary");
        let identity = std::fs::read(self.brick_path.join(".cairn/brick.json")).expect("brick.json");
        assert_eq!(identity, self.identity, "the brick's identity changed");
    }
}

/// Reads the compact op language.
struct Cursor<'a> {
    data: &'a [u8],
}

impl Cursor<'_> {
    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | u64::from(self.u32()) << 32
    }
    fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }
    fn small(&mut self) -> u64 {
        u64::from(self.u32()) % MAX_BYTES
    }
}

/// Names worth trying: hostile ones, the planted links, and plain ones.
fn name(c: &mut Cursor) -> Vec<u8> {
    const TABLE: &[&[u8]] = &[
        b"a",
        b"b",
        b"d",
        b"f",
        b"..",
        b".",
        b"",
        b"/",
        b"/etc/passwd",
        b"../outside",
        b"a/b",
        b"a\0b",
        b".cairn",
        b"to-outside",
        b"planted-dir",
        b"planted-file",
        b"up",
    ];
    let i = c.u8() as usize;
    match TABLE.get(i % (TABLE.len() + 2)) {
        Some(n) => n.to_vec(),
        None if i % 2 == 0 => vec![b'x'; 200 + c.u8() as usize],
        None => {
            let len = c.u8() as usize % 8;
            (0..len).map(|_| c.u8()).collect()
        }
    }
}

fn xattr_name(c: &mut Cursor) -> Vec<u8> {
    const TABLE: &[&[u8]] = &[
        b"user.a",
        b"user.b",
        b"trusted.cairn.gfid",
        b"trusted.cairn.dht",
        b"trusted.cairn.linkto",
        b"trusted.other",
        b"security.selinux",
        b"system.posix_acl_access",
        b"",
        b"user.",
    ];
    TABLE[c.u8() as usize % TABLE.len()].to_vec()
}

fn gfid(c: &mut Cursor, known: &[Gfid]) -> Gfid {
    let i = c.u8();
    if i == 255 {
        Gfid::random()
    } else {
        known[i as usize % known.len()]
    }
}

/// A new inode's gfid: usually fresh, sometimes one in use (or the root).
fn new_gfid(c: &mut Cursor, known: &[Gfid]) -> Gfid {
    if c.u8() < 32 {
        gfid(c, known)
    } else {
        Gfid::random()
    }
}

fn creds(c: &mut Cursor) -> Creds {
    let pick = [0, 1000, 65534, u32::MAX];
    Creds {
        uid: pick[c.u8() as usize % 4],
        gid: pick[c.u8() as usize % 4],
    }
}

fn time(c: &mut Cursor) -> Option<TimeSet> {
    match c.u8() % 3 {
        0 => None,
        1 => Some(TimeSet::Now),
        _ => Some(TimeSet::At(Timespec {
            sec: i64::from(c.u32() as i32),
            nsec: c.u32(),
        })),
    }
}

fn fh(c: &mut Cursor) -> u64 {
    u64::from(c.u8() % 8)
}

fn decode_op(c: &mut Cursor, known: &[Gfid]) -> Fop {
    match c.u8() % 33 {
        0 => Fop::Lookup {
            parent: gfid(c, known),
            name: name(c),
        },
        1 => Fop::GetAttr { gfid: gfid(c, known) },
        2 => Fop::SetAttr {
            gfid: gfid(c, known),
            fh: c.bool().then(|| fh(c)),
            set: SetAttr {
                mode: c.bool().then(|| c.u32()),
                uid: c.bool().then(|| creds(c).uid),
                gid: c.bool().then(|| creds(c).gid),
                size: c.bool().then(|| c.small()),
                atime: time(c),
                mtime: time(c),
            },
        },
        3 => Fop::Mknod {
            parent: gfid(c, known),
            name: name(c),
            gfid: new_gfid(c, known),
            // Regular files, fifos and sockets, plus junk type bits; never
            // real device numbers (the brick would make them).
            mode: [libc::S_IFREG, libc::S_IFIFO, libc::S_IFSOCK, 0, 0o170000][c.u8() as usize % 5] | (c.u32() & 0o7777),
            umask: c.u32(),
            rdev: 0,
            creds: creds(c),
        },
        4 => Fop::Mkdir {
            parent: gfid(c, known),
            name: name(c),
            gfid: new_gfid(c, known),
            mode: c.u32(),
            umask: c.u32(),
            creds: creds(c),
        },
        5 => Fop::Symlink {
            parent: gfid(c, known),
            name: name(c),
            gfid: new_gfid(c, known),
            target: name(c),
            creds: creds(c),
        },
        6 => Fop::Unlink {
            parent: gfid(c, known),
            name: name(c),
        },
        7 => Fop::Rmdir {
            parent: gfid(c, known),
            name: name(c),
        },
        8 => Fop::Rename {
            parent: gfid(c, known),
            name: name(c),
            new_parent: gfid(c, known),
            new_name: name(c),
            flags: u32::from(c.u8() % 5),
        },
        9 => Fop::Link {
            gfid: gfid(c, known),
            new_parent: gfid(c, known),
            new_name: name(c),
        },
        10 => Fop::Readlink { gfid: gfid(c, known) },
        11 => Fop::Open {
            gfid: gfid(c, known),
            flags: c.u32() as i32,
        },
        12 => Fop::Create {
            parent: gfid(c, known),
            name: name(c),
            gfid: new_gfid(c, known),
            mode: c.u32(),
            umask: c.u32(),
            flags: c.u32() as i32,
            creds: creds(c),
        },
        13 => Fop::Read {
            fh: fh(c),
            offset: c.u64(),
            size: c.small() as u32,
        },
        14 => Fop::Write {
            fh: fh(c),
            offset: c.small(),
            len: c.small() as u32 % 4096,
        },
        15 => Fop::Release { fh: fh(c) },
        16 => Fop::Fsync {
            fh: fh(c),
            datasync: c.bool(),
        },
        17 => Fop::Readdir {
            gfid: gfid(c, known),
            cookie: if c.bool() { c.u64() } else { 0 },
            plus: c.bool(),
            max_entries: c.u32(),
        },
        18 => Fop::Statfs,
        19 => Fop::GetXattr {
            gfid: gfid(c, known),
            name: xattr_name(c),
        },
        20 => Fop::SetXattr {
            gfid: gfid(c, known),
            name: xattr_name(c),
            value: name(c),
            flags: c.u32() as i32 % 4,
        },
        21 => Fop::ListXattr { gfid: gfid(c, known) },
        22 => Fop::RemoveXattr {
            gfid: gfid(c, known),
            name: xattr_name(c),
        },
        23 => Fop::Fallocate {
            fh: fh(c),
            mode: c.u8() as i32,
            offset: c.small(),
            len: c.small(),
        },
        24 => Fop::Lseek {
            fh: fh(c),
            offset: c.u64() as i64,
            whence: c.u8() as i32 % 6,
        },
        25 => Fop::CopyFileRange {
            fh_in: fh(c),
            offset_in: c.small(),
            fh_out: fh(c),
            offset_out: c.small(),
            len: c.small(),
        },
        26 => Fop::Fsyncdir {
            gfid: gfid(c, known),
            datasync: c.bool(),
        },
        27 => Fop::LayoutGet { gfid: gfid(c, known) },
        28 => Fop::LayoutSet {
            gfid: gfid(c, known),
            entry: (0..c.u8() % 40).map(|_| c.u8()).collect(),
        },
        29 => Fop::MakeLink {
            parent: gfid(c, known),
            name: name(c),
            gfid: new_gfid(c, known),
            target: Uuid::from_u128(u128::from(c.u8())),
        },
        30 => Fop::Xattrop {
            gfid: gfid(c, known),
            deltas: (0..c.u8() % 3)
                .map(|_| {
                    let n = String::from_utf8_lossy(&xattr_name(c)).into_owned();
                    let n = if c.bool() {
                        format!("trusted.cairn.afr.{}", c.u8())
                    } else {
                        n
                    };
                    (n, [c.u32() as i32, c.u32() as i32, c.u32() as i32])
                })
                .collect(),
        },
        31 => Fop::Checksum {
            fh: fh(c),
            offset: c.small(),
            len: c.small() as u32,
        },
        _ => Fop::SetLinkto {
            gfid: gfid(c, known),
            target: c.bool().then(|| Uuid::from_u128(u128::from(c.u8()))),
        },
    }
}

/// Keeps a raw op inside the bounds the server enforces before dispatch
/// (payload size) and off the disk (huge allocations or copies).
fn bounded(op: Fop) -> Option<Fop> {
    match &op {
        Fop::Write { len, .. } if u64::from(*len) > MAX_BYTES => None,
        Fop::Fallocate { len, .. } if *len > MAX_BYTES => None,
        Fop::CopyFileRange { len, .. } if *len > MAX_BYTES => None,
        Fop::Mknod { mode, .. } if matches!(mode & libc::S_IFMT, libc::S_IFCHR | libc::S_IFBLK) => None,
        _ => Some(op),
    }
}

/// Runs one op as the server would; with `squashed`, as a root-squashed
/// mount user first passes the brick's permission checks.
fn run(world: &mut World, files: &fops::OpenFiles, op: Fop, squashed: bool) {
    let squash = access::Squash {
        anon_uid: 65534,
        anon_gid: 65534,
    };
    let op = if squashed {
        if access::check(&world.brick, &op, &squash.map(ROOT_CREDS)).is_err() {
            return;
        }
        squash.squash_new_owner(op)
    } else {
        op
    };
    let payload = match &op {
        Fop::Write { len, .. } => Bytes::from(vec![0x5a; *len as usize]),
        _ => Bytes::new(),
    };
    if let Ok((reply, _)) = fops::blocking_fop(&world.brick, files, op, payload) {
        use cairn_common::proto::Reply;
        match reply {
            Reply::Entry(a) | Reply::Created { attr: a, .. } if world.known.len() < 64 => world.known.push(a.gfid),
            _ => {}
        }
    }
}

static WORLD: Mutex<Option<World>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let mut guard = WORLD.lock().unwrap_or_else(|e| e.into_inner());
    if guard.as_ref().is_none_or(|w| w.runs >= RUNS_PER_BRICK) {
        *guard = None; // the old brick goes before the new one is made
        *guard = Some(World::new());
    }
    let world = guard.as_mut().expect("a world");
    world.runs += 1;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let squashed = mode & 2 != 0;
    // Open files live for one input, as for one connection.
    let files = fops::OpenFiles::default();
    if mode & 1 == 0 {
        let mut c = Cursor { data: rest };
        for _ in 0..32 {
            if c.data.is_empty() {
                break;
            }
            let op = decode_op(&mut c, &world.known);
            if let Some(op) = bounded(op) {
                run(world, &files, op, squashed);
            }
        }
    } else {
        let mut rest = rest;
        while let Ok((op, tail)) = postcard::take_from_bytes::<Fop>(rest) {
            rest = tail;
            if let Some(op) = bounded(op) {
                run(world, &files, op, squashed);
            }
        }
    }
    drop(files);
    world.check_nothing_escaped();
});
