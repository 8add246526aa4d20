//! Inode operations: attributes, symlink targets, opening by gfid, xattrs,
//! and I/O on open files.

use super::{Brick, Ctx, FsError, FsResult, Node, PRIVATE_XATTR_PREFIX};
use crate::sys;
use cairn_common::proto::{Attr, SetAttr, TimeSet, MAX_XATTR_SIZE};
use cairn_common::Gfid;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;

impl Brick {
    pub fn getattr(&self, gfid: &Gfid) -> FsResult<Attr> {
        let node = self.resolve(gfid)?;
        self.stat_node(&node, *gfid)
    }

    /// Applies a setattr: size first, then owner and mode, times last so an
    /// explicit mtime survives the truncate.
    pub fn setattr(&self, gfid: &Gfid, open: Option<&File>, set: &SetAttr) -> FsResult<Attr> {
        let node = self.resolve(gfid)?;
        let before = self.stat_node(&node, *gfid)?;
        let is_link = before.mode & libc::S_IFMT == libc::S_IFLNK;
        if let Some(size) = set.size {
            if before.is_dir() {
                return Err(FsError::new(libc::EISDIR, "truncate of a directory"));
            }
            if before.mode & libc::S_IFMT != libc::S_IFREG {
                return Err(FsError::new(libc::EINVAL, "truncate of a special file"));
            }
            match open {
                Some(f) => f.set_len(size).ctx(|| "truncate".into())?,
                None => self
                    .open_node(&node, libc::O_WRONLY)?
                    .set_len(size)
                    .ctx(|| "truncate".into())?,
            }
        }
        let (dir, name) = self.node_at(&node);
        if set.uid.is_some() || set.gid.is_some() {
            sys::chown_at(dir, name, set.uid.unwrap_or(u32::MAX), set.gid.unwrap_or(u32::MAX))
                .ctx(|| "chown".into())?;
        }
        if let Some(mode) = set.mode {
            if is_link {
                return Err(FsError::new(libc::EOPNOTSUPP, "chmod of a symlink"));
            }
            match &node {
                Node::Dir(fd) => sys::chmod_fd(fd.as_fd(), mode & 0o7777),
                Node::File(h) => sys::chmod_at(self.files.as_fd(), h, mode & 0o7777),
            }
            .ctx(|| "chmod".into())?;
        }
        if set.atime.is_some() || set.mtime.is_some() {
            let times = [to_timespec(set.atime), to_timespec(set.mtime)];
            sys::utimens_at(dir, name, &times).ctx(|| "utimens".into())?;
        }
        self.stat_node(&node, *gfid)
    }

    pub fn readlink(&self, gfid: &Gfid) -> FsResult<Vec<u8>> {
        match self.resolve(gfid)? {
            Node::Dir(_) => Err(FsError::new(libc::EINVAL, "readlink of a directory")),
            Node::File(h) => sys::readlink_at(self.files.as_fd(), &h).ctx(|| "readlink".into()),
        }
    }

    fn open_node(&self, node: &Node, flags: i32) -> FsResult<File> {
        match node {
            Node::Dir(_) => Err(FsError::new(libc::EISDIR, "open of a directory")),
            Node::File(h) => {
                let fd = sys::open_regular_beneath(self.files.as_fd(), h, super::namespace::sanitize_open_flags(flags))
                    .map_err(|e| match e.raw_os_error() {
                        // The kernel never asks a FUSE file system to open
                        // a symlink or special file itself: a bad request.
                        Some(libc::ELOOP) => FsError::new(libc::ELOOP, "open of a symlink"),
                        Some(libc::ENXIO) => FsError::new(libc::ENXIO, "open of a device, fifo or socket"),
                        _ => FsError::new(e.raw_os_error().unwrap_or(libc::EIO), "open"),
                    })?;
                Ok(File::from(fd))
            }
        }
    }

    pub fn open(&self, gfid: &Gfid, flags: i32) -> FsResult<File> {
        let node = self.resolve(gfid)?;
        self.open_node(&node, flags)
    }

