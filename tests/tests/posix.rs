//! POSIX semantics through a Cairn mount: every operation with its success
//! and error paths, checked against the brick where the on-disk result is
//! part of the contract.

use cairn_tests::{
    c_path, check_libc, errno, errno_name, expect_errno, expect_libc_err, helper, helper_bin, helper_err, pattern,
    read_file, write_file, Cluster, ClusterOpts, LockHolder,
};
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{
    DirBuilderExt, DirEntryExt, FileExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const RENAME_NOREPLACE: libc::c_uint = 1;
const RENAME_EXCHANGE: libc::c_uint = 2;

fn meta(p: &Path) -> fs::Metadata {
    fs::metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
}

fn lmeta(p: &Path) -> fs::Metadata {
    fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
}

fn open_rw(p: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .unwrap_or_else(|e| panic!("open {}: {e}", p.display()))
}

fn create_rw(p: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(p)
        .unwrap_or_else(|e| panic!("create {}: {e}", p.display()))
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64
}

fn names_in(dir: &Path) -> Vec<OsString> {
    let mut v: Vec<OsString> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").file_name())
        .collect();
    v.sort();
    v
}

fn os(names: &[&str]) -> Vec<OsString> {
    let mut v: Vec<OsString> = names.iter().map(OsString::from).collect();
    v.sort();
    v
}

fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> i64 {
    let (a, b) = (c_path(from), c_path(to));
    // SAFETY: valid C strings; the syscall takes (int, char*, int, char*, uint).
    unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    }
}

fn fallocate(f: &File, mode: i32, off: u64, len: u64) -> i64 {
    // SAFETY: plain syscall on our fd.
    unsafe { libc::fallocate(f.as_raw_fd(), mode, off as i64, len as i64) }.into()
}

fn lseek(f: &File, off: i64, whence: i32) -> i64 {
    // SAFETY: plain syscall on our fd.
    unsafe { libc::lseek(f.as_raw_fd(), off, whence) }
}

fn read_at(f: &File, off: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, off)
        .unwrap_or_else(|e| panic!("pread {len} at {off}: {e}"));
    buf
}

// ---------------------------------------------------------------------------

#[test]
fn create_open_read_write_append() {
    let c = Cluster::new();
    let p = c.p("file");
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&p)
        .expect("O_CREAT|O_EXCL");
    expect_errno(
        OpenOptions::new().write(true).create_new(true).open(&p),
        libc::EEXIST,
        "O_CREAT|O_EXCL on an existing file",
    );
    f.write_all(b"hello world").expect("write");
    drop(f);
    assert_eq!(read_file(&p), b"hello world");

    // pwrite in the middle, pread back.
    let f = open_rw(&p);
    f.write_all_at(b"WORLD", 6).expect("pwrite");
    assert_eq!(read_at(&f, 0, 11), b"hello WORLD");
    let mut short = [0u8; 64];
    assert_eq!(f.read_at(&mut short, 8).expect("pread at EOF-3"), 3);
    assert_eq!(f.read_at(&mut short, 100).expect("pread past EOF"), 0);
    drop(f);

    // O_APPEND always writes at the end, whatever the offset.
    let mut a = OpenOptions::new().append(true).open(&p).expect("O_APPEND");
    a.write_all(b"!!").expect("append");
    a.seek(SeekFrom::Start(0)).expect("seek");
    a.write_all(b"??").expect("append after seek");
    drop(a);
    assert_eq!(read_file(&p), b"hello WORLD!!??");

    // O_TRUNC empties it.
    let t = OpenOptions::new().write(true).truncate(true).open(&p).expect("O_TRUNC");
    assert_eq!(t.metadata().expect("fstat").len(), 0);
    drop(t);

    // Opening a missing file without O_CREAT, and a file below a file.
    expect_errno(File::open(c.p("missing")), libc::ENOENT, "open missing");
    expect_errno(File::open(c.p("file/x")), libc::ENOTDIR, "open file/x");
    // Writing a directory.
    fs::create_dir(c.p("d")).expect("mkdir");
    expect_errno(
        OpenOptions::new().write(true).open(c.p("d")),
        libc::EISDIR,
        "open a directory for writing",
    );
    // Reading through a write-only descriptor.
    let mut w = OpenOptions::new().write(true).open(&p).expect("open wo");
    let mut buf = [0u8; 4];
    expect_errno(w.read(&mut buf), libc::EBADF, "read on O_WRONLY");
    // The data is the brick's file, byte for byte.
    write_file(&p, b"on the brick");
    assert_eq!(read_file(&c.b("file")), b"on the brick");
}

#[test]
fn stat_fields() {
    let c = Cluster::new();
    let p = c.p("f");
    let before = now_secs();
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(&p)
        .expect("create");
    f.write_all(&pattern(1, 10_000)).expect("write");
    f.sync_all().expect("fsync");
    drop(f);
    let m = meta(&p);
    assert!(m.file_type().is_file());
    assert_eq!(m.len(), 10_000);
    assert_eq!(m.mode(), libc::S_IFREG | 0o640, "mode {:o}", m.mode());
    assert_eq!((m.uid(), m.gid()), (0, 0));
    assert_eq!(m.nlink(), 1, "a new file has one link");
    assert!(m.blksize() > 0);
    assert!(m.blocks() * 512 >= 10_000, "blocks {} for 10000 bytes", m.blocks());
    assert!(
        m.mtime() >= before - 2 && m.mtime() <= now_secs() + 2,
        "mtime {} not around now ({before})",
        m.mtime()
    );
    assert_eq!(m.dev(), meta(c.mnt()).dev(), "st_dev is the mount's");
    assert_ne!(m.ino(), meta(c.mnt()).ino());
    assert_eq!(meta(&p).ino(), m.ino(), "inode numbers are stable");
    let listed = fs::read_dir(c.mnt())
        .expect("readdir")
        .map(|e| e.expect("entry"))
        .find(|e| e.file_name() == "f")
        .expect("f listed");
    assert_eq!(listed.ino(), m.ino(), "readdir d_ino matches st_ino");

    // Same size, mode, owner and times as the brick's file.
    let b = meta(&c.b("f"));
    assert_eq!(b.len(), m.len());
    assert_eq!(b.mode(), m.mode());
    assert_eq!((b.mtime(), b.mtime_nsec()), (m.mtime(), m.mtime_nsec()));

    // Directories: type, mode, link count.
    fs::DirBuilder::new().mode(0o750).create(c.p("d")).expect("mkdir");
    let d = meta(&c.p("d"));
    assert!(d.is_dir());
    assert_eq!(d.mode(), libc::S_IFDIR | 0o750, "mode {:o}", d.mode());
    assert_eq!(d.nlink(), 2, "an empty directory has 2 links");
    fs::create_dir(c.p("d/sub")).expect("mkdir sub");
    assert_eq!(meta(&c.p("d")).nlink(), 3, "a subdirectory adds a link");
    expect_errno(fs::metadata(c.p("nope")), libc::ENOENT, "stat missing");
}

#[test]
fn chmod_and_chown() {
    let c = Cluster::new();
    let p = c.p("f");
    write_file(&p, b"x");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).expect("chmod 600");
    assert_eq!(meta(&p).mode() & 0o7777, 0o600);
    assert_eq!(meta(&c.b("f")).mode() & 0o7777, 0o600, "brick mode");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o4755)).expect("chmod 4755");
    assert_eq!(meta(&p).mode() & 0o7777, 0o4755);

    // chown as root works, and (as on Linux file systems) clears set-uid.
    std::os::unix::fs::chown(&p, Some(65534), Some(65534)).expect("chown as root");
    let m = meta(&p);
    assert_eq!((m.uid(), m.gid()), (65534, 65534));
    assert_eq!(m.mode() & 0o7777, 0o755, "chown clears the set-uid bit");
    let b = meta(&c.b("f"));
    assert_eq!((b.uid(), b.gid()), (65534, 65534), "brick owner");
    // Only the group; the owner stays.
    std::os::unix::fs::chown(&p, None, Some(100)).expect("chgrp");
    let m = meta(&p);
    assert_eq!((m.uid(), m.gid()), (65534, 100));
    // fchmod / fchown through a descriptor.
    let f = open_rw(&p);
    f.set_permissions(fs::Permissions::from_mode(0o640)).expect("fchmod");
    std::os::unix::fs::fchown(&f, Some(0), Some(0)).expect("fchown");
    let m = f.metadata().expect("fstat");
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (0, 0, 0o640));
    drop(f);

    // lchown changes the link, not its target.
    std::os::unix::fs::symlink("f", c.p("link")).expect("symlink");
    std::os::unix::fs::lchown(c.p("link"), Some(1234), Some(1234)).expect("lchown");
    assert_eq!(lmeta(&c.p("link")).uid(), 1234);
    assert_eq!(lmeta(&c.b("link")).uid(), 1234, "brick symlink owner");
    assert_eq!(meta(&p).uid(), 0, "the target keeps its owner");
    assert_eq!(meta(&c.b("f")).uid(), 0, "brick target keeps its owner");

    // Directories too.
    fs::create_dir(c.p("d")).expect("mkdir");
    fs::set_permissions(c.p("d"), fs::Permissions::from_mode(0o1777)).expect("chmod dir");
    assert_eq!(meta(&c.p("d")).mode() & 0o7777, 0o1777);
    std::os::unix::fs::chown(c.p("d"), Some(5), Some(6)).expect("chown dir");
    assert_eq!((meta(&c.p("d")).uid(), meta(&c.p("d")).gid()), (5, 6));

    expect_errno(
        fs::set_permissions(c.p("missing"), fs::Permissions::from_mode(0o644)),
        libc::ENOENT,
        "chmod missing",
    );
    expect_errno(
        std::os::unix::fs::chown(c.p("missing"), Some(1), Some(1)),
        libc::ENOENT,
        "chown missing",
    );
}

