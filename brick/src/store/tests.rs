//! Store tests on a real directory (trusted xattrs need root, as the daemon).

use super::namespace::NewKind;
use super::*;
use cairn_common::proto::{Creds, SetAttr};

const ROOT_CREDS: Creds = Creds { uid: 0, gid: 0 };

fn brick() -> (tempfile::TempDir, Brick) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b");
    let (bid, vid) = (Uuid::new_v4(), Uuid::new_v4());
    Brick::initialize(&path, bid, vid, "t", true).unwrap();
    let b = Brick::open_existing(&path, bid, vid).unwrap();
    (dir, b)
}

fn mkdir(b: &Brick, parent: &Gfid, name: &[u8]) -> Attr {
    b.make_entry(parent, name, &Gfid::random(), NewKind::Dir, 0o755, 0, &ROOT_CREDS)
        .unwrap()
}

fn mkfile(b: &Brick, parent: &Gfid, name: &[u8]) -> Attr {
    b.make_entry(
        parent,
        name,
        &Gfid::random(),
        NewKind::Special(0),
        libc::S_IFREG | 0o644,
        0,
        &ROOT_CREDS,
    )
    .unwrap()
}

fn handles_in(b: &Brick, sub: &str) -> usize {
    let base = b.path.join(".cairn").join(sub);
    std::fs::read_dir(base)
        .unwrap()
        .map(|d| std::fs::read_dir(d.unwrap().path()).unwrap().count())
        .sum()
}

#[test]
fn hostile_names_are_refused_with_the_right_errno() {
    let (_t, b) = brick();
    for (name, errno) in [
        (&b".."[..], libc::EINVAL),
        (b".", libc::EINVAL),
        (b"a/b", libc::EINVAL),
        (b"a\0b", libc::EINVAL),
        (b"", libc::ENOENT),
        (&[b'x'; 256][..], libc::ENAMETOOLONG),
        (b".cairn", libc::EPERM),
    ] {
        let e = b
            .make_entry(&Gfid::ROOT, name, &Gfid::random(), NewKind::Dir, 0o755, 0, &ROOT_CREDS)
            .unwrap_err();
        assert_eq!(e.errno, errno, "name {name:?}");
    }
    assert_eq!(b.lookup(&Gfid::ROOT, b".cairn").unwrap_err().errno, libc::ENOENT);
    assert_eq!(b.lookup(&Gfid::ROOT, b"..").unwrap_err().errno, libc::EINVAL);
    let (entries, _) = b.readdir(&Gfid::ROOT, 0, false, 100).unwrap();
    assert!(entries.iter().all(|e| e.name != b".cairn"));
}

#[test]
fn directories_resolve_by_gfid_after_renames_and_beyond_path_max() {
    let (_t, b) = brick();
    // 40 levels of 200-byte names: 8 KB of path, twice PATH_MAX.
    let mut parent = Gfid::ROOT;
    let mut gfids = vec![];
    for i in 0..40u8 {
        let mut name = vec![b'd'; 200];
        name[0] = b'a' + (i % 26);
        parent = mkdir(&b, &parent, &name).gfid;
        gfids.push(parent);
    }
    let leaf = mkfile(&b, &parent, b"leaf");
    // Forget the cache: resolution must work from the handles alone.
    b.dir_cache.lock().unwrap().clear();
    assert_eq!(b.getattr(&parent).unwrap().gfid, parent);
    assert_eq!(b.lookup(&parent, b"leaf").unwrap().gfid, leaf.gfid);
    // Rename the top directory; deeper ones still resolve.
    let mut top = vec![b'd'; 200];
    top[0] = b'a';
    b.rename(&Gfid::ROOT, &top, &Gfid::ROOT, b"renamed", 0).unwrap();
    b.dir_cache.lock().unwrap().clear();
    assert_eq!(b.getattr(&gfids[39]).unwrap().gfid, gfids[39]);
    assert_eq!(b.lookup(&Gfid::ROOT, b"renamed").unwrap().gfid, gfids[0]);
}