    fn xattr_target(&self, gfid: &Gfid, name: &[u8]) -> FsResult<(Node, std::ffi::CString)> {
        if name.is_empty() || name.len() > 255 {
            return Err(FsError::new(libc::ERANGE, "xattr name length"));
        }
        if name.starts_with(PRIVATE_XATTR_PREFIX) {
            return Err(FsError::new(libc::EPERM, "cairn's own xattrs are not accessible"));
        }
        let cname = sys::cstr(name).ctx(|| "xattr name".into())?;
        Ok((self.resolve(gfid)?, cname))
    }

    pub fn getxattr(&self, gfid: &Gfid, name: &[u8]) -> FsResult<Vec<u8>> {
        let (node, cname) = self.xattr_target(gfid, name).map_err(|e| {
            // Reading a hidden name looks like reading an absent one.
            if e.errno == libc::EPERM {
                FsError::new(libc::ENODATA, "no such attribute")
            } else {
                e
            }
        })?;
        let path = self.node_proc_path(&node)?;
        sys::lgetxattr(&path, &cname).ctx(|| "getxattr".into())
    }

    pub fn setxattr(&self, gfid: &Gfid, name: &[u8], value: &[u8], flags: i32) -> FsResult<()> {
        if value.len() > MAX_XATTR_SIZE {
            return Err(FsError::new(libc::E2BIG, "xattr value too large"));
        }
        if flags & !(libc::XATTR_CREATE | libc::XATTR_REPLACE) != 0 {
            return Err(FsError::new(libc::EINVAL, "xattr flags"));
        }
        let (node, cname) = self.xattr_target(gfid, name)?;
        let path = self.node_proc_path(&node)?;
        sys::lsetxattr(&path, &cname, value, flags).ctx(|| "setxattr".into())
    }

    /// Sets or removes a file's distribute link target (rebalance makes a
    /// link file it filled into the file by removing it).
    pub fn set_linkto(&self, gfid: &Gfid, target: Option<&uuid::Uuid>) -> FsResult<()> {
        let node = self.resolve(gfid)?;
        if matches!(node, super::Node::Dir(_)) {
            return Err(FsError::new(libc::EISDIR, "a directory has no link target"));
        }
        let path = self.node_proc_path(&node)?;
        let name = super::c(super::LINKTO_XATTR);
        match target {
            Some(t) => sys::lsetxattr(&path, &name, t.as_bytes(), 0).ctx(|| "setting the link target".into()),
            None => match sys::lremovexattr(&path, &name) {
                Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(()),
                r => r.ctx(|| "removing the link target".into()),
            },
        }
    }

