//! Conversions between Cairn's attributes and fuser's.

use cairn_common::proto::{Attr, SetAttr, TimeSet, Timespec};
use cairn_common::Gfid;
use fuser::{FileAttr, FileType, INodeNo, TimeOrNow};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn file_type(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn system_time(t: Timespec) -> SystemTime {
    if t.sec >= 0 {
        UNIX_EPOCH + Duration::new(t.sec as u64, t.nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.sec.unsigned_abs()) + Duration::from_nanos(u64::from(t.nsec))
    }
}

fn timespec(t: SystemTime) -> Timespec {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timespec {
            sec: d.as_secs() as i64,
            nsec: d.subsec_nanos(),
        },
        Err(e) => {
            let d = e.duration();
            let (mut sec, mut nsec) = (-(d.as_secs() as i64), d.subsec_nanos());
            if nsec > 0 {
                sec -= 1;
                nsec = 1_000_000_000 - nsec;
            }
            Timespec { sec, nsec }
        }
    }
}

pub fn fuse_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.gfid.inode_number()),
        size: a.size,
        blocks: a.blocks,
        atime: system_time(a.atime),
        mtime: system_time(a.mtime),
        ctime: system_time(a.ctime),
        crtime: system_time(a.ctime),
        kind: file_type(a.mode),
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev as u32,
        blksize: a.blksize,
        flags: 0,
    }
}

/// Attributes for `.`/`..` in readdirplus, which the kernel ignores.
pub fn placeholder(gfid: Gfid) -> Attr {
    Attr {
        gfid,
        mode: libc::S_IFDIR | 0o755,
        nlink: 2,
        uid: 0,
        gid: 0,
        rdev: 0,
        size: 0,
        blocks: 0,
        blksize: 4096,
        atime: Timespec::default(),
        mtime: Timespec::default(),
        ctime: Timespec::default(),
        linkto: None,
    }
}

/// The kernel's (sec, nsec) of a time a setattr carries. fuser 0.18 turns a
/// pre-epoch (sec, nsec) into `EPOCH - (|sec| s + nsec ns)` (its own TODO
/// in `time.rs`), so the same subtraction is undone here rather than the
/// exact inverse of `system_time`.
fn setattr_timespec(t: SystemTime) -> Timespec {
    match t.duration_since(UNIX_EPOCH) {
        Ok(_) => timespec(t),
        Err(e) => Timespec {
            sec: -(e.duration().as_secs() as i64),
            nsec: e.duration().subsec_nanos(),
        },
    }
}

fn time_set(t: TimeOrNow) -> TimeSet {
    match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(st) => TimeSet::At(setattr_timespec(st)),
    }
}

pub fn set_attr_from(
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    size: Option<u64>,
    atime: Option<TimeOrNow>,
    mtime: Option<TimeOrNow>,
) -> SetAttr {
    SetAttr {
        mode,
        uid,
        gid,
        size,
        atime: atime.map(time_set),
        mtime: mtime.map(time_set),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_including_before_the_epoch() {
        for t in [
            Timespec { sec: 5, nsec: 7 },
            Timespec { sec: -3, nsec: 250 },
            Timespec { sec: 0, nsec: 0 },
        ] {
            assert_eq!(timespec(system_time(t)), t);
        }
    }

    #[test]
    fn setattr_times_undo_fusers_pre_epoch_mapping() {
        // What fuser 0.18 hands over for the kernel's (-1000 s, 5 ns).
        let from_fuser = UNIX_EPOCH - Duration::new(1000, 5);
        assert_eq!(setattr_timespec(from_fuser), Timespec { sec: -1000, nsec: 5 });
        let later = UNIX_EPOCH + Duration::new(7, 9);
        assert_eq!(setattr_timespec(later), Timespec { sec: 7, nsec: 9 });
    }
}