#[test]
fn file_handles_follow_the_last_name() {
    let (_t, b) = brick();
    let f = mkfile(&b, &Gfid::ROOT, b"f");
    assert_eq!(f.nlink, 1);
    let l = b.link(&f.gfid, &Gfid::ROOT, b"g").unwrap();
    assert_eq!(l.nlink, 2);
    b.unlink(&Gfid::ROOT, b"f").unwrap();
    assert_eq!(handles_in(&b, "files"), 1);
    b.unlink(&Gfid::ROOT, b"g").unwrap();
    assert_eq!(handles_in(&b, "files"), 0);
    // Rename over a file drops the victim's handle, keeps the survivor's.
    let a = mkfile(&b, &Gfid::ROOT, b"a");
    mkfile(&b, &Gfid::ROOT, b"b");
    b.rename(&Gfid::ROOT, b"a", &Gfid::ROOT, b"b", 0).unwrap();
    assert_eq!(handles_in(&b, "files"), 1);
    assert_eq!(b.lookup(&Gfid::ROOT, b"b").unwrap().gfid, a.gfid);
    // rmdir drops the directory handle.
    mkdir(&b, &Gfid::ROOT, b"d");
    assert_eq!(handles_in(&b, "dirs"), 1);
    b.rmdir(&Gfid::ROOT, b"d").unwrap();
    assert_eq!(handles_in(&b, "dirs"), 0);
}

/// A replica can hold a file under its new name before its old name's heal
/// has run: both names are links to one inode there. A rename of the old
/// name onto the new one (the client sees two files) must leave this
/// replica as the move left the others — the old name gone — where POSIX's
/// no-op for links of one file would keep it here alone (the 1500 s soak
/// then served the stale old name).
#[test]
fn a_rename_onto_another_link_of_the_same_file_removes_the_old_name() {
    let (_t, b) = brick();
    let d = mkdir(&b, &Gfid::ROOT, b"d");
    let f = mkfile(&b, &d.gfid, b"old");
    b.link(&f.gfid, &Gfid::ROOT, b"new").unwrap();
    b.rename(&d.gfid, b"old", &Gfid::ROOT, b"new", 0).unwrap();
    assert_eq!(b.lookup(&d.gfid, b"old").unwrap_err().errno, libc::ENOENT);
    let kept = b.lookup(&Gfid::ROOT, b"new").unwrap();
    assert_eq!((kept.gfid, kept.nlink), (f.gfid, 1));
    assert_eq!(handles_in(&b, "files"), 1);
    // A rename of a name onto itself still changes nothing.
    b.rename(&Gfid::ROOT, b"new", &Gfid::ROOT, b"new", 0).unwrap();
    assert_eq!(b.lookup(&Gfid::ROOT, b"new").unwrap().gfid, f.gfid);
}

/// A file unlinked while open keeps its handle until the last close; a
/// daemon killed before that close leaves a handle no name leads to. Its
/// heal index entry must not wait for ever on replicas that rightly lack
/// it (the long chaos soak found one): the index crawl drops both.
#[test]
fn an_orphan_handle_left_by_a_kill_leaves_the_heal_index() {
    let (_t, b) = brick();
    let dirty = format!("{}dirty", super::inode::AFR_XATTR_PREFIX);
    let kept = mkfile(&b, &Gfid::ROOT, b"kept");
    let orphan = mkfile(&b, &Gfid::ROOT, b"orphan");
    for f in [&kept, &orphan] {
        b.xattrop(&f.gfid, &[(dirty.clone(), [1, 0, 0])]).unwrap();
    }
    // The unlink that happened while the file was open, before the kill.
    std::fs::remove_file(b.path.join("orphan")).unwrap();
    assert_eq!(handles_in(&b, "files"), 2);
    let pending: Vec<Gfid> = b.pending_heal().unwrap().into_iter().map(|(g, _, _)| g).collect();
    assert_eq!(pending, vec![kept.gfid]);
    assert_eq!(handles_in(&b, "files"), 1, "the orphan's handle is gone");
    assert_eq!(b.lookup(&Gfid::ROOT, b"kept").unwrap().gfid, kept.gfid);
}