fn ts(sec: i64, nsec: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

fn utimensat(p: &Path, times: Option<[libc::timespec; 2]>, flags: i32) -> i64 {
    let cp = c_path(p);
    let ptr = times.as_ref().map_or(std::ptr::null(), |t| t.as_ptr());
    // SAFETY: valid C string and either NULL or two timespecs.
    unsafe { libc::utimensat(libc::AT_FDCWD, cp.as_ptr(), ptr, flags) }.into()
}

fn times_of(m: &fs::Metadata) -> ((i64, i64), (i64, i64)) {
    ((m.atime(), m.atime_nsec()), (m.mtime(), m.mtime_nsec()))
}

#[test]
fn utimensat_explicit_now_and_omit() {
    let c = Cluster::new();
    let p = c.p("f");
    write_file(&p, b"times");
    check_libc(
        utimensat(&p, Some([ts(1000, 500), ts(2000, 700)]), 0),
        "utimensat explicit",
    );
    assert_eq!(times_of(&meta(&p)), ((1000, 500), (2000, 700)));
    assert_eq!(times_of(&meta(&c.b("f"))), ((1000, 500), (2000, 700)), "brick times");

    // UTIME_OMIT leaves atime alone.
    check_libc(
        utimensat(&p, Some([ts(0, libc::UTIME_OMIT), ts(3000, 0)]), 0),
        "utimensat omit atime",
    );
    assert_eq!(times_of(&meta(&p)), ((1000, 500), (3000, 0)));

    // UTIME_NOW sets mtime to the current time, atime still omitted.
    let before = now_secs();
    check_libc(
        utimensat(&p, Some([ts(0, libc::UTIME_OMIT), ts(0, libc::UTIME_NOW)]), 0),
        "utimensat now mtime",
    );
    let m = meta(&p);
    assert_eq!((m.atime(), m.atime_nsec()), (1000, 500), "atime omitted");
    assert!(
        m.mtime() >= before - 2 && m.mtime() <= now_secs() + 2,
        "UTIME_NOW gave mtime {} (now {before})",
        m.mtime()
    );

    // Both omitted: nothing changes.
    let snapshot = times_of(&meta(&p));
    check_libc(
        utimensat(&p, Some([ts(0, libc::UTIME_OMIT), ts(0, libc::UTIME_OMIT)]), 0),
        "utimensat omit both",
    );
    assert_eq!(times_of(&meta(&p)), snapshot);

    // NULL times: both now.
    check_libc(utimensat(&p, Some([ts(5, 0), ts(5, 0)]), 0), "utimensat old");
    check_libc(utimensat(&p, None, 0), "utimensat NULL");
    let m = meta(&p);
    assert!(m.atime() >= before - 2 && m.mtime() >= before - 2);

    // futimens through a descriptor.
    let f = open_rw(&p);
    let t = [ts(4000, 1), ts(4001, 2)];
    // SAFETY: our fd, two timespecs.
    check_libc(unsafe { libc::futimens(f.as_raw_fd(), t.as_ptr()) }.into(), "futimens");
    assert_eq!(times_of(&f.metadata().expect("fstat")), ((4000, 1), (4001, 2)));
    drop(f);

    // AT_SYMLINK_NOFOLLOW sets the link's own times.
    std::os::unix::fs::symlink("f", c.p("l")).expect("symlink");
    check_libc(
        utimensat(&c.p("l"), Some([ts(7000, 0), ts(7001, 0)]), libc::AT_SYMLINK_NOFOLLOW),
        "utimensat nofollow",
    );
    assert_eq!(lmeta(&c.p("l")).mtime(), 7001);
    assert_eq!(lmeta(&c.b("l")).mtime(), 7001, "brick symlink mtime");
    assert_eq!(meta(&p).mtime(), 4001, "target untouched");

    expect_libc_err(utimensat(&c.p("missing"), None, 0), libc::ENOENT, "utimensat missing");
}

#[test]
fn timestamps_before_the_epoch_and_far_ahead() {
    let c = Cluster::new();
    let p = c.p("f");
    write_file(&p, b"old");
    // 2242 is inside ext4's range (it ends in 2446).
    check_libc(
        utimensat(&p, Some([ts(-1000, 5), ts(1 << 33, 999_999_999)]), 0),
        "utimensat pre-epoch / far future",
    );
    assert_eq!(
        times_of(&meta(&c.b("f"))),
        ((-1000, 5), (1 << 33, 999_999_999)),
        "times stored on the brick (-1000 s + 5 ns, 2^33 s + 999999999 ns)"
    );
    assert_eq!(
        times_of(&meta(&p)),
        ((-1000, 5), (1 << 33, 999_999_999)),
        "times seen through the mount"
    );
    check_libc(
        utimensat(&p, Some([ts(-1, 0), ts(-86_400 * 365, 0)]), 0),
        "utimensat whole pre-epoch seconds",
    );
    assert_eq!(times_of(&meta(&p)), ((-1, 0), (-86_400 * 365, 0)));
}

#[test]
fn truncate_grow_and_shrink() {
    let c = Cluster::new();
    let p = c.p("f");
    let data = pattern(2, 10_000);
    write_file(&p, &data);
    let f = open_rw(&p);
    f.set_len(100).expect("shrink");
    assert_eq!(f.metadata().expect("fstat").len(), 100);
    assert_eq!(read_file(&p), &data[..100]);
    f.set_len(50_000).expect("grow");
    let all = read_file(&p);
    assert_eq!(all.len(), 50_000);
    assert_eq!(&all[..100], &data[..100]);
    assert!(all[100..].iter().all(|&b| b == 0), "grown part reads zero");
    drop(f);
    // truncate(2) by path.
    let cp = c_path(&p);
    // SAFETY: valid C string.
    check_libc(unsafe { libc::truncate(cp.as_ptr(), 10) }.into(), "truncate");
    assert_eq!(meta(&p).len(), 10);
    assert_eq!(meta(&c.b("f")).len(), 10, "brick size");
    assert_eq!(read_file(&c.b("f")), &data[..10]);
    // SAFETY: as above.
    check_libc(unsafe { libc::truncate(cp.as_ptr(), 0) }.into(), "truncate 0");
    assert_eq!(read_file(&p), b"");

    let missing = c_path(&c.p("missing"));
    // SAFETY: valid C string.
    expect_libc_err(
        unsafe { libc::truncate(missing.as_ptr(), 1) }.into(),
        libc::ENOENT,
        "truncate missing",
    );
    fs::create_dir(c.p("d")).expect("mkdir");
    let d = c_path(&c.p("d"));
    // SAFETY: valid C string.
    expect_libc_err(
        unsafe { libc::truncate(d.as_ptr(), 1) }.into(),
        libc::EISDIR,
        "truncate a directory",
    );
    // SAFETY: valid C string.
    expect_libc_err(
        unsafe { libc::truncate(cp.as_ptr(), -1) }.into(),
        libc::EINVAL,
        "truncate to -1",
    );
}

#[test]
fn mkdir_and_rmdir() {
    let c = Cluster::new();
    fs::create_dir(c.p("a")).expect("mkdir a");
    expect_errno(fs::create_dir(c.p("a")), libc::EEXIST, "mkdir existing");
    fs::create_dir(c.p("a/b")).expect("mkdir a/b");
    write_file(&c.p("a/b/f"), b"x");
    expect_errno(fs::remove_dir(c.p("a")), libc::ENOTEMPTY, "rmdir non-empty");
    expect_errno(fs::remove_dir(c.p("a/b/f")), libc::ENOTDIR, "rmdir a file");
    expect_errno(fs::remove_dir(c.p("zz")), libc::ENOENT, "rmdir missing");
    expect_errno(fs::create_dir(c.p("a/b/f/x")), libc::ENOTDIR, "mkdir below a file");
    expect_errno(fs::create_dir(c.p("nope/x")), libc::ENOENT, "mkdir in a missing dir");
    expect_errno(fs::create_dir(c.p("a/b/f")), libc::EEXIST, "mkdir over a file");
    assert!(c.b("a/b").is_dir(), "brick has the directory");
    fs::remove_file(c.p("a/b/f")).expect("unlink");
    fs::remove_dir(c.p("a/b")).expect("rmdir a/b");
    expect_errno(fs::metadata(c.p("a/b")), libc::ENOENT, "stat after rmdir");
    assert!(!c.b("a/b").exists(), "gone from the brick");
    assert_eq!(names_in(&c.p("a")), Vec::<OsString>::new());
    fs::remove_dir(c.p("a")).expect("rmdir a");
    assert_eq!(names_in(c.mnt()), Vec::<OsString>::new());
    // A directory can be recreated with the same name afterwards.
    fs::create_dir(c.p("a")).expect("mkdir a again");
    fs::create_dir(c.p("a/b")).expect("mkdir a/b again");
}

#[test]
fn unlink_paths() {
    let c = Cluster::new();
    write_file(&c.p("f"), b"x");
    fs::create_dir(c.p("d")).expect("mkdir");
    expect_errno(fs::remove_file(c.p("d")), libc::EISDIR, "unlink a directory");
    expect_errno(fs::remove_file(c.p("missing")), libc::ENOENT, "unlink missing");
    expect_errno(fs::remove_file(c.p("f/x")), libc::ENOTDIR, "unlink below a file");
    fs::remove_file(c.p("f")).expect("unlink");
    expect_errno(fs::metadata(c.p("f")), libc::ENOENT, "stat after unlink");
    assert!(!c.b("f").exists(), "gone from the brick");
    // The same name can be made again, as a new, empty file.
    write_file(&c.p("f"), b"");
    assert_eq!(meta(&c.p("f")).len(), 0);
}

#[test]
fn open_unlinked_file_stays_usable() {
    let c = Cluster::new();
    let p = c.p("f");
    write_file(&p, b"still here");
    let f = open_rw(&p);
    fs::remove_file(&p).expect("unlink while open");
    expect_errno(fs::metadata(&p), libc::ENOENT, "name is gone");
    assert_eq!(read_at(&f, 0, 10), b"still here", "read after unlink");
    f.write_all_at(b"STILL", 0).expect("write after unlink");
    assert_eq!(read_at(&f, 0, 10), b"STILL here");
    let m = f.metadata().expect("fstat of an unlinked open file");
    assert_eq!(m.len(), 10);
    assert_eq!(m.nlink(), 0, "an unlinked open file has no links");
}

#[test]
fn rename_files_and_directories() {
    let c = Cluster::new();
    fs::create_dir(c.p("a")).expect("mkdir");
    fs::create_dir(c.p("b")).expect("mkdir");
    write_file(&c.p("a/f"), b"one");
    let ino = meta(&c.p("a/f")).ino();
    // Within a directory.
    fs::rename(c.p("a/f"), c.p("a/g")).expect("rename within");
    assert_eq!(names_in(&c.p("a")), os(&["g"]));
    assert_eq!(meta(&c.p("a/g")).ino(), ino, "rename keeps the inode");
    // Across directories (never EXDEV).
    fs::rename(c.p("a/g"), c.p("b/g")).expect("rename across");
    assert_eq!(read_file(&c.p("b/g")), b"one");
    assert!(c.b("b/g").is_file() && !c.b("a/g").exists(), "brick follows");
    // A directory with content, across directories.
    fs::create_dir_all(c.p("a/sub/deep")).expect("mkdir -p");
    write_file(&c.p("a/sub/deep/x"), b"deep");
    fs::rename(c.p("a/sub"), c.p("b/moved")).expect("rename dir across");
    assert_eq!(read_file(&c.p("b/moved/deep/x")), b"deep");
    assert_eq!(read_file(&c.b("b/moved/deep/x")), b"deep");
    expect_errno(fs::metadata(c.p("a/sub")), libc::ENOENT, "old dir name");
    // Files created in a moved directory land in the right place.
    write_file(&c.p("b/moved/deep/y"), b"new");
    assert_eq!(read_file(&c.b("b/moved/deep/y")), b"new");

    // Over an existing file: replaced atomically.
    write_file(&c.p("b/h"), b"two");
    let src_ino = meta(&c.p("b/g")).ino();
    fs::rename(c.p("b/g"), c.p("b/h")).expect("rename over a file");
    assert_eq!(read_file(&c.p("b/h")), b"one");
    assert_eq!(meta(&c.p("b/h")).ino(), src_ino);
    assert_eq!(names_in(&c.p("b")), os(&["h", "moved"]));
    assert_eq!(read_file(&c.b("b/h")), b"one");
    // Over an empty directory.
    fs::create_dir(c.p("empty")).expect("mkdir");
    fs::rename(c.p("b/moved"), c.p("empty")).expect("rename dir over empty dir");
    assert_eq!(read_file(&c.p("empty/deep/x")), b"deep");
    // Over a non-empty directory, a file over a dir, a dir over a file.
    fs::create_dir(c.p("full")).expect("mkdir");
    write_file(&c.p("full/x"), b"");
    fs::create_dir(c.p("d2")).expect("mkdir");
    expect_errno(
        fs::rename(c.p("d2"), c.p("full")),
        libc::ENOTEMPTY,
        "rename over a non-empty dir",
    );
    expect_errno(
        fs::rename(c.p("b/h"), c.p("d2")),
        libc::EISDIR,
        "rename a file over a dir",
    );
    expect_errno(
        fs::rename(c.p("d2"), c.p("b/h")),
        libc::ENOTDIR,
        "rename a dir over a file",
    );
    expect_errno(fs::rename(c.p("missing"), c.p("x")), libc::ENOENT, "rename missing");
    expect_errno(
        fs::rename(c.p("empty"), c.p("empty/deep/inside")),
        libc::EINVAL,
        "rename a dir into itself",
    );
    // Renaming onto itself is a no-op.
    fs::rename(c.p("b/h"), c.p("b/h")).expect("rename onto itself");
    assert_eq!(read_file(&c.p("b/h")), b"one");
}

#[test]
fn renameat2_noreplace_and_exchange() {
    let c = Cluster::new();
    write_file(&c.p("x"), b"xx");
    write_file(&c.p("y"), b"yy");
    expect_libc_err(
        renameat2(&c.p("x"), &c.p("y"), RENAME_NOREPLACE),
        libc::EEXIST,
        "RENAME_NOREPLACE onto an existing name",
    );
    assert_eq!(read_file(&c.p("y")), b"yy", "target untouched");
    check_libc(
        renameat2(&c.p("x"), &c.p("z"), RENAME_NOREPLACE),
        "RENAME_NOREPLACE to a new name",
    );
    assert_eq!(names_in(c.mnt()), os(&["y", "z"]));

    check_libc(renameat2(&c.p("y"), &c.p("z"), RENAME_EXCHANGE), "RENAME_EXCHANGE");
    assert_eq!(read_file(&c.p("y")), b"xx");
    assert_eq!(read_file(&c.p("z")), b"yy");
    assert_eq!(read_file(&c.b("y")), b"xx", "brick exchanged");
    assert_eq!(read_file(&c.b("z")), b"yy", "brick exchanged");

    // A file and a directory, across directories.
    fs::create_dir(c.p("d")).expect("mkdir");
    fs::create_dir(c.p("d/sub")).expect("mkdir");
    write_file(&c.p("d/sub/inner"), b"in");
    check_libc(
        renameat2(&c.p("y"), &c.p("d/sub"), RENAME_EXCHANGE),
        "RENAME_EXCHANGE file <-> dir",
    );
    assert!(meta(&c.p("y")).is_dir());
    assert_eq!(read_file(&c.p("y/inner")), b"in");
    assert_eq!(read_file(&c.p("d/sub")), b"xx");
    // The moved directory still works as a parent.
    write_file(&c.p("y/new"), b"n");
    assert_eq!(read_file(&c.b("y/new")), b"n");
    expect_libc_err(
        renameat2(&c.p("z"), &c.p("nothere"), RENAME_EXCHANGE),
        libc::ENOENT,
        "RENAME_EXCHANGE with a missing target",
    );
}

#[test]
fn hard_links() {
    let c = Cluster::new();
    write_file(&c.p("a"), b"linked");
    assert_eq!(meta(&c.p("a")).nlink(), 1);
    fs::create_dir(c.p("d")).expect("mkdir");
    fs::hard_link(c.p("a"), c.p("d/b")).expect("link");
    let (ma, mb) = (meta(&c.p("a")), meta(&c.p("d/b")));
    assert_eq!(ma.nlink(), 2, "two names");
    assert_eq!(mb.nlink(), 2);
    assert_eq!(ma.ino(), mb.ino(), "one inode");
    // Write through one name, read through the other.
    let f = open_rw(&c.p("d/b"));
    f.write_all_at(b"LINKED", 0).expect("write");
    drop(f);
    assert_eq!(read_file(&c.p("a")), b"LINKED");
    assert_eq!(
        meta(&c.b("a")).ino(),
        meta(&c.b("d/b")).ino(),
        "a hard link on the brick"
    );
    expect_errno(
        fs::hard_link(c.p("a"), c.p("d/b")),
        libc::EEXIST,
        "link onto an existing name",
    );
    expect_errno(fs::hard_link(c.p("d"), c.p("d2")), libc::EPERM, "link a dir");
    expect_errno(fs::hard_link(c.p("missing"), c.p("m2")), libc::ENOENT, "link missing");
    fs::remove_file(c.p("a")).expect("unlink one name");
    assert_eq!(meta(&c.p("d/b")).nlink(), 1);
    assert_eq!(read_file(&c.p("d/b")), b"LINKED");
    // Link again after the count went down, then remove both.
    fs::hard_link(c.p("d/b"), c.p("c")).expect("relink");
    assert_eq!(meta(&c.p("c")).nlink(), 2);
    fs::remove_file(c.p("d/b")).expect("unlink");
    fs::remove_file(c.p("c")).expect("unlink last");
    assert_eq!(names_in(&c.p("d")), Vec::<OsString>::new());
}

#[test]
fn symlinks() {
    let c = Cluster::new();
    fs::create_dir(c.p("dir")).expect("mkdir");
    write_file(&c.p("dir/target"), b"pointed to");
    std::os::unix::fs::symlink("dir/target", c.p("rel")).expect("symlink");
    std::os::unix::fs::symlink("dir", c.p("dirlink")).expect("symlink to dir");
    let long_target = "t".repeat(1000);
    std::os::unix::fs::symlink(&long_target, c.p("long")).expect("long symlink");
    let m = lmeta(&c.p("rel"));
    assert!(m.file_type().is_symlink());
    assert_eq!(m.len(), "dir/target".len() as u64, "symlink size");
    assert_eq!(
        fs::read_link(c.p("rel")).expect("readlink"),
        PathBuf::from("dir/target")
    );
    assert_eq!(
        fs::read_link(c.p("long")).expect("readlink long"),
        PathBuf::from(&long_target)
    );
    // Followed on open and for directories.
    assert_eq!(read_file(&c.p("rel")), b"pointed to");
    assert_eq!(read_file(&c.p("dirlink/target")), b"pointed to");
    assert_eq!(meta(&c.p("rel")).len(), 10, "stat follows");
    // Brick: a real symlink with the same text.
    assert_eq!(
        fs::read_link(c.b("rel")).expect("brick readlink"),
        PathBuf::from("dir/target")
    );
    // Errors.
    expect_errno(
        fs::read_link(c.p("dir/target")),
        libc::EINVAL,
        "readlink a regular file",
    );
    std::os::unix::fs::symlink("nowhere", c.p("dangling")).expect("dangling symlink");
    expect_errno(File::open(c.p("dangling")), libc::ENOENT, "open dangling");
    assert!(lmeta(&c.p("dangling")).file_type().is_symlink());
    expect_errno(
        std::os::unix::fs::symlink("x", c.p("rel")),
        libc::EEXIST,
        "symlink over an existing name",
    );
    std::os::unix::fs::symlink("loop", c.p("loop")).expect("self loop");
    expect_errno(File::open(c.p("loop")), libc::ELOOP, "open a symlink loop");
    // Unlinking the link leaves the target.
    fs::remove_file(c.p("rel")).expect("unlink symlink");
    assert_eq!(read_file(&c.p("dir/target")), b"pointed to");
}

#[test]
fn symlink_pointing_outside_stays_a_symlink_on_the_brick() {
    let c = Cluster::new();
    std::os::unix::fs::symlink("/etc/passwd", c.p("abs")).expect("symlink abs");
    let up = "../".repeat(40) + "etc/passwd";
    std::os::unix::fs::symlink(&up, c.p("up")).expect("symlink up");
    for (name, target) in [("abs", "/etc/passwd"), ("up", up.as_str())] {
        let bm = lmeta(&c.b(name));
        assert!(bm.file_type().is_symlink(), "{name} on the brick is a symlink");
        assert_eq!(fs::read_link(c.b(name)).expect("brick readlink"), PathBuf::from(target));
    }
    // Through the mount, the client resolves the absolute link on its side
    // (POSIX): the client's /etc/passwd.
    let passwd = read_file(Path::new("/etc/passwd"));
    assert_eq!(read_file(&c.p("abs")), passwd);
    // The brick's own entries are untouched: still links, no copies made.
    assert!(lmeta(&c.b("abs")).file_type().is_symlink());
    assert_eq!(names_in(c.mnt()), os(&["abs", "up"]));
    // A hard link to a file outside the volume is impossible.
    expect_errno(
        fs::hard_link("/etc/passwd", c.p("pw")),
        libc::EXDEV,
        "link from outside the mount",
    );
    // Writing through a link to a directory outside is the client's business
    // too; the brick never gets an entry outside itself.
    std::os::unix::fs::symlink(c.dir.join("outside"), c.p("out")).expect("symlink out");
    fs::create_dir(c.dir.join("outside")).expect("mkdir outside");
    write_file(&c.p("out/file"), b"client side");
    assert_eq!(read_file(&c.dir.join("outside/file")), b"client side");
    assert!(lmeta(&c.b("out")).file_type().is_symlink());
    let mut brick_names = names_in(&c.brick);
    brick_names.retain(|n| n != ".cairn");
    assert_eq!(brick_names, os(&["abs", "out", "up"]), "brick entries");
}

#[test]
fn fifo_and_device_nodes() {
    let c = Cluster::new();
    let p = c_path(&c.p("fifo"));
    // SAFETY: valid C string.
    check_libc(unsafe { libc::mkfifo(p.as_ptr(), 0o640) }.into(), "mkfifo");
    let m = lmeta(&c.p("fifo"));
    assert!(m.file_type().is_fifo(), "mode {:o}", m.mode());
    assert_eq!(m.mode() & 0o7777, 0o640);
    assert!(lmeta(&c.b("fifo")).file_type().is_fifo(), "brick fifo");
    // SAFETY: as above.
    expect_libc_err(
        unsafe { libc::mkfifo(p.as_ptr(), 0o640) }.into(),
        libc::EEXIST,
        "mkfifo existing",
    );
    // A fifo carries data between its readers and writers (kernel side).
    let fifo = OpenOptions::new()
        .read(true)
        .write(true)
        .open(c.p("fifo"))
        .expect("open fifo O_RDWR");
    (&fifo).write_all(b"ping").expect("write fifo");
    let mut buf = [0u8; 4];
    (&fifo).read_exact(&mut buf).expect("read fifo");
    assert_eq!(&buf, b"ping");
    drop(fifo);

    // A character device node keeps its rdev.
    let dev = c_path(&c.p("null"));
    let rdev = libc::makedev(1, 3);
    // SAFETY: valid C string.
    check_libc(
        unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o600, rdev) }.into(),
        "mknod chr",
    );
    let m = lmeta(&c.p("null"));
    assert!(m.file_type().is_char_device());
    assert_eq!(m.rdev(), rdev);
    assert_eq!(lmeta(&c.b("null")).rdev(), rdev, "brick rdev");
    // A regular file by mknod.
    let reg = c_path(&c.p("reg"));
    // SAFETY: valid C string.
    check_libc(
        unsafe { libc::mknod(reg.as_ptr(), libc::S_IFREG | 0o644, 0) }.into(),
        "mknod reg",
    );
    assert!(meta(&c.p("reg")).is_file());
    assert_eq!(meta(&c.p("reg")).nlink(), 1);
}

