//! `server.root-squash`: a mount's root user acts on the brick as the
//! anonymous user. The kernel checks modes for every other user of a mount
//! (`default_permissions`) but lets root through, so for a squashed root
//! the brick itself checks the mode bits each fop needs, as the anonymous
//! uid and gid with no supplementary groups, and gives what root creates to
//! the anonymous ids.

use crate::store::{Brick, FsError, FsResult};
use cairn_common::proto::{Attr, Creds, Fop, TimeSet};
use cairn_common::Gfid;

/// Permission bits of one mode triplet.
const READ: u32 = 4;
const WRITE: u32 = 2;
const SEARCH: u32 = 1;

/// A volume's squash settings (`server.anonuid`, `server.anongid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Squash {
    pub anon_uid: u32,
    pub anon_gid: u32,
}

impl Squash {
    /// The identity a caller acts as: uid 0 and gid 0 become the anonymous
    /// ids, independently (gluster squashes each one).
    pub fn map(&self, who: Creds) -> Creds {
        Creds {
            uid: if who.uid == 0 { self.anon_uid } else { who.uid },
            gid: if who.gid == 0 { self.anon_gid } else { who.gid },
        }
    }

    /// Gives what a squashed caller creates to the ids it acts as.
    pub fn squash_new_owner(&self, op: Fop) -> Fop {
        match op {
            Fop::Create {
                parent,
                name,
                gfid,
                mode,
                umask,
                flags,
                creds,
            } => Fop::Create {
                parent,
                name,
                gfid,
                mode,
                umask,
                flags,
                creds: self.map(creds),
            },
            Fop::Mknod {
                parent,
                name,
                gfid,
                mode,
                umask,
                rdev,
                creds,
            } => Fop::Mknod {
                parent,
                name,
                gfid,
                mode,
                umask,
                rdev,
                creds: self.map(creds),
            },
            Fop::Mkdir {
                parent,
                name,
                gfid,
                mode,
                umask,
                creds,
            } => Fop::Mkdir {
                parent,
                name,
                gfid,
                mode,
                umask,
                creds: self.map(creds),
            },
            Fop::Symlink {
                parent,
                name,
                gfid,
                target,
                creds,
            } => Fop::Symlink {
                parent,
                name,
                gfid,
                target,
                creds: self.map(creds),
            },
            other => other,
        }
    }
}

/// Do the mode bits of `attr` grant `who` every bit of `want`?
fn allowed(attr: &Attr, who: &Creds, want: u32) -> bool {
    let shift = if attr.uid == who.uid {
        6
    } else if attr.gid == who.gid {
        3
    } else {
        0
    };
    (attr.mode >> shift) & want == want
}

fn denied(what: &str) -> FsError {
    FsError::new(libc::EACCES, format!("{what}: permission denied (root is squashed)"))
}

fn not_owner(what: &str) -> FsError {
    FsError::new(libc::EPERM, format!("{what}: only the owner may (root is squashed)"))
}

/// The inode's attributes, if `who` has `want` on it.
fn need(brick: &Brick, gfid: &Gfid, who: &Creds, want: u32, what: &str) -> FsResult<Attr> {
    let attr = brick.getattr(gfid)?;
    if allowed(&attr, who, want) {
        Ok(attr)
    } else {
        Err(denied(what))
    }
}

/// The access an open with these flags needs.
fn open_access(flags: i32) -> u32 {
    let mode = match flags & libc::O_ACCMODE {
        libc::O_RDONLY => READ,
        libc::O_WRONLY => WRITE,
        _ => READ | WRITE,
    };
    if flags & libc::O_TRUNC != 0 {
        mode | WRITE
    } else {
        mode
    }
}

/// Removing or replacing `name` in a sticky directory needs ownership of
/// the directory or of the entry (`EPERM`, as Linux).
fn check_sticky(brick: &Brick, parent: &Gfid, dir: &Attr, name: &[u8], who: &Creds) -> FsResult<()> {
    if dir.mode & libc::S_ISVTX == 0 || dir.uid == who.uid {
        return Ok(());
    }
    match brick.lookup(parent, name) {
        Ok(entry) if entry.uid != who.uid => Err(not_owner("removing another user's entry from a sticky directory")),
        // Absent: the fop itself reports that.
        _ => Ok(()),
    }
}