#[test]
fn entries_made_behind_the_bricks_back_get_a_gfid_once() {
    let (_t, b) = brick();
    std::fs::write(b.path.join("outside"), b"data").unwrap();
    std::fs::create_dir(b.path.join("outdir")).unwrap();
    let first = b.lookup(&Gfid::ROOT, b"outside").unwrap();
    assert_eq!(b.lookup(&Gfid::ROOT, b"outside").unwrap().gfid, first.gfid);
    assert_eq!(b.getattr(&first.gfid).unwrap().size, 4);
    let d = b.lookup(&Gfid::ROOT, b"outdir").unwrap();
    assert!(d.is_dir());
    mkfile(&b, &d.gfid, b"inner");
}

#[test]
fn symlinks_on_the_brick_are_never_followed() {
    let (_t, b) = brick();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"secret").unwrap();
    let target = outside.path().join("secret");
    let s = b
        .make_entry(
            &Gfid::ROOT,
            b"s",
            &Gfid::random(),
            NewKind::Symlink(target.as_os_str().as_encoded_bytes()),
            0,
            0,
            &ROOT_CREDS,
        )
        .unwrap();
    assert_eq!(b.open(&s.gfid, libc::O_RDONLY).unwrap_err().errno, libc::ELOOP);
    assert_eq!(
        b.setattr(
            &s.gfid,
            None,
            &SetAttr {
                mode: Some(0o777),
                ..Default::default()
            }
        )
        .unwrap_err()
        .errno,
        libc::EOPNOTSUPP
    );
    assert_eq!(b.readlink(&s.gfid).unwrap(), target.as_os_str().as_encoded_bytes());
    // A directory swapped for a symlink behind the brick's back is not entered.
    let d = mkdir(&b, &Gfid::ROOT, b"d");
    b.dir_cache.lock().unwrap().clear();
    std::fs::remove_dir(b.path.join("d")).unwrap();
    std::os::unix::fs::symlink(outside.path(), b.path.join("d")).unwrap();
    assert_eq!(b.getattr(&d.gfid).unwrap_err().errno, libc::ESTALE);
    assert!(std::fs::read(outside.path().join("secret")).is_ok());
}

#[test]
fn a_brick_without_its_mark_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b");
    let (bid, vid) = (Uuid::new_v4(), Uuid::new_v4());
    Brick::initialize(&path, bid, vid, "t", true).unwrap();
    assert!(Brick::open_existing(&path, bid, Uuid::new_v4()).is_err());
    std::fs::remove_dir_all(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    let err = Brick::open_existing(&path, bid, vid).err().unwrap();
    assert!(format!("{err:#}").contains("volume-id"), "{err:#}");
    // And a brick of another volume is not reused without force.
    Brick::initialize(&path, bid, vid, "t", true).unwrap();
    assert!(Brick::initialize(&path, bid, Uuid::new_v4(), "u", false).is_err());
    assert!(Brick::initialize(&path.join("nested"), bid, Uuid::new_v4(), "u", false).is_err());
}

#[test]
fn private_xattrs_are_hidden() {
    let (_t, b) = brick();
    let f = mkfile(&b, &Gfid::ROOT, b"f");
    assert_eq!(
        b.getxattr(&f.gfid, GFID_XATTR.as_bytes()).unwrap_err().errno,
        libc::ENODATA
    );
    assert_eq!(
        b.setxattr(&f.gfid, b"trusted.cairn.gfid", b"x", 0).unwrap_err().errno,
        libc::EPERM
    );
    b.setxattr(&f.gfid, b"user.k", b"v", 0).unwrap();
    assert_eq!(b.listxattr(&f.gfid).unwrap(), vec![b"user.k".to_vec()]);
}

