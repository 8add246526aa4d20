//! Permission checks for an unprivileged user (nobody, 65534) through a
//! Cairn mount: the kernel enforces the modes the brick reports
//! (`default_permissions`), and new inodes belong to their creator.

use cairn_tests::{helper_as, helper_bin, helper_err, read_file, write_file, Cluster, NOBODY};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Runs the helper as nobody.
fn nobody(args: &[&str]) -> String {
    helper_as(helper_bin!(), NOBODY, NOBODY, args)
}

/// The mount's root is 0755 root:root out of the box; make it traversable
/// and keep everything else as the test sets it.
fn cluster() -> Cluster {
    let c = Cluster::new();
    chmod(c.mnt(), 0o755);
    c
}

#[test]
fn nobody_cannot_create_in_a_root_owned_0755_dir() {
    let c = cluster();
    fs::create_dir(c.p("rootdir")).expect("mkdir");
    chmod(&c.p("rootdir"), 0o755);
    let target = c.p("rootdir/new");
    assert_eq!(nobody(&["create", s(&target), "644"]), helper_err(libc::EACCES));
    assert_eq!(
        nobody(&["mkdir", s(&c.p("rootdir/sub")), "755"]),
        helper_err(libc::EACCES)
    );
    assert_eq!(
        nobody(&["create", s(&c.p("new-at-root")), "644"]),
        helper_err(libc::EACCES),
        "the root is 0755 root-owned too"
    );
    assert!(!c.b("rootdir/new").exists(), "nothing reached the brick");
    // Deleting and renaming need write access to the directory too.
    write_file(&c.p("rootdir/f"), b"x");
    chmod(&c.p("rootdir/f"), 0o666);
    assert_eq!(nobody(&["unlink", s(&c.p("rootdir/f"))]), helper_err(libc::EACCES));
    assert_eq!(
        nobody(&["rename", s(&c.p("rootdir/f")), s(&c.p("rootdir/g"))]),
        helper_err(libc::EACCES)
    );
    // But a world-writable file inside can be written.
    assert_eq!(nobody(&["write", s(&c.p("rootdir/f")), "Y"]), "OK");
    assert_eq!(read_file(&c.p("rootdir/f")), b"Y");
}

#[test]
fn nobody_cannot_read_or_write_private_root_files() {
    let c = cluster();
    write_file(&c.p("secret"), b"top secret");
    chmod(&c.p("secret"), 0o600);
    assert_eq!(nobody(&["read", s(&c.p("secret"))]), helper_err(libc::EACCES));
    write_file(&c.p("public"), b"hello");
    chmod(&c.p("public"), 0o644);
    assert_eq!(nobody(&["read", s(&c.p("public"))]), "OK hello");
    assert_eq!(nobody(&["write", s(&c.p("public")), "x"]), helper_err(libc::EACCES));
    assert_eq!(nobody(&["truncate", s(&c.p("public")), "0"]), helper_err(libc::EACCES));
    assert_eq!(read_file(&c.p("public")), b"hello", "unchanged");
    // A directory without x for others cannot be traversed.
    fs::create_dir(c.p("closed")).expect("mkdir");
    write_file(&c.p("closed/inside"), b"in");
    chmod(&c.p("closed/inside"), 0o644);
    chmod(&c.p("closed"), 0o700);
    assert_eq!(nobody(&["read", s(&c.p("closed/inside"))]), helper_err(libc::EACCES));
    assert_eq!(nobody(&["stat", s(&c.p("closed/inside"))]), helper_err(libc::EACCES));
}

#[test]
fn nobody_can_work_in_a_0777_dir_and_owns_what_it_creates() {
    let c = cluster();
    fs::create_dir(c.p("open")).expect("mkdir");
    chmod(&c.p("open"), 0o777);
    let f = c.p("open/mine");
    assert_eq!(nobody(&["create", s(&f), "640"]), "OK");
    assert_eq!(nobody(&["write", s(&f), "by nobody"]), "OK");
    assert_eq!(nobody(&["read", s(&f)]), "OK by nobody");
    let m = fs::metadata(&f).expect("stat");
    assert_eq!((m.uid(), m.gid()), (NOBODY, NOBODY), "owner through the mount");
    assert_eq!(m.mode() & 0o7777, 0o640);
    let b = fs::metadata(c.b("open/mine")).expect("brick stat");
    assert_eq!((b.uid(), b.gid()), (NOBODY, NOBODY), "owner on the brick");
    assert_eq!(
        nobody(&["mkdir", s(&c.p("open/dir")), "750"]),
        "OK",
        "mkdir in a 0777 dir"
    );
    let d = fs::metadata(c.b("open/dir")).expect("brick stat");
    assert_eq!((d.uid(), d.gid()), (NOBODY, NOBODY), "dir owner on the brick");
    assert_eq!(nobody(&["rename", s(&f), s(&c.p("open/dir/moved"))]), "OK");
    // The owner may chmod its file and set its times.
    let moved = c.p("open/dir/moved");
    assert_eq!(nobody(&["chmod", s(&moved), "600"]), "OK");
    assert_eq!(fs::metadata(&moved).expect("stat").mode() & 0o7777, 0o600);
    assert_eq!(nobody(&["utime-set", s(&moved), "12345"]), "OK");
    assert_eq!(fs::metadata(&moved).expect("stat").mtime(), 12345);
    assert_eq!(nobody(&["unlink", s(&moved)]), "OK");
    assert_eq!(nobody(&["rmdir", s(&c.p("open/dir"))]), "OK");
    assert!(!c.b("open/dir").exists());
}

