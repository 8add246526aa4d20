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