#[test]
fn replication_counters_add_atomically_and_stay_private() {
    let (_d, b) = brick();
    let f = mkfile(&b, &Gfid::ROOT, b"f");
    let dirty = "trusted.cairn.afr.dirty".to_string();
    let other = "trusted.cairn.afr.0f0e".to_string();
    assert_eq!(b.xattrop(&f.gfid, &[]).unwrap(), vec![]);
    b.xattrop(&f.gfid, &[(dirty.clone(), [1, 0, 0])]).unwrap();
    let after = b
        .xattrop(&f.gfid, &[(dirty.clone(), [-1, 0, 0]), (other.clone(), [1, 2, 0])])
        .unwrap();
    assert_eq!(after, vec![(other.clone(), [1, 2, 0]), (dirty.clone(), [0, 0, 0])]);
    // Many concurrent adds lose none.
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..25 {
                    b.xattrop(&f.gfid, &[(other.clone(), [0, 0, 1])]).unwrap();
                }
            });
        }
    });
    let now = b.xattrop(&f.gfid, &[]).unwrap();
    assert!(now.contains(&(other.clone(), [1, 2, 200])), "{now:?}");
    // Only replication counters, and clients never see them as xattrs.
    for bad in [
        "user.x",
        "trusted.cairn.gfid",
        "trusted.cairn.afr.",
        "trusted.cairn.afr.a b",
    ] {
        assert_eq!(
            b.xattrop(&f.gfid, &[(bad.to_string(), [1, 0, 0])]).unwrap_err().errno,
            libc::EINVAL,
            "{bad}"
        );
    }
    assert!(b.listxattr(&f.gfid).unwrap().is_empty());
    assert_eq!(b.getxattr(&f.gfid, dirty.as_bytes()).unwrap_err().errno, libc::ENODATA);
}

/// Every name under `root` with its type, size, mode and owner: what a
/// refused request must leave as it was.
fn snapshot(root: &Path) -> Vec<(PathBuf, u32, u64, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let m = std::fs::symlink_metadata(&path).unwrap();
            if m.is_dir() {
                todo.push(path.clone());
            }
            out.push((path, m.mode(), m.size(), m.uid()));
        }
    }
    out.sort();
    out
}

/// A directory beside the brick with a file in it, and symlinks on the
/// brick (made behind its back) pointing at both.
fn outside_and_links(b: &Brick) -> (tempfile::TempDir, Gfid, Gfid) {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("canary"), b"canary").unwrap();
    std::os::unix::fs::symlink(outside.path(), b.path.join("out-dir")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("canary"), b.path.join("out-file")).unwrap();
    let dir_link = b.lookup(&Gfid::ROOT, b"out-dir").unwrap();
    let file_link = b.lookup(&Gfid::ROOT, b"out-file").unwrap();
    assert_eq!(dir_link.mode & libc::S_IFMT, libc::S_IFLNK);
    (outside, dir_link.gfid, file_link.gfid)
}

#[test]
fn hostile_names_are_refused_by_every_namespace_operation_and_change_nothing() {
    let (t, b) = brick();
    let d = mkdir(&b, &Gfid::ROOT, b"d");
    let f = mkfile(&b, &d.gfid, b"f");
    let before = snapshot(t.path());
    let hostile: [&[u8]; 9] = [
        b"..",
        b".",
        b"../../etc",
        b"/etc/passwd",
        b"a/b",
        b"f\0",
        b"",
        &[b'x'; 256],
        b"/",
    ];
    let target = Uuid::new_v4();
    for name in hostile {
        let attempts: Vec<(&str, FsResult<()>)> = vec![
            ("lookup", b.lookup(&d.gfid, name).map(drop)),
            (
                "mkdir",
                b.make_entry(&d.gfid, name, &Gfid::random(), NewKind::Dir, 0o755, 0, &ROOT_CREDS)
                    .map(drop),
            ),
            (
                "mknod",
                b.make_entry(
                    &d.gfid,
                    name,
                    &Gfid::random(),
                    NewKind::Special(0),
                    0o644,
                    0,
                    &ROOT_CREDS,
                )
                .map(drop),
            ),
            (
                "symlink",
                b.make_entry(
                    &d.gfid,
                    name,
                    &Gfid::random(),
                    NewKind::Symlink(b"/etc"),
                    0,
                    0,
                    &ROOT_CREDS,
                )
                .map(drop),
            ),
            (
                "create",
                b.create(&d.gfid, name, &Gfid::random(), 0o644, 0, libc::O_RDWR, &ROOT_CREDS)
                    .map(drop),
            ),
            ("unlink", b.unlink(&d.gfid, name)),
            ("rmdir", b.rmdir(&d.gfid, name)),
            ("rename from", b.rename(&d.gfid, name, &d.gfid, b"g", 0)),
            ("rename to", b.rename(&d.gfid, b"f", &d.gfid, name, 0)),
            ("link", b.link(&f.gfid, &d.gfid, name).map(drop)),
            (
                "make link file",
                b.make_link(&d.gfid, name, &Gfid::random(), &target).map(drop),
            ),
        ];
        for (op, r) in attempts {
            let e = r.expect_err(&format!("{op} {name:?} was accepted"));
            assert!(
                [libc::EINVAL, libc::ENOENT, libc::ENAMETOOLONG].contains(&e.errno),
                "{op} {name:?}: errno {} ({e})",
                e.errno
            );
            assert!(e.context.contains("name"), "{op} {name:?}: unclear error {e}");
        }
        assert_eq!(snapshot(t.path()), before, "a refused {name:?} changed the brick");
    }
}