fn setxattr(p: &Path, name: &str, value: &[u8], flags: i32) -> i64 {
    let (cp, cn) = (c_path(p), CString::new(name).expect("name"));
    // SAFETY: valid C strings and buffer.
    unsafe { libc::setxattr(cp.as_ptr(), cn.as_ptr(), value.as_ptr().cast(), value.len(), flags) }.into()
}

fn getxattr(p: &Path, name: &str, size: usize) -> (i64, Vec<u8>) {
    let (cp, cn) = (c_path(p), CString::new(name).expect("name"));
    let mut buf = vec![0u8; size];
    let ptr = if size == 0 {
        std::ptr::null_mut()
    } else {
        buf.as_mut_ptr().cast()
    };
    // SAFETY: valid C strings; buffer of `size` bytes (or NULL with 0).
    let n = unsafe { libc::getxattr(cp.as_ptr(), cn.as_ptr(), ptr, size) } as i64;
    buf.truncate(n.max(0) as usize);
    (n, buf)
}

fn listxattr(p: &Path) -> Vec<String> {
    let cp = c_path(p);
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid C string and buffer.
    let n = unsafe { libc::listxattr(cp.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    check_libc(n as i64, "listxattr");
    let mut names: Vec<String> = buf[..n as usize]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    names.sort();
    names
}

fn removexattr(p: &Path, name: &str) -> i64 {
    let (cp, cn) = (c_path(p), CString::new(name).expect("name"));
    // SAFETY: valid C strings.
    unsafe { libc::removexattr(cp.as_ptr(), cn.as_ptr()) }.into()
}

#[test]
fn user_xattrs() {
    let c = Cluster::new();
    let p = c.p("f");
    write_file(&p, b"x");
    check_libc(setxattr(&p, "user.a", b"value-a", 0), "setxattr user.a");
    check_libc(setxattr(&p, "user.b", b"", 0), "setxattr empty value");
    let big = pattern(3, 4000);
    check_libc(setxattr(&p, "user.big", &big, 0), "setxattr 4000 bytes");
    assert_eq!(getxattr(&p, "user.a", 100), (7, b"value-a".to_vec()));
    assert_eq!(getxattr(&p, "user.a", 0).0, 7, "size query");
    assert_eq!(getxattr(&p, "user.b", 100), (0, vec![]));
    assert_eq!(getxattr(&p, "user.big", 8192).1, big);
    assert_eq!(listxattr(&p), vec!["user.a", "user.b", "user.big"]);
    // The brick's file carries them too.
    assert_eq!(getxattr(&c.b("f"), "user.a", 100).1, b"value-a");

    let (n, _) = getxattr(&p, "user.a", 3);
    expect_libc_err(n, libc::ERANGE, "getxattr into a short buffer");
    let (n, _) = getxattr(&p, "user.none", 100);
    expect_libc_err(n, libc::ENODATA, "getxattr missing");
    expect_libc_err(
        setxattr(&p, "user.a", b"again", libc::XATTR_CREATE),
        libc::EEXIST,
        "XATTR_CREATE existing",
    );
    expect_libc_err(
        setxattr(&p, "user.none", b"v", libc::XATTR_REPLACE),
        libc::ENODATA,
        "XATTR_REPLACE missing",
    );
    check_libc(
        setxattr(&p, "user.a", b"replaced", libc::XATTR_REPLACE),
        "XATTR_REPLACE",
    );
    assert_eq!(getxattr(&p, "user.a", 100).1, b"replaced");
    check_libc(removexattr(&p, "user.a"), "removexattr");
    let (n, _) = getxattr(&p, "user.a", 100);
    expect_libc_err(n, libc::ENODATA, "getxattr after remove");
    expect_libc_err(removexattr(&p, "user.a"), libc::ENODATA, "removexattr missing");
    assert_eq!(listxattr(&p), vec!["user.b", "user.big"]);

    // Directories carry xattrs; Cairn's own ones stay hidden.
    fs::create_dir(c.p("d")).expect("mkdir");
    check_libc(setxattr(&c.p("d"), "user.dir", b"d", 0), "setxattr dir");
    assert_eq!(listxattr(&c.p("d")), vec!["user.dir"]);
    assert!(listxattr(c.mnt()).iter().all(|n| !n.contains("cairn")));
    let (n, _) = getxattr(&p, "trusted.cairn.gfid", 100);
    assert_eq!(n, -1, "the gfid xattr is not readable through the mount");
    assert_ne!(
        setxattr(&p, "trusted.cairn.gfid", &[0u8; 16], 0),
        0,
        "the gfid xattr is not writable through the mount"
    );
    assert_ne!(
        removexattr(c.mnt(), "trusted.cairn.volume-id"),
        0,
        "the volume mark cannot be removed through the mount"
    );
    let (n, _) = getxattr(&c.b(""), "trusted.cairn.volume-id", 100);
    assert_eq!(n, 16, "the brick root keeps its volume mark");
}

#[test]
fn statfs_and_access() {
    let c = Cluster::new();
    let cp = c_path(c.mnt());
    // SAFETY: statvfs is plain data; valid C string.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    check_libc(unsafe { libc::statvfs(cp.as_ptr(), &mut s) }.into(), "statvfs");
    assert!(s.f_blocks > 0, "f_blocks");
    assert!(s.f_bsize > 0 && s.f_frsize > 0, "block sizes");
    assert!(s.f_bfree <= s.f_blocks && s.f_bavail <= s.f_bfree);
    assert!(s.f_files > 0, "f_files");
    assert_eq!(s.f_namemax, 255, "f_namemax");
    // Same capacity as the brick's file system.
    let bp = c_path(&c.brick);
    // SAFETY: as above.
    let mut b: libc::statvfs = unsafe { std::mem::zeroed() };
    check_libc(unsafe { libc::statvfs(bp.as_ptr(), &mut b) }.into(), "statvfs brick");
    assert_eq!(
        s.f_blocks as u128 * s.f_frsize as u128,
        b.f_blocks as u128 * b.f_frsize as u128,
        "capacity matches the brick's file system"
    );

    write_file(&c.p("f"), b"x");
    fs::set_permissions(c.p("f"), fs::Permissions::from_mode(0o644)).expect("chmod");
    let access = |p: &Path, mode: i32| {
        let cp = c_path(p);
        // SAFETY: valid C string.
        i64::from(unsafe { libc::access(cp.as_ptr(), mode) })
    };
    check_libc(access(&c.p("f"), libc::F_OK), "access F_OK");
    check_libc(access(&c.p("f"), libc::R_OK | libc::W_OK), "access RW");
    expect_libc_err(
        access(&c.p("f"), libc::X_OK),
        libc::EACCES,
        "X_OK without any x bit (even root)",
    );
    fs::set_permissions(c.p("f"), fs::Permissions::from_mode(0o744)).expect("chmod");
    check_libc(access(&c.p("f"), libc::X_OK), "access X_OK");
    expect_libc_err(access(&c.p("missing"), libc::F_OK), libc::ENOENT, "access missing");
}

#[test]
fn fsync_and_fdatasync() {
    let c = Cluster::new();
    let mut f = create_rw(&c.p("f"));
    f.write_all(&pattern(4, 100_000)).expect("write");
    f.sync_all().expect("fsync");
    f.sync_data().expect("fdatasync");
    assert_eq!(read_file(&c.b("f")), pattern(4, 100_000), "on the brick");
    fs::create_dir(c.p("d")).expect("mkdir");
    let d = File::open(c.p("d")).expect("open dir");
    d.sync_all().expect("fsync a directory");
    let root = File::open(c.mnt()).expect("open root");
    root.sync_all().expect("fsync the root");
}

#[test]
fn fallocate_modes() {
    let c = Cluster::new();
    let f = create_rw(&c.p("f"));
    let data = pattern(5, 256 << 10);
    f.write_all_at(&data, 0).expect("write");
    // Plain allocation beyond EOF grows the file with zeros.
    check_libc(fallocate(&f, 0, 0, 1 << 20), "fallocate 0..1MiB");
    assert_eq!(f.metadata().expect("fstat").len(), 1 << 20);
    assert_eq!(read_at(&f, 0, 256 << 10), data);
    assert!(read_at(&f, 256 << 10, 768 << 10).iter().all(|&b| b == 0));
    // KEEP_SIZE beyond EOF: allocated, size unchanged.
    check_libc(
        fallocate(&f, libc::FALLOC_FL_KEEP_SIZE, 1 << 20, 1 << 20),
        "fallocate KEEP_SIZE",
    );
    let m = f.metadata().expect("fstat");
    assert_eq!(m.len(), 1 << 20, "KEEP_SIZE keeps the size");
    assert!(
        m.blocks() * 512 >= 2 << 20,
        "blocks {} after allocating 2 MiB",
        m.blocks()
    );
    // Punch a hole: zeros, same size, fewer blocks.
    let blocks_before = meta(&c.b("f")).blocks();
    check_libc(
        fallocate(
            &f,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            64 << 10,
            128 << 10,
        ),
        "PUNCH_HOLE|KEEP_SIZE",
    );
    assert_eq!(f.metadata().expect("fstat").len(), 1 << 20);
    let got = read_at(&f, 0, 256 << 10);
    assert_eq!(&got[..64 << 10], &data[..64 << 10]);
    assert!(
        got[64 << 10..192 << 10].iter().all(|&b| b == 0),
        "punched range reads zero"
    );
    assert_eq!(&got[192 << 10..], &data[192 << 10..]);
    let blocks_after = meta(&c.b("f")).blocks();
    assert!(
        blocks_after + 200 <= blocks_before,
        "punching 128 KiB frees blocks on the brick ({blocks_before} -> {blocks_after})"
    );
    assert_eq!(
        &read_file(&c.b("f"))[..256 << 10],
        &got[..],
        "brick holds the same bytes"
    );
    // ZERO_RANGE inside the file.
    check_libc(fallocate(&f, libc::FALLOC_FL_ZERO_RANGE, 200 << 10, 4096), "ZERO_RANGE");
    let got = read_at(&f, 192 << 10, 64 << 10);
    assert_eq!(&got[..8 << 10], &data[192 << 10..200 << 10]);
    assert!(got[8 << 10..(8 << 10) + 4096].iter().all(|&b| b == 0));
    assert_eq!(&got[(8 << 10) + 4096..], &data[(200 << 10) + 4096..]);
    // ZERO_RANGE beyond EOF grows the file; with KEEP_SIZE it does not.
    check_libc(
        fallocate(&f, libc::FALLOC_FL_ZERO_RANGE, (1 << 20) + 100, 1000),
        "ZERO_RANGE beyond EOF",
    );
    assert_eq!(f.metadata().expect("fstat").len(), (1 << 20) + 1100);
    check_libc(
        fallocate(
            &f,
            libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
            3 << 20,
            1000,
        ),
        "ZERO_RANGE|KEEP_SIZE beyond EOF",
    );
    assert_eq!(f.metadata().expect("fstat").len(), (1 << 20) + 1100);
    assert_eq!(meta(&c.b("f")).len(), (1 << 20) + 1100, "brick size");
    // Read-only descriptors cannot allocate.
    let ro = File::open(c.p("f")).expect("open ro");
    expect_libc_err(fallocate(&ro, 0, 0, 10), libc::EBADF, "fallocate on O_RDONLY");
}

#[test]
fn lseek_data_and_hole() {
    let c = Cluster::new();
    let f = create_rw(&c.p("sparse"));
    let mib: i64 = 1 << 20;
    f.write_all_at(&[1u8; 4096], 0).expect("write at 0");
    f.write_all_at(&[2u8; 4096], mib as u64).expect("write at 1 MiB");
    f.set_len(2 << 20).expect("extend to 2 MiB");
    assert_eq!(lseek(&f, 0, libc::SEEK_DATA), 0);
    assert_eq!(lseek(&f, 0, libc::SEEK_HOLE), 4096);
    assert_eq!(lseek(&f, 4096, libc::SEEK_DATA), mib);
    assert_eq!(lseek(&f, 100, libc::SEEK_DATA), 100, "inside data");
    assert_eq!(lseek(&f, mib, libc::SEEK_HOLE), mib + 4096);
    assert_eq!(lseek(&f, mib + 8192, libc::SEEK_HOLE), mib + 8192, "inside a hole");
    expect_libc_err(
        lseek(&f, mib + 4096, libc::SEEK_DATA),
        libc::ENXIO,
        "SEEK_DATA in the trailing hole",
    );
    expect_libc_err(lseek(&f, 2 * mib, libc::SEEK_HOLE), libc::ENXIO, "SEEK_HOLE at EOF");
    expect_libc_err(lseek(&f, 3 * mib, libc::SEEK_DATA), libc::ENXIO, "SEEK_DATA past EOF");
    // Plain seeks still work.
    assert_eq!(lseek(&f, 0, libc::SEEK_END), 2 * mib);
    assert_eq!(lseek(&f, 10, libc::SEEK_SET), 10);
}

fn setlk(f: &File, cmd: i32, typ: i32, start: i64, len: i64) -> (i64, libc::flock) {
    // SAFETY: flock is plain data.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = typ as i16;
    fl.l_whence = libc::SEEK_SET as i16;
    fl.l_start = start;
    fl.l_len = len;
    // SAFETY: our fd and a valid flock.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), cmd, &mut fl) };
    (r.into(), fl)
}

#[track_caller]
fn expect_lock_conflict(r: i64, what: &str) {
    let e = errno();
    assert_eq!(r, -1, "{what}: expected a conflict, got success");
    assert!(
        e == libc::EAGAIN || e == libc::EACCES,
        "{what}: expected EAGAIN/EACCES, got {}",
        errno_name(e)
    );
}

#[test]
fn posix_record_locks_between_processes() {
    let c = Cluster::new();
    let h = helper_bin!();
    let p = c.p("locked");
    write_file(&p, &[0u8; 1000]);
    let ps = p.to_str().expect("utf-8 path");

    let mut holder = LockHolder::start(h, &["hold-lock", ps, "0", "100", "w"]);
    let f = open_rw(&p);
    let (r, _) = setlk(&f, libc::F_SETLK, libc::F_WRLCK, 0, 50);
    expect_lock_conflict(r, "write lock over another process's write lock");
    let (r, _) = setlk(&f, libc::F_SETLK, libc::F_RDLCK, 90, 20);
    expect_lock_conflict(r, "read lock overlapping a write lock");
    let (r, _) = setlk(&f, libc::F_SETLK, libc::F_WRLCK, 100, 100);
    check_libc(r, "write lock on a disjoint range");
    let (r, fl) = setlk(&f, libc::F_GETLK, libc::F_WRLCK, 0, 10);
    check_libc(r, "F_GETLK");
    assert_eq!(fl.l_type, libc::F_WRLCK as i16, "F_GETLK reports the lock");
    assert_eq!(fl.l_pid, holder.pid() as i32, "F_GETLK reports the holder");
    assert_eq!((fl.l_start, fl.l_len), (0, 100), "F_GETLK reports the range");
    // Another process sees our lock.
    let seen = helper(h, &["getlk", ps, "150", "10", "w"]);
    assert_eq!(
        seen,
        format!("OK LOCKED w {} 100 100", std::process::id()),
        "the other process sees our lock"
    );
    assert_eq!(helper(h, &["setlk", ps, "120", "10", "w"]), helper_err(libc::EAGAIN));

    // A blocking request waits for the holder, and gets the lock after it.
    let waiter = {
        let p = p.clone();
        std::thread::spawn(move || {
            let f = open_rw(&p);
            let (r, _) = setlk(&f, libc::F_SETLKW, libc::F_WRLCK, 0, 10);
            (r, errno(), f)
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    assert!(!waiter.is_finished(), "F_SETLKW returned while the lock was held");
    holder.release();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(waiter.join());
    });
    let (r, e, wf) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("F_SETLKW still blocked 20 s after the holder exited")
        .expect("waiter thread");
    assert_eq!(r, 0, "F_SETLKW failed: {}", errno_name(e));
    drop(wf);

    // Locks die with the last descriptor of the process on that file: POSIX
    // drops them when any descriptor of the file is closed.
    let (r, _) = setlk(&f, libc::F_SETLK, libc::F_WRLCK, 500, 10);
    check_libc(r, "lock 500..510");
    assert_eq!(helper(h, &["setlk", ps, "500", "1", "w"]), helper_err(libc::EAGAIN));
    let other_fd = File::open(&p).expect("second descriptor");
    drop(other_fd);
    assert_eq!(
        helper(h, &["setlk", ps, "500", "1", "w"]),
        "OK",
        "closing any descriptor drops the process's locks"
    );

    // Read locks are shared.
    let mut reader = LockHolder::start(h, &["hold-lock", ps, "0", "100", "r"]);
    let (r, _) = setlk(&f, libc::F_SETLK, libc::F_RDLCK, 0, 100);
    check_libc(r, "a read lock next to another process's read lock");
    let (r, _) = setlk(&f, libc::F_SETLK, libc::F_WRLCK, 0, 100);
    expect_lock_conflict(r, "write lock over another process's read lock");
    reader.release();
    let (r, _) = setlk(&f, libc::F_SETLK, libc::F_WRLCK, 0, 100);
    check_libc(r, "upgrade once the other reader is gone");
    let (r, _) = setlk(&f, libc::F_SETLK, libc::F_UNLCK, 0, 0);
    check_libc(r, "unlock all");
    assert_eq!(helper(h, &["setlk", ps, "0", "0", "w"]), "OK");
}

#[test]
fn flock_between_processes() {
    let c = Cluster::new();
    let h = helper_bin!();
    let p = c.p("flocked");
    write_file(&p, b"x");
    let ps = p.to_str().expect("utf-8 path");
    let flock = |f: &File, op: i32| {
        // SAFETY: our fd.
        i64::from(unsafe { libc::flock(f.as_raw_fd(), op) })
    };

    let mut holder = LockHolder::start(h, &["hold-flock", ps, "ex"]);
    let f = File::open(&p).expect("open");
    expect_lock_conflict(
        flock(&f, libc::LOCK_EX | libc::LOCK_NB),
        "LOCK_EX while another process holds LOCK_EX",
    );
    expect_lock_conflict(
        flock(&f, libc::LOCK_SH | libc::LOCK_NB),
        "LOCK_SH while another process holds LOCK_EX",
    );
    holder.release();
    // FUSE sends the flock release of a closed file asynchronously: the lock
    // must become free promptly, not necessarily at the instant close returns.
    eventually("LOCK_EX once the holder exited", || {
        flock(&f, libc::LOCK_EX | libc::LOCK_NB) == 0
    });
    assert_eq!(
        helper(h, &["flock", ps, "sh"]),
        helper_err(libc::EAGAIN),
        "the other process is refused"
    );
    check_libc(flock(&f, libc::LOCK_UN), "LOCK_UN");
    assert_eq!(helper(h, &["flock", ps, "ex"]), "OK");

    // Shared locks coexist; an exclusive one waits for all of them.
    eventually("LOCK_SH once the other process closed", || {
        flock(&f, libc::LOCK_SH | libc::LOCK_NB) == 0
    });
    let mut sharer = LockHolder::start(h, &["hold-flock", ps, "sh"]);
    assert_eq!(helper(h, &["flock", ps, "ex"]), helper_err(libc::EAGAIN));
    sharer.release();
    assert_eq!(helper(h, &["flock", ps, "ex"]), helper_err(libc::EAGAIN));
    // Closing the descriptor drops the flock.
    drop(f);
    eventually("close drops the flock", || helper(h, &["flock", ps, "ex"]) == "OK");
}

/// Bounded polling (5 s) for a condition that follows an asynchronous event.
#[track_caller]
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    assert!(
        cairn_tests::poll(Duration::from_secs(5), || f().then_some(())).is_some(),
        "{what}: still not true after 5 s"
    );
}

#[test]
fn name_length_limits() {
    let c = Cluster::new();
    let n255 = "n".repeat(255);
    let n256 = "n".repeat(256);
    write_file(&c.p(&n255), b"long name");
    assert_eq!(read_file(&c.p(&n255)), b"long name");
    assert_eq!(names_in(c.mnt()), os(&[&n255]));
    assert!(c.b(&n255).is_file(), "the brick holds the long name");
    fs::create_dir(c.p("d")).expect("mkdir");
    fs::create_dir(c.p("d").join(&n255)).expect("mkdir 255");
    expect_errno(File::create(c.p(&n256)), libc::ENAMETOOLONG, "create 256");
    expect_errno(fs::create_dir(c.p(&n256)), libc::ENAMETOOLONG, "mkdir 256");
    expect_errno(fs::metadata(c.p(&n256)), libc::ENAMETOOLONG, "stat 256");
    expect_errno(
        std::os::unix::fs::symlink("x", c.p(&n256)),
        libc::ENAMETOOLONG,
        "symlink 256",
    );
    expect_errno(fs::hard_link(c.p(&n255), c.p(&n256)), libc::ENAMETOOLONG, "link 256");
    expect_errno(fs::rename(c.p(&n255), c.p(&n256)), libc::ENAMETOOLONG, "rename to 256");
    assert_eq!(read_file(&c.p(&n255)), b"long name", "rename failed cleanly");
}

/// Opens `comps` one by one below `root` with openat, so paths longer than
/// PATH_MAX can be reached.
fn openat_walk(root: &Path, comps: &[String]) -> OwnedFd {
    let f = File::open(root).unwrap_or_else(|e| panic!("open {}: {e}", root.display()));
    let mut fd = OwnedFd::from(f);
    for comp in comps {
        let name = CString::new(comp.as_str()).expect("name");
        // SAFETY: valid fd and C string.
        let next = unsafe {
            libc::openat(
                fd.as_raw_fd(),
                name.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            )
        };
        assert!(next >= 0, "openat {comp}: {}", errno_name(errno()));
        // SAFETY: a fresh fd we own.
        fd = unsafe { OwnedFd::from_raw_fd(next) };
    }
    fd
}

#[test]
fn paths_longer_than_path_max_on_the_brick() {
    // The brick sits below ~450 bytes of its own prefix.
    let prefix = PathBuf::from("p".repeat(200)).join("q".repeat(200)).join("brick");
    let c = Cluster::with(ClusterOpts {
        brick_rel: prefix,
        ..ClusterOpts::default()
    });
    let comps: Vec<String> = (0..16).map(|i| format!("{i:02}{}", "d".repeat(245))).collect();
    let rel: PathBuf = comps.iter().collect();
    let deep = c.p(&rel);
    let full = deep.join("file");
    assert!(
        full.as_os_str().len() > 3800 && full.as_os_str().len() < 4096,
        "mount path of {} bytes",
        full.as_os_str().len()
    );
    let on_brick = c.b(&rel).join("file");
    assert!(
        on_brick.as_os_str().len() > 4096,
        "brick path must exceed PATH_MAX for this test ({} bytes)",
        on_brick.as_os_str().len()
    );
    fs::create_dir_all(&deep).expect("mkdir -p through the mount");
    let data = pattern(6, 70_000);
    write_file(&full, &data);
    assert_eq!(read_file(&full), data);
    assert_eq!(meta(&full).len(), 70_000);
    assert_eq!(names_in(&deep), os(&["file"]));
    fs::rename(&full, deep.join("renamed")).expect("rename at depth");
    std::os::unix::fs::symlink("renamed", deep.join("link")).expect("symlink at depth");
    assert_eq!(read_file(&deep.join("link")), data);

    // The brick really holds it, at a path the brick's own kernel refuses.
    expect_errno(
        fs::metadata(c.b(&rel).join("renamed")),
        libc::ENAMETOOLONG,
        "the brick path is beyond PATH_MAX",
    );
    let mut walk = comps.clone();
    walk.push("renamed".into());
    let fd = openat_walk(&c.brick, &walk);
    let mut got = Vec::new();
    File::from(fd).read_to_end(&mut got).expect("read on the brick");
    assert_eq!(got, data, "brick bytes");

    // Tear it down through the mount.
    fs::remove_dir_all(c.p(&comps[0])).expect("rm -r through the mount");
    assert_eq!(names_in(c.mnt()), Vec::<OsString>::new());
}

#[test]
fn brick_holds_identical_bytes() {
    let c = Cluster::new();
    fs::create_dir_all(c.p("x/y")).expect("mkdir -p");
    let sizes = [0usize, 1, 4095, 4096, 4097, 131_072, 1 << 20, (3 << 20) + 17];
    for (i, &n) in sizes.iter().enumerate() {
        let data = pattern(100 + i as u64, n);
        let mut f = create_rw(&c.p(format!("x/y/f{i}")));
        // Odd chunk sizes so requests straddle pages.
        for chunk in data.chunks(12_345) {
            f.write_all(chunk).expect("write");
        }
        drop(f);
        assert_eq!(
            read_file(&c.b(format!("x/y/f{i}"))),
            data,
            "brick bytes of a {n}-byte file"
        );
        assert_eq!(read_file(&c.p(format!("x/y/f{i}"))), data);
    }
    // The brick lists the same names, plus its private directory at the root.
    let mut brick_root = names_in(&c.brick);
    brick_root.retain(|n| n != ".cairn");
    assert_eq!(brick_root, names_in(c.mnt()));
    assert_eq!(names_in(&c.b("x/y")), names_in(&c.p("x/y")));
}

#[test]
fn private_dir_is_invisible_and_reserved() {
    let c = Cluster::new();
    assert!(c.b(".cairn").is_dir(), "the brick has its private directory");
    assert!(
        !names_in(c.mnt()).iter().any(|n| n == ".cairn"),
        ".cairn is not listed at the mount root"
    );
    expect_errno(fs::metadata(c.p(".cairn")), libc::ENOENT, "stat .cairn");
    expect_errno(
        fs::metadata(c.p(".cairn/brick.json")),
        libc::ENOENT,
        "stat .cairn/brick.json",
    );
    assert!(fs::create_dir(c.p(".cairn")).is_err(), "mkdir .cairn");
    assert!(File::create(c.p(".cairn")).is_err(), "create .cairn");
    assert!(
        std::os::unix::fs::symlink("x", c.p(".cairn")).is_err(),
        "symlink .cairn"
    );
    write_file(&c.p("f"), b"x");
    assert!(fs::rename(c.p("f"), c.p(".cairn")).is_err(), "rename to .cairn");
    assert!(fs::hard_link(c.p("f"), c.p(".cairn")).is_err(), "link .cairn");
    fs::create_dir(c.p("d")).expect("mkdir");
    assert!(fs::rename(c.p("d"), c.p(".cairn")).is_err(), "rename a dir to .cairn");
    let pc = c_path(&c.p(".cairn"));
    // SAFETY: valid C string.
    assert_eq!(unsafe { libc::mkfifo(pc.as_ptr(), 0o644) }, -1, "mkfifo .cairn");
    // Nothing leaked into the brick's private directory.
    assert!(c.b(".cairn/files").is_dir() && c.b(".cairn/dirs").is_dir());
    assert!(c.b(".cairn/brick.json").is_file());
    // Below the root, .cairn is an ordinary name.
    write_file(&c.p("d/.cairn"), b"fine here");
    assert_eq!(read_file(&c.p("d/.cairn")), b"fine here");
    assert_eq!(names_in(&c.p("d")), os(&[".cairn"]));
}

#[test]
fn unusual_names_round_trip() {
    let c = Cluster::new();
    let raw: Vec<Vec<u8>> = vec![
        b"with space".to_vec(),
        b" leading".to_vec(),
        b"new\nline".to_vec(),
        b"back\\slash".to_vec(),
        b"...".to_vec(),
        b".hidden".to_vec(),
        b"-dash".to_vec(),
        b"*?[".to_vec(),
        vec![0xff, 0xfe, b'x'],
        "\u{00e9}t\u{00e9} \u{2603}".as_bytes().to_vec(),
        vec![1, 2, 3, 0x7f],
        b"00000000-0000-0000-0000-000000000001".to_vec(),
    ];
    for (i, n) in raw.iter().enumerate() {
        let p = c.mnt().join(OsStr::from_bytes(n));
        write_file(&p, format!("content {i}").as_bytes());
    }
    let mut want: Vec<OsString> = raw.iter().map(|n| OsString::from_vec(n.clone())).collect();
    want.sort();
    assert_eq!(names_in(c.mnt()), want, "readdir returns the exact names");
    for (i, n) in raw.iter().enumerate() {
        let name = OsStr::from_bytes(n);
        assert_eq!(read_file(&c.mnt().join(name)), format!("content {i}").as_bytes());
        assert_eq!(
            read_file(&c.brick.join(name)),
            format!("content {i}").as_bytes(),
            "brick entry {:?}",
            name
        );
    }
    // `.` and `..` behave as themselves, never as entries.
    assert_eq!(meta(&c.p(".")).ino(), meta(c.mnt()).ino());
    fs::create_dir(c.p("sub")).expect("mkdir");
    assert_eq!(meta(&c.p("sub/..")).ino(), meta(c.mnt()).ino());
    expect_errno(fs::create_dir(c.p("sub/..")), libc::EEXIST, "mkdir ..");
}

#[test]
fn readdir_lists_types() {
    let c = Cluster::new();
    write_file(&c.p("file"), b"");
    fs::create_dir(c.p("dir")).expect("mkdir");
    std::os::unix::fs::symlink("file", c.p("link")).expect("symlink");
    let fifo = c_path(&c.p("fifo"));
    // SAFETY: valid C string.
    check_libc(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }.into(), "mkfifo");
    let mut seen = Vec::new();
    for e in fs::read_dir(c.mnt()).expect("readdir") {
        let e = e.expect("entry");
        let t = e.file_type().expect("d_type");
        let kind = if t.is_file() {
            "file"
        } else if t.is_dir() {
            "dir"
        } else if t.is_symlink() {
            "link"
        } else if t.is_fifo() {
            "fifo"
        } else {
            "other"
        };
        seen.push((e.file_name().to_string_lossy().into_owned(), kind));
    }
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("dir".to_string(), "dir"),
            ("fifo".to_string(), "fifo"),
            ("file".to_string(), "file"),
            ("link".to_string(), "link"),
        ]
    );
    // Raw getdents includes `.` and `..` exactly once each.
    let cp = c_path(c.mnt());
    // SAFETY: valid C string; the DIR stream is closed below.
    let dir = unsafe { libc::opendir(cp.as_ptr()) };
    assert!(!dir.is_null(), "opendir");
    let mut dots = Vec::new();
    loop {
        // SAFETY: a valid DIR stream.
        let ent = unsafe { libc::readdir(dir) };
        if ent.is_null() {
            break;
        }
        // SAFETY: d_name is NUL-terminated.
        let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) };
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            dots.push(name.to_bytes().to_vec());
        }
    }
    // SAFETY: closing the stream opened above.
    unsafe { libc::closedir(dir) };
    dots.sort();
    assert_eq!(dots, vec![b".".to_vec(), b"..".to_vec()]);
}