    pub fn listxattr(&self, gfid: &Gfid) -> FsResult<Vec<Vec<u8>>> {
        let node = self.resolve(gfid)?;
        let path = self.node_proc_path(&node)?;
        let raw = sys::llistxattr(&path).ctx(|| "listxattr".into())?;
        Ok(raw
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty() && !n.starts_with(PRIVATE_XATTR_PREFIX))
            .map(<[u8]>::to_vec)
            .collect())
    }

    /// Adds `deltas` to replication counters (`trusted.cairn.afr.*`, each
    /// three big-endian i32: data, metadata, entry) and returns every such
    /// counter on the inode afterwards. Serialised per brick, so concurrent
    /// adds from several clients never lose one; zero deltas just read.
    pub fn xattrop(&self, gfid: &Gfid, deltas: &[(String, [i32; 3])]) -> FsResult<Vec<(String, [i32; 3])>> {
        for (name, _) in deltas {
            let valid = name
                .strip_prefix(AFR_XATTR_PREFIX)
                .is_some_and(|rest| !rest.is_empty() && rest.len() <= 64 && rest.bytes().all(|b| b.is_ascii_graphic()));
            if !valid {
                return Err(FsError::new(
                    libc::EINVAL,
                    format!("not a replication counter: {name:?}"),
                ));
            }
        }
        let node = self.resolve(gfid)?;
        let path = self.node_proc_path(&node)?;
        let _serial = self.xattrop_lock.lock().expect("xattrop lock poisoned");
        for (name, delta) in deltas.iter().filter(|(_, d)| *d != [0; 3]) {
            let cname = sys::cstr(name.as_bytes()).ctx(|| "xattr name".into())?;
            let mut value = match sys::lgetxattr(&path, &cname) {
                Ok(v) => {
                    decode_counter(&v).ok_or_else(|| FsError::new(libc::EIO, format!("corrupt counter {name}")))?
                }
                Err(e) if e.raw_os_error() == Some(libc::ENODATA) => [0; 3],
                Err(e) => return Err(e).ctx(|| "reading a counter".into()),
            };
            for (v, d) in value.iter_mut().zip(delta) {
                *v = v.saturating_add(*d);
            }
            sys::lsetxattr(&path, &cname, &encode_counter(value), 0).ctx(|| "writing a counter".into())?;
        }
        let raw = sys::llistxattr(&path).ctx(|| "listxattr".into())?;
        let mut out = Vec::new();
        for name in raw
            .split(|&b| b == 0)
            .filter(|n| n.starts_with(AFR_XATTR_PREFIX.as_bytes()))
        {
            let cname = sys::cstr(name).ctx(|| "xattr name".into())?;
            let v = sys::lgetxattr(&path, &cname).ctx(|| "reading a counter".into())?;
            let counter = decode_counter(&v).ok_or_else(|| FsError::new(libc::EIO, "corrupt replication counter"))?;
            out.push((String::from_utf8_lossy(name).into_owned(), counter));
        }
        out.sort();
        self.note_pending(gfid, out.iter().any(|(_, c)| *c != [0; 3]))?;
        Ok(out)
    }

    /// The heal index: `.cairn/index/<gfid>` exists while the inode has a
    /// non-zero replication counter here (a change in flight, or one some
    /// replica missed), so `heal info` and the self-heal daemon find what
    /// needs looking at without crawling the brick.
    fn note_pending(&self, gfid: &Gfid, pending: bool) -> FsResult<()> {
        let dir = self.path.join(".cairn").join("index");
        let entry = dir.join(gfid.to_hex());
        if pending {
            if let Err(e) = std::fs::File::create(&entry) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(e).ctx(|| "adding to the heal index".into());
                }
                std::fs::create_dir_all(&dir).ctx(|| "creating the heal index".into())?;
                std::fs::File::create(&entry).ctx(|| "adding to the heal index".into())?;
            }
        } else {
            match std::fs::remove_file(&entry) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).ctx(|| "removing from the heal index".into()),
            }
        }
        Ok(())
    }

    /// How many inodes the heal index holds: a directory count, with no
    /// xattr read per entry (a metrics scrape asks this often).
    pub fn heal_index_len(&self) -> usize {
        let dir = self.path.join(".cairn").join("index");
        std::fs::read_dir(dir).map_or(0, |listing| {
            listing
                .flatten()
                .filter(|e| e.file_name().to_str().and_then(Gfid::from_hex).is_some())
                .count()
        })
    }

    /// Every inode in the heal index with its counters here, and its path
    /// if this brick knows it.
    pub fn pending_heal(&self) -> FsResult<Vec<(Gfid, Option<String>, cairn_common::changelog::Counters)>> {
        let dir = self.path.join(".cairn").join("index");
        let listing = match std::fs::read_dir(&dir) {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).ctx(|| "reading the heal index".into()),
        };
        let mut out = Vec::new();
        for item in listing {
            let item = item.ctx(|| "reading the heal index".into())?;
            let Some(gfid) = item.file_name().to_str().and_then(Gfid::from_hex) else {
                continue;
            };
            if self.drop_if_orphan(&gfid) {
                let _ = std::fs::remove_file(item.path());
                continue;
            }
            match self.xattrop(&gfid, &[]) {
                Ok(counters) => out.push((gfid, self.path_of(&gfid), counters)),
                // Removed since: its index entry goes with it.
                Err(e) if e.errno == libc::ENOENT || e.errno == libc::ESTALE => {
                    let _ = std::fs::remove_file(item.path());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    pub fn removexattr(&self, gfid: &Gfid, name: &[u8]) -> FsResult<()> {
        let (node, cname) = self.xattr_target(gfid, name)?;
        let path = self.node_proc_path(&node)?;
        sys::lremovexattr(&path, &cname).ctx(|| "removexattr".into())
    }
}

/// Replication counters: `trusted.cairn.afr.dirty` and
/// `trusted.cairn.afr.<brick-id>` (changes that brick missed).
pub const AFR_XATTR_PREFIX: &str = "trusted.cairn.afr.";

fn decode_counter(v: &[u8]) -> Option<[i32; 3]> {
    if v.len() != 12 {
        return None;
    }
    let n = |i: usize| i32::from_be_bytes(v[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
    Some([n(0), n(1), n(2)])
}

fn encode_counter(c: [i32; 3]) -> [u8; 12] {
    let mut out = [0u8; 12];
    for (i, v) in c.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&v.to_be_bytes());
    }
    out
}

fn to_timespec(t: Option<TimeSet>) -> libc::timespec {
    match t {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(TimeSet::Now) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(TimeSet::At(ts)) => libc::timespec {
            tv_sec: ts.sec,
            tv_nsec: i64::from(ts.nsec.min(999_999_999)),
        },
    }
}

/// Reads up to `size` bytes at `offset`; short only at end of file.
pub fn read_at(file: &File, offset: u64, size: usize) -> FsResult<Vec<u8>> {
    let mut buf = vec![0u8; size];
    let mut done = 0;
    while done < size {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).ctx(|| "read".into()),
        }
    }
    buf.truncate(done);
    Ok(buf)
}