#[test]
fn operations_through_symlinks_pointing_out_of_the_brick_stay_inside() {
    let (_t, b) = brick();
    let (outside, dir_link, file_link) = outside_and_links(&b);
    let before = snapshot(outside.path());
    // A symlink is never a parent.
    let as_parent: Vec<(&str, FsResult<()>)> = vec![
        (
            "create",
            b.create(&dir_link, b"x", &Gfid::random(), 0o644, 0, libc::O_RDWR, &ROOT_CREDS)
                .map(drop),
        ),
        (
            "mkdir",
            b.make_entry(&dir_link, b"x", &Gfid::random(), NewKind::Dir, 0o755, 0, &ROOT_CREDS)
                .map(drop),
        ),
        ("lookup", b.lookup(&dir_link, b"canary").map(drop)),
        ("unlink", b.unlink(&dir_link, b"canary")),
        ("rename", b.rename(&dir_link, b"canary", &Gfid::ROOT, b"stolen", 0)),
        ("readdir", b.readdir(&dir_link, 0, true, 100).map(drop)),
        ("layout", b.layout_set(&dir_link, b"junk")),
    ];
    for (op, r) in as_parent {
        assert!(r.is_err(), "{op} through a symlink to a directory outside was accepted");
    }
    // Nor is its target opened, truncated, chmodded or given xattrs.
    for flags in [
        libc::O_RDONLY,
        libc::O_RDWR | libc::O_TRUNC,
        libc::O_WRONLY | libc::O_APPEND,
    ] {
        assert_eq!(b.open(&file_link, flags).unwrap_err().errno, libc::ELOOP);
    }
    let truncate = SetAttr {
        size: Some(0),
        ..Default::default()
    };
    assert!(b.setattr(&file_link, None, &truncate).is_err());
    let chmod = SetAttr {
        mode: Some(0o777),
        ..Default::default()
    };
    assert!(b.setattr(&file_link, None, &chmod).is_err());
    // chown and times apply to the link itself, never to its target.
    let chown = SetAttr {
        uid: Some(4242),
        atime: Some(cairn_common::proto::TimeSet::Now),
        ..Default::default()
    };
    b.setattr(&file_link, None, &chown).unwrap();
    let _ = b.setxattr(&file_link, b"user.stolen", b"x", 0);
    let _ = b.setxattr(&dir_link, b"user.stolen", b"x", 0);
    let _ = b.removexattr(&file_link, b"user.stolen");
    // A hard link to the symlink links the symlink, not the canary.
    b.link(&file_link, &Gfid::ROOT, b"hard").unwrap();
    assert_eq!(
        std::fs::read_link(b.path.join("hard")).unwrap(),
        outside.path().join("canary")
    );
    b.unlink(&Gfid::ROOT, b"out-file").unwrap();
    b.unlink(&Gfid::ROOT, b"out-dir").unwrap();
    assert_eq!(snapshot(outside.path()), before, "the outside directory changed");
    assert_eq!(std::fs::read(outside.path().join("canary")).unwrap(), b"canary");
    let canary = c(outside.path().join("canary").to_str().unwrap());
    assert!(
        sys::lgetxattr(&canary, &c("user.stolen")).is_err(),
        "an xattr landed outside"
    );
}