#[test]
fn only_the_owner_may_chmod_and_only_root_may_chown() {
    let c = cluster();
    write_file(&c.p("rootfile"), b"x");
    chmod(&c.p("rootfile"), 0o666);
    assert_eq!(
        nobody(&["chmod", s(&c.p("rootfile")), "777"]),
        helper_err(libc::EPERM),
        "chmod by a non-owner"
    );
    assert_eq!(
        nobody(&["chown", s(&c.p("rootfile")), "65534", "65534"]),
        helper_err(libc::EPERM),
        "chown by a non-owner"
    );
    assert_eq!(fs::metadata(c.p("rootfile")).expect("stat").mode() & 0o7777, 0o666);
    // Even an owner cannot give a file away.
    fs::create_dir(c.p("open")).expect("mkdir");
    chmod(&c.p("open"), 0o777);
    let mine = c.p("open/mine");
    assert_eq!(nobody(&["create", s(&mine), "644"]), "OK");
    assert_eq!(
        nobody(&["chown", s(&mine), "0", "0"]),
        helper_err(libc::EPERM),
        "giving a file away"
    );
    // Writable but not owned: "now" is allowed, an explicit time is not.
    assert_eq!(nobody(&["utime-now", s(&c.p("rootfile"))]), "OK");
    assert_eq!(
        nobody(&["utime-set", s(&c.p("rootfile")), "1"]),
        helper_err(libc::EPERM)
    );
}

#[test]
fn sticky_directory_protects_other_users_files() {
    let c = cluster();
    fs::create_dir(c.p("tmp")).expect("mkdir");
    chmod(&c.p("tmp"), 0o1777);
    write_file(&c.p("tmp/roots"), b"x");
    chmod(&c.p("tmp/roots"), 0o666);
    assert_eq!(
        nobody(&["unlink", s(&c.p("tmp/roots"))]),
        helper_err(libc::EPERM),
        "unlinking another user's file in a sticky dir"
    );
    assert_eq!(
        nobody(&["rename", s(&c.p("tmp/roots")), s(&c.p("tmp/mine"))]),
        helper_err(libc::EPERM)
    );
    assert_eq!(nobody(&["create", s(&c.p("tmp/own")), "644"]), "OK");
    assert_eq!(nobody(&["unlink", s(&c.p("tmp/own"))]), "OK");
    assert!(c.p("tmp/roots").exists());
}

#[test]
fn setgid_directory_passes_its_group_on() {
    let c = cluster();
    fs::create_dir(c.p("shared")).expect("mkdir");
    std::os::unix::fs::chown(c.p("shared"), Some(0), Some(1234)).expect("chgrp");
    chmod(&c.p("shared"), 0o2777);
    assert_eq!(nobody(&["create", s(&c.p("shared/f")), "644"]), "OK");
    let m = fs::metadata(c.p("shared/f")).expect("stat");
    assert_eq!(
        (m.uid(), m.gid()),
        (NOBODY, 1234),
        "a file in a setgid dir takes the dir's group"
    );
    assert_eq!(nobody(&["mkdir", s(&c.p("shared/sub")), "755"]), "OK");
    let d = fs::metadata(c.p("shared/sub")).expect("stat");
    assert_eq!(d.gid(), 1234, "a subdirectory takes the group");
    assert_ne!(d.mode() & 0o2000, 0, "and inherits the setgid bit");
    let b = fs::metadata(c.b("shared/sub")).expect("brick stat");
    assert_eq!((b.uid(), b.gid()), (NOBODY, 1234), "brick owner");
}