/// Changing or removing `name` in `parent`: write and search on it, and
/// the sticky rule.
fn check_removal(brick: &Brick, parent: &Gfid, name: &[u8], who: &Creds, what: &str) -> FsResult<()> {
    let dir = need(brick, parent, who, WRITE | SEARCH, what)?;
    check_sticky(brick, parent, &dir, name, who)
}

fn check_create(brick: &Brick, parent: &Gfid, name: &[u8], flags: i32, who: &Creds) -> FsResult<()> {
    need(brick, parent, who, SEARCH, "create")?;
    match brick.lookup(parent, name) {
        // Opening an existing file (no O_EXCL) needs access to it; with
        // O_EXCL the create fails with EEXIST by itself.
        Ok(existing) if flags & libc::O_EXCL == 0 => {
            if allowed(&existing, who, open_access(flags)) {
                Ok(())
            } else {
                Err(denied("open"))
            }
        }
        Ok(_) => Ok(()),
        Err(_) => need(brick, parent, who, WRITE | SEARCH, "create").map(drop),
    }
}

fn check_setattr(
    brick: &Brick,
    gfid: &Gfid,
    has_fh: bool,
    set: &cairn_common::proto::SetAttr,
    who: &Creds,
) -> FsResult<()> {
    let attr = brick.getattr(gfid)?;
    let owner = attr.uid == who.uid;
    if set.mode.is_some() && !owner {
        return Err(not_owner("chmod"));
    }
    // Only root gives a file away; an owner may name itself.
    if set.uid.is_some_and(|uid| uid != attr.uid || !owner) {
        return Err(not_owner("chown"));
    }
    if set.gid.is_some_and(|gid| !owner || (gid != attr.gid && gid != who.gid)) {
        return Err(not_owner("chgrp"));
    }
    // Through an open handle, the open already checked write access.
    if set.size.is_some() && !has_fh && !allowed(&attr, who, WRITE) {
        return Err(denied("truncate"));
    }
    let explicit = |t: Option<TimeSet>| matches!(t, Some(TimeSet::At(_)));
    if (explicit(set.atime) || explicit(set.mtime)) && !owner {
        return Err(not_owner("setting times"));
    }
    if (set.atime.is_some() || set.mtime.is_some()) && !owner && !allowed(&attr, who, WRITE) {
        return Err(denied("touching times"));
    }
    Ok(())
}

/// User xattrs follow the file's mode; every other namespace (security,
/// system, trusted) is the owner's or root's.
fn check_xattr(brick: &Brick, gfid: &Gfid, name: &[u8], want: u32, who: &Creds) -> FsResult<()> {
    let attr = brick.getattr(gfid)?;
    if name.starts_with(b"user.") {
        return if allowed(&attr, who, want) {
            Ok(())
        } else {
            Err(denied("xattr"))
        };
    }
    if want == READ || attr.uid == who.uid {
        Ok(())
    } else {
        Err(not_owner("xattr"))
    }
}