#[test]
fn open_files_follow_renames() {
    let c = Cluster::new();
    fs::create_dir(c.p("d")).expect("mkdir");
    let f = create_rw(&c.p("d/f"));
    f.write_all_at(b"before", 0).expect("write");
    fs::rename(c.p("d"), c.p("e")).expect("rename the parent");
    fs::rename(c.p("e/f"), c.p("e/g")).expect("rename the file");
    f.write_all_at(b" after", 6).expect("write after the renames");
    f.sync_all().expect("fsync");
    assert_eq!(f.metadata().expect("fstat").len(), 12);
    assert_eq!(read_file(&c.p("e/g")), b"before after");
    assert_eq!(read_file(&c.b("e/g")), b"before after");
    // A directory handle keeps working as a parent after its rename.
    let d = File::open(c.p("e")).expect("open dir");
    fs::rename(c.p("e"), c.p("x")).expect("rename again");
    let name = CString::new("h").expect("name");
    // SAFETY: valid dir fd and C string.
    let fd = unsafe {
        libc::openat(
            d.as_raw_fd(),
            name.as_ptr(),
            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
            0o644,
        )
    };
    check_libc(fd.into(), "openat in a renamed directory");
    // SAFETY: a fresh fd we own.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    assert!(c.b("x/h").is_file(), "created in the renamed directory");
}