/// The whole content of a regular `file` holding at most `max` bytes, or
/// None (larger, growing as it is read, or not a regular file; unreadable
/// as opened: write-only).
pub fn read_whole_if_small(file: &File, max: u32) -> FsResult<Option<Vec<u8>>> {
    let meta = file.metadata().ctx(|| "fstat".into())?;
    if !meta.file_type().is_file() || meta.len() > u64::from(max) {
        return Ok(None);
    }
    // One byte more than it holds: getting it means it grew meanwhile.
    let data = match read_at(file, 0, meta.len() as usize + 1) {
        Ok(data) => data,
        Err(e) if e.errno == libc::EBADF => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok((data.len() as u64 <= meta.len()).then_some(data))
}

/// xxh3 of each `CHECKSUM_BLOCK` of `file` in `[offset, offset + len)`
/// (the last one short at end of file), `None` for a block that is all
/// zeros. Holes are found with SEEK_DATA and not read.
pub fn block_checksums(file: &File, offset: u64, len: u32) -> FsResult<Vec<Option<u64>>> {
    use cairn_common::proto::CHECKSUM_BLOCK;
    use std::os::fd::AsFd;
    let size = file.metadata().ctx(|| "stat for checksums".into())?.len();
    let end = offset.saturating_add(u64::from(len)).min(size);
    let mut out = Vec::new();
    let mut pos = offset;
    // The next offset holding data (the file's size past the last).
    let mut data_from = pos;
    while pos < end {
        let block_end = (pos + u64::from(CHECKSUM_BLOCK)).min(end);
        if data_from <= pos {
            data_from = match crate::sys::lseek(file.as_fd(), pos as i64, libc::SEEK_DATA) {
                Ok(at) => at as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => size,
                Err(e) => return Err(e).ctx(|| "seeking data for checksums".into()),
            };
        }
        if data_from >= block_end {
            out.push(None);
        } else {
            let block = read_at(file, pos, (block_end - pos) as usize)?;
            out.push(cairn_common::checksum::block_checksum(&block));
        }
        pos = block_end;
    }
    Ok(out)
}

/// Writes all of `data` at `offset` (at the end for O_APPEND files).
pub fn write_at(file: &File, offset: u64, data: &[u8]) -> FsResult<usize> {
    let mut done = 0;
    while done < data.len() {
        match file.write_at(&data[done..], offset + done as u64) {
            Ok(0) => return Err(FsError::new(libc::EIO, "write made no progress")),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // A partial write followed by an error reports what landed; the
            // kernel retries the rest and then sees the error (e.g. ENOSPC).
            Err(_) if done > 0 => break,
            Err(e) => return Err(e).ctx(|| "write".into()),
        }
    }
    Ok(done)
}