#[test]
fn a_directory_swapped_for_a_symlink_during_requests_never_leads_out() {
    let (_t, b) = brick();
    let outside = tempfile::tempdir().unwrap();
    let d = mkdir(&b, &Gfid::ROOT, b"d");
    std::os::unix::fs::symlink(outside.path(), b.path.join("decoy")).unwrap();
    let (d_name, decoy) = (c("d"), c("decoy"));
    let stop = std::sync::atomic::AtomicBool::new(false);
    let root_fd = open_dir_path(&b.path).unwrap();
    std::thread::scope(|s| {
        // Swaps "d" and the symlink "decoy" atomically, over and over.
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                sys::rename_at(root_fd.as_fd(), &d_name, root_fd.as_fd(), &decoy, libc::RENAME_EXCHANGE).unwrap();
            }
        });
        for i in 0..2000 {
            // A cold cache makes every request resolve "d" by name anew.
            b.dir_cache.lock().unwrap().clear();
            let name = format!("x{i}");
            let _ = b.create(
                &d.gfid,
                name.as_bytes(),
                &Gfid::random(),
                0o644,
                0,
                libc::O_RDWR,
                &ROOT_CREDS,
            );
            let _ = b.make_entry(
                &d.gfid,
                format!("y{i}").as_bytes(),
                &Gfid::random(),
                NewKind::Dir,
                0o755,
                0,
                &ROOT_CREDS,
            );
            let _ = b.lookup(&d.gfid, name.as_bytes());
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    assert_eq!(
        std::fs::read_dir(outside.path()).unwrap().count(),
        0,
        "a request followed the swapped-in symlink out of the brick"
    );
    // Everything that was made is inside the real directory.
    let real = if std::fs::symlink_metadata(b.path.join("d")).unwrap().is_dir() {
        "d"
    } else {
        "decoy"
    };
    assert!(
        std::fs::read_dir(b.path.join(real)).unwrap().count() > 0,
        "nothing was ever created"
    );
}

#[test]
fn device_nodes_fifos_and_sockets_are_never_opened_by_the_brick() {
    let (_t, b) = brick();
    // /dev/zero's numbers: harmless had it been opened.
    let zero = libc::makedev(1, 5);
    for (name, mode, rdev) in [
        (&b"dev"[..], libc::S_IFCHR | 0o666, zero),
        (b"fifo", libc::S_IFIFO | 0o666, 0),
        (b"sock", libc::S_IFSOCK | 0o666, 0),
    ] {
        let a = b
            .make_entry(
                &Gfid::ROOT,
                name,
                &Gfid::random(),
                NewKind::Special(rdev),
                mode,
                0,
                &ROOT_CREDS,
            )
            .unwrap();
        assert_eq!(
            b.open(&a.gfid, libc::O_RDONLY).unwrap_err().errno,
            libc::ENXIO,
            "{name:?}"
        );
        let truncate = SetAttr {
            size: Some(0),
            ..Default::default()
        };
        assert!(b.setattr(&a.gfid, None, &truncate).is_err(), "{name:?} truncated");
        // A create without O_EXCL of an existing special file opens nothing.
        let r = b.create(&Gfid::ROOT, name, &Gfid::random(), 0o644, 0, libc::O_RDWR, &ROOT_CREDS);
        assert_eq!(r.err().map(|e| e.errno), Some(libc::ENXIO), "create over {name:?}");
    }
    // Regular files still open, and truncate as asked.
    let f = mkfile(&b, &Gfid::ROOT, b"f");
    std::fs::write(b.path.join("f"), b"data").unwrap();
    let file = b.open(&f.gfid, libc::O_RDWR | libc::O_TRUNC).unwrap();
    assert_eq!(file.metadata().unwrap().len(), 0);
}