#[test]
fn direct_and_sync_io() {
    let c = Cluster::new();
    let layout = std::alloc::Layout::from_size_align(64 << 10, 4096).expect("layout");
    // SAFETY: non-zero size; freed below with the same layout.
    let buf = unsafe { std::alloc::alloc(layout) };
    assert!(!buf.is_null());
    let data = pattern(21, 64 << 10);
    // SAFETY: buf holds 64 KiB.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), buf, data.len()) };
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_DIRECT)
        .open(c.p("direct"))
        .expect("open O_DIRECT");
    // SAFETY: aligned buffer of 64 KiB, our fd.
    let n = unsafe { libc::pwrite(f.as_raw_fd(), buf.cast(), 64 << 10, 8192) };
    check_libc(n as i64, "O_DIRECT pwrite");
    assert_eq!(n, 64 << 10);
    // SAFETY: as above.
    unsafe { std::ptr::write_bytes(buf, 0, 64 << 10) };
    // SAFETY: as above.
    let n = unsafe { libc::pread(f.as_raw_fd(), buf.cast(), 64 << 10, 8192) };
    assert_eq!(n, 64 << 10, "O_DIRECT pread");
    // SAFETY: buf holds 64 KiB.
    let back = unsafe { std::slice::from_raw_parts(buf, 64 << 10) }.to_vec();
    // SAFETY: allocated above with this layout.
    unsafe { std::alloc::dealloc(buf, layout) };
    assert!(back == data, "O_DIRECT data read back");
    assert_eq!(f.metadata().expect("fstat").len(), 8192 + (64 << 10));
    let brick = read_file(&c.b("direct"));
    assert!(brick[8192..] == data[..], "O_DIRECT data on the brick");
    assert!(brick[..8192].iter().all(|&b| b == 0));

    let mut s = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_SYNC)
        .open(c.p("sync"))
        .expect("open O_SYNC");
    s.write_all(b"synchronous").expect("O_SYNC write");
    assert_eq!(read_file(&c.b("sync")), b"synchronous");
}