/// Checks that `who` (a squashed root) may do `op`. Fops on open handles
/// were checked at open; internal fops of the translators (changelog
/// counters, layouts, link files, locks) carry no user intent and pass.
pub fn check(brick: &Brick, op: &Fop, who: &Creds) -> FsResult<()> {
    if who.uid == 0 {
        // Squashed to root (server.anonuid 0): nothing to hold back.
        return Ok(());
    }
    match op {
        Fop::Lookup { parent, .. } | Fop::LookupCounters { parent, .. } => {
            need(brick, parent, who, SEARCH, "lookup").map(drop)
        }
        Fop::Readdir { gfid, .. } => need(brick, gfid, who, READ, "readdir").map(drop),
        Fop::Open { gfid, flags } | Fop::OpenRead { gfid, flags, .. } => {
            need(brick, gfid, who, open_access(*flags), "open").map(drop)
        }
        Fop::Create {
            parent, name, flags, ..
        } => check_create(brick, parent, name, *flags, who),
        // Only root makes device nodes (CAP_MKNOD), and a squashed root is
        // not root.
        Fop::Mknod { mode, .. } if matches!(mode & libc::S_IFMT, libc::S_IFCHR | libc::S_IFBLK) => {
            Err(not_owner("making a device node"))
        }
        Fop::Mknod { parent, .. } | Fop::Mkdir { parent, .. } | Fop::Symlink { parent, .. } => {
            need(brick, parent, who, WRITE | SEARCH, "create").map(drop)
        }
        Fop::Link { new_parent, .. } => need(brick, new_parent, who, WRITE | SEARCH, "link").map(drop),
        Fop::Unlink { parent, name } | Fop::Rmdir { parent, name } => check_removal(brick, parent, name, who, "remove"),
        Fop::Rename {
            parent,
            name,
            new_parent,
            new_name,
            ..
        } => {
            check_removal(brick, parent, name, who, "rename")?;
            check_removal(brick, new_parent, new_name, who, "rename")
        }
        Fop::SetAttr { gfid, fh, set } => check_setattr(brick, gfid, fh.is_some(), set, who),
        Fop::GetXattr { gfid, name } => check_xattr(brick, gfid, name, READ, who),
        Fop::SetXattr { gfid, name, .. } | Fop::RemoveXattr { gfid, name } => {
            check_xattr(brick, gfid, name, WRITE, who)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_common::proto::Timespec;

    fn attr(mode: u32, uid: u32, gid: u32) -> Attr {
        let t = Timespec { sec: 0, nsec: 0 };
        Attr {
            gfid: Gfid::ROOT,
            mode,
            nlink: 1,
            uid,
            gid,
            rdev: 0,
            size: 0,
            blocks: 0,
            blksize: 4096,
            atime: t,
            mtime: t,
            ctime: t,
            linkto: None,
        }
    }

    const ANON: Creds = Creds { uid: 65534, gid: 65534 };

    #[test]
    fn the_triplet_of_the_closest_class_decides() {
        // Owner bits apply to the owner even when "other" would allow more.
        assert!(!allowed(&attr(0o007, 65534, 1), &ANON, READ));
        assert!(allowed(&attr(0o040, 1, 65534), &ANON, READ));
        assert!(!allowed(&attr(0o600, 1000, 1000), &ANON, READ));
        assert!(allowed(&attr(0o604, 1000, 1000), &ANON, READ));
        assert!(!allowed(&attr(0o604, 1000, 1000), &ANON, READ | WRITE));
    }

    #[test]
    fn squash_maps_root_ids_only() {
        let s = Squash {
            anon_uid: 65534,
            anon_gid: 65533,
        };
        assert_eq!(s.map(Creds { uid: 0, gid: 0 }), Creds { uid: 65534, gid: 65533 });
        assert_eq!(s.map(Creds { uid: 0, gid: 7 }), Creds { uid: 65534, gid: 7 });
        assert_eq!(s.map(Creds { uid: 1000, gid: 0 }), Creds { uid: 1000, gid: 65533 });
        assert_eq!(s.map(Creds { uid: 1000, gid: 1000 }), Creds { uid: 1000, gid: 1000 });
    }

    /// A brick with, at its root: `sticky/` (1777, root's) holding
    /// `theirs` (uid 1000) and `mine` (the anonymous user's), `private/`
    /// (0700, uid 1000) and `shared` (0644, uid 1000).
    fn brick_with_entries() -> (tempfile::TempDir, Brick, [Gfid; 3]) {
        use crate::store::namespace::NewKind;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        let (bid, vid) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        Brick::initialize(&path, bid, vid, "t", true).unwrap();
        let b = Brick::open_existing(&path, bid, vid).unwrap();
        let user = Creds { uid: 1000, gid: 1000 };
        let root = Creds { uid: 0, gid: 0 };
        let mk = |parent: &Gfid, name: &[u8], kind, mode, who: &Creds| {
            b.make_entry(parent, name, &Gfid::random(), kind, mode, 0, who)
                .unwrap()
                .gfid
        };
        let sticky = mk(&Gfid::ROOT, b"sticky", NewKind::Dir, 0o1777, &root);
        mk(&sticky, b"theirs", NewKind::Special(0), libc::S_IFREG | 0o666, &user);
        mk(&sticky, b"mine", NewKind::Special(0), libc::S_IFREG | 0o666, &ANON);
        let private = mk(&Gfid::ROOT, b"private", NewKind::Dir, 0o700, &user);
        let shared = mk(
            &Gfid::ROOT,
            b"shared",
            NewKind::Special(0),
            libc::S_IFREG | 0o644,
            &user,
        );
        (dir, b, [sticky, private, shared])
    }

    #[test]
    fn a_squashed_root_gets_the_anonymous_users_rights_on_a_brick() {
        let (_t, b, [sticky, private, shared]) = brick_with_entries();
        let errno = |op: Fop| check(&b, &op, &ANON).err().map(|e| e.errno);
        let name = |n: &str| n.as_bytes().to_vec();
        // The sticky bit: only one's own entries go.
        assert_eq!(
            errno(Fop::Unlink {
                parent: sticky,
                name: name("theirs")
            }),
            Some(libc::EPERM)
        );
        assert_eq!(
            errno(Fop::Unlink {
                parent: sticky,
                name: name("mine")
            }),
            None
        );
        let rename = |from: &str| Fop::Rename {
            parent: sticky,
            name: name(from),
            new_parent: sticky,
            new_name: name("new"),
            flags: 0,
        };
        assert_eq!(errno(rename("theirs")), Some(libc::EPERM));
        assert_eq!(errno(rename("mine")), None);
        // Another user's private directory: no lookups, listings or creates.
        assert_eq!(
            errno(Fop::Lookup {
                parent: private,
                name: name("x")
            }),
            Some(libc::EACCES)
        );
        let list = Fop::Readdir {
            gfid: private,
            cookie: 0,
            plus: false,
            max_entries: 10,
        };
        assert_eq!(errno(list), Some(libc::EACCES));
        let mkdir = Fop::Mkdir {
            parent: private,
            name: name("x"),
            gfid: Gfid::random(),
            mode: 0o755,
            umask: 0,
            creds: Creds { uid: 0, gid: 0 },
        };
        assert_eq!(errno(mkdir), Some(libc::EACCES));
        // Another user's 0644 file: read, but no write, chmod, or times.
        let open = |flags| Fop::Open { gfid: shared, flags };
        assert_eq!(errno(open(libc::O_RDONLY)), None);
        assert_eq!(errno(open(libc::O_WRONLY)), Some(libc::EACCES));
        assert_eq!(errno(open(libc::O_RDONLY | libc::O_TRUNC)), Some(libc::EACCES));
        let setattr = |set: cairn_common::proto::SetAttr| Fop::SetAttr {
            gfid: shared,
            fh: None,
            set,
        };
        let chmod = cairn_common::proto::SetAttr {
            mode: Some(0o777),
            ..Default::default()
        };
        assert_eq!(errno(setattr(chmod)), Some(libc::EPERM));
        let touch = cairn_common::proto::SetAttr {
            mtime: Some(TimeSet::Now),
            ..Default::default()
        };
        assert_eq!(errno(setattr(touch)), Some(libc::EACCES));
        let backdate = cairn_common::proto::SetAttr {
            mtime: Some(TimeSet::At(cairn_common::proto::Timespec { sec: 1, nsec: 0 })),
            ..Default::default()
        };
        assert_eq!(errno(setattr(backdate)), Some(libc::EPERM));
        let user_xattr = name("user.k");
        assert_eq!(
            errno(Fop::GetXattr {
                gfid: shared,
                name: user_xattr.clone()
            }),
            None
        );
        let set_xattr = Fop::SetXattr {
            gfid: shared,
            name: user_xattr,
            value: vec![1],
            flags: 0,
        };
        assert_eq!(errno(set_xattr), Some(libc::EACCES));
        // Device nodes are root's alone; a fifo in a writable place is not.
        let mknod = |mode| Fop::Mknod {
            parent: sticky,
            name: name("node"),
            gfid: Gfid::random(),
            mode,
            umask: 0,
            rdev: 0,
            creds: Creds { uid: 0, gid: 0 },
        };
        assert_eq!(errno(mknod(libc::S_IFBLK | 0o600)), Some(libc::EPERM));
        assert_eq!(errno(mknod(libc::S_IFIFO | 0o600)), None);
        // Squashed to uid 0 (server.anonuid 0) holds nothing back.
        assert!(check(&b, &open(libc::O_WRONLY), &Creds { uid: 0, gid: 0 }).is_ok());
    }

    #[test]
    fn open_flags_map_to_access() {
        assert_eq!(open_access(libc::O_RDONLY), READ);
        assert_eq!(open_access(libc::O_WRONLY), WRITE);
        assert_eq!(open_access(libc::O_RDWR), READ | WRITE);
        assert_eq!(open_access(libc::O_RDONLY | libc::O_TRUNC), READ | WRITE);
    }
}