#[test]
fn new_entries_get_the_mode_asked_whatever_the_daemons_umask() {
    let (_t, b) = brick();
    // SAFETY: umask is process-wide but only narrows; restored below.
    let old = unsafe { libc::umask(0o077) };
    let file = b.create(
        &Gfid::ROOT,
        b"f",
        &Gfid::random(),
        0o666,
        0o002,
        libc::O_RDWR,
        &ROOT_CREDS,
    );
    let dir = b.make_entry(&Gfid::ROOT, b"d", &Gfid::random(), NewKind::Dir, 0o1777, 0, &ROOT_CREDS);
    let fifo = b.make_entry(
        &Gfid::ROOT,
        b"p",
        &Gfid::random(),
        NewKind::Special(0),
        libc::S_IFIFO | 0o666,
        0,
        &ROOT_CREDS,
    );
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    assert_eq!(
        file.unwrap().0.mode & 0o7777,
        0o664,
        "the client's umask applies, not the daemon's"
    );
    assert_eq!(dir.unwrap().mode & 0o7777, 0o1777);
    assert_eq!(fifo.unwrap().mode & 0o7777, 0o666);
}

/// Soak seed 7412277449637284012 (the open stale read of 2026-12-06):
/// a replica back from a freeze held file X under a stale name (a rename
/// it missed), and X was open there (a client's handle, or a heal's). The
/// directory's entry heal removed the stale name — the handle stayed, the
/// file being open — and then made X under the source's name with the same
/// gfid (`Mknod`, as `recreate` does). `make_handle` took the open file's
/// handle for an orphan left by a kill (its only link) and replaced it:
/// two inodes with one gfid on this brick. Writes through the open handle
/// (counted as made on this replica, so nobody blames it) went to the old
/// inode, while the name, the gfid, reads, marks and heals reach the new,
/// empty one: the replica served a stale copy with every counter zero.
/// A gfid must name one inode: making it again while its file is open
/// must fail (EEXIST, "the sink holds this file already") or link that file.
#[test]
fn a_file_made_again_while_its_old_copy_is_open_is_still_one_inode() {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let (_t, b) = brick();
    let b = Arc::new(b);
    let d = mkdir(&b, &Gfid::ROOT, b"d0");
    let x = mkfile(&b, &d.gfid, b"f0");
    // A client opens X on this replica (its handle survives the freeze).
    let _open = b.open_ref(x.gfid);
    let fd = b.open(&x.gfid, libc::O_RDWR).unwrap();
    fd.write_all_at(b"stale", 0).unwrap();
    // Entry heal: f0 is stale here (the source renamed X to f2) ...
    b.unlink(&d.gfid, b"f0").unwrap();
    // ... and f2 is made here with X's gfid, empty, to be filled by heal.
    let made = b.make_entry(
        &d.gfid,
        b"f2",
        &x.gfid,
        NewKind::Special(0),
        libc::S_IFREG | 0o644,
        0,
        &ROOT_CREDS,
    );
    // The client's next write through its open handle on this replica.
    fd.write_all_at(b"acknowledged", 0).unwrap();
    let by_fd = fd.metadata().unwrap().ino();
    let by_gfid = b.open(&x.gfid, libc::O_RDONLY).unwrap().metadata().unwrap().ino();
    match made {
        // Refused: the open file keeps the gfid.
        Err(e) => assert_eq!(e.errno, libc::EEXIST),
        // Made: then it must be the open file, not a second inode.
        Ok(_) => {
            let by_name = std::fs::metadata(b.path.join("d0/f2")).unwrap().ino();
            assert_eq!(
                (by_gfid, by_name),
                (by_fd, by_fd),
                "gfid {} names two inodes on this brick: writes through the open handle go to one, \
                 reads by gfid and name to the other",
                x.gfid
            );
        }
    }
    assert_eq!(
        by_gfid, by_fd,
        "the gfid resolves to another inode than the open handle writes to"
    );
}