#[test]
fn beyond_the_maximum_file_size_is_efbig() {
    let c = Cluster::new();
    let f = create_rw(&c.p("f"));
    let far = (1u64 << 44) + (1 << 40); // 17 TiB, past ext4's limit
    expect_errno(f.write_all_at(b"x", far), libc::EFBIG, "pwrite at 17 TiB");
    expect_errno(f.set_len(far), libc::EFBIG, "ftruncate to 17 TiB");
    assert_eq!(f.metadata().expect("fstat").len(), 0, "nothing changed");
}

#[test]
fn two_mounts_see_each_others_changes() {
    let opts = "attribute-timeout=0,entry-timeout=0";
    let c = Cluster::with(ClusterOpts {
        mount_opts: opts.into(),
        ..ClusterOpts::default()
    });
    let b = c.new_mount("mnt2", opts);
    write_file(&c.p("f"), b"from A");
    assert_eq!(read_file(&b.p("f")), b"from A", "B reads what A wrote");
    write_file(&c.p("f"), b"rewritten by A, longer");
    assert_eq!(meta(&b.p("f")).len(), 22, "B sees the new size");
    assert_eq!(read_file(&b.p("f")), b"rewritten by A, longer");
    let g = open_rw(&b.p("f"));
    g.write_all_at(b"B", 0).expect("write via B");
    drop(g);
    assert_eq!(read_file(&c.p("f")), b"Bewritten by A, longer");
    fs::rename(c.p("f"), c.p("g")).expect("rename via A");
    expect_errno(fs::metadata(b.p("f")), libc::ENOENT, "old name via B");
    assert_eq!(read_file(&b.p("g")).len(), 22, "new name via B");
    fs::create_dir(b.p("dir")).expect("mkdir via B");
    write_file(&c.p("dir/inner"), b"A in B's dir");
    assert_eq!(names_in(&b.p("dir")), os(&["inner"]));
    fs::remove_file(b.p("g")).expect("unlink via B");
    expect_errno(fs::metadata(c.p("g")), libc::ENOENT, "unlinked via B, seen by A");

    // Locks conflict across clients.
    let h = helper_bin!();
    write_file(&c.p("lk"), &[0u8; 100]);
    let bpath = b.p("lk");
    let bp = bpath.to_str().expect("utf-8");
    let f = open_rw(&c.p("lk"));
    let (r, _) = setlk(&f, libc::F_SETLK, libc::F_WRLCK, 0, 10);
    check_libc(r, "lock via A");
    assert_eq!(
        helper(h, &["setlk", bp, "5", "1", "w"]),
        helper_err(libc::EAGAIN),
        "a lock taken via one mount blocks another mount"
    );
    assert!(
        helper(h, &["getlk", bp, "0", "1", "w"]).starts_with("OK LOCKED w"),
        "F_GETLK via the other mount sees the lock"
    );
    assert_eq!(helper(h, &["setlk", bp, "10", "5", "w"]), "OK");
    let (r, _) = setlk(&f, libc::F_SETLK, libc::F_UNLCK, 0, 10);
    check_libc(r, "unlock via A");
    assert_eq!(helper(h, &["setlk", bp, "5", "1", "w"]), "OK");
    // SAFETY: our fd.
    check_libc(
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }.into(),
        "flock via A",
    );
    assert_eq!(
        helper(h, &["flock", bp, "sh"]),
        helper_err(libc::EAGAIN),
        "an flock via one mount blocks another mount"
    );
}
