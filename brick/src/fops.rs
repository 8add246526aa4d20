//! Running one decoded file operation on a brick: the part of serving a
//! request that needs no network, so the server and the request-handler
//! fuzzer (`fuzz/fuzz_targets/request_handlers.rs`) share it.

use crate::store::{inode, namespace::NewKind, Brick, FsError};
use bytes::Bytes;
use cairn_common::proto::{Fop, Reply, MAX_IO_SIZE};
use cairn_common::Gfid;
use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// Open files one connection may hold.
const MAX_OPEN_FILES: usize = 65536;

pub type Outcome = Result<(Reply, Bytes), FsError>;

struct OpenFile {
    brick: Uuid,
    gfid: Gfid,
    file: Arc<File>,
    _open: crate::store::OpenRef,
}

/// The files one connection has open, by the handles it was given.
#[derive(Default)]
pub struct OpenFiles {
    files: Mutex<HashMap<u64, OpenFile>>,
    next_fh: AtomicU64,
}

impl OpenFiles {
    /// The open file `fh`, if it is open on `brick`.
    pub fn get(&self, brick: &Brick, fh: u64) -> Result<(Arc<File>, Gfid), FsError> {
        match self.gfid_and_file(&brick.id, fh) {
            Some((gfid, file)) => Ok((file, gfid)),
            None => Err(FsError::new(libc::EBADF, format!("no open file {fh}"))),
        }
    }

    /// Which inode `fh` is open on, if it is open on `brick`.
    pub fn gfid_of(&self, brick: &Uuid, fh: u64) -> Option<Gfid> {
        self.gfid_and_file(brick, fh).map(|(gfid, _)| gfid)
    }

    fn gfid_and_file(&self, brick: &Uuid, fh: u64) -> Option<(Gfid, Arc<File>)> {
        let files = self.files.lock().expect("files poisoned");
        files
            .get(&fh)
            .filter(|f| f.brick == *brick)
            .map(|f| (f.gfid, f.file.clone()))
    }

    pub fn register(&self, brick: &Arc<Brick>, gfid: Gfid, file: File) -> Result<u64, FsError> {
        let mut files = self.files.lock().expect("files poisoned");
        if files.len() >= MAX_OPEN_FILES {
            return Err(FsError::new(libc::EMFILE, "too many open files on this connection"));
        }
        // Handles start at 1: 0 never names an open file.
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed) + 1;
        files.insert(
            fh,
            OpenFile {
                brick: brick.id,
                gfid,
                file: Arc::new(file),
                _open: brick.open_ref(gfid),
            },
        );
        Ok(fh)
    }

    pub fn close(&self, fh: u64) {
        self.files.lock().expect("files poisoned").remove(&fh);
    }

    /// Closes every file (the connection went away).
    pub fn close_all(&self) {
        self.files.lock().expect("files poisoned").clear();
    }
}

/// File operations that are plain blocking syscalls, run off the async
/// threads.
pub fn blocking_fop(brick: &Arc<Brick>, files: &OpenFiles, op: Fop, payload: Bytes) -> Outcome {
    let none = Bytes::new();
    Ok(match op {
        Fop::Lookup { parent, name } => (Reply::Entry(brick.lookup(&parent, &name)?), none),
        Fop::LookupCounters { parent, name } => {
            let attr = brick.lookup(&parent, &name)?;
            // Unreadable counters are the caller's to ask for again; the
            // entry itself was found.
            let counters = brick.xattrop(&attr.gfid, &[]).ok();
            (Reply::EntryCounters { attr, counters }, none)
        }
        Fop::GetAttr { gfid } => (Reply::Attr(brick.getattr(&gfid)?), none),
        Fop::SetAttr { gfid, fh, set } => {
            let open = match fh {
                Some(fh) => Some(files.get(brick, fh)?.0),
                None => None,
            };
            (Reply::Attr(brick.setattr(&gfid, open.as_deref(), &set)?), none)
        }
        Fop::Mknod {
            parent,
            name,
            gfid,
            mode,
            umask,
            rdev,
            creds,
        } => (
            Reply::Entry(brick.make_entry(&parent, &name, &gfid, NewKind::Special(rdev), mode, umask, &creds)?),
            none,
        ),
        Fop::Mkdir {
            parent,
            name,
            gfid,
            mode,
            umask,
            creds,
        } => (
            Reply::Entry(brick.make_entry(&parent, &name, &gfid, NewKind::Dir, mode, umask, &creds)?),
            none,
        ),
        Fop::Symlink {
            parent,
            name,
            gfid,
            target,
            creds,
        } => (
            Reply::Entry(brick.make_entry(&parent, &name, &gfid, NewKind::Symlink(&target), 0o777, 0, &creds)?),
            none,
        ),
        Fop::Unlink { parent, name } => {
            brick.unlink(&parent, &name)?;
            (Reply::Empty, none)
        }
        Fop::Rmdir { parent, name } => {
            brick.rmdir(&parent, &name)?;
            (Reply::Empty, none)
        }
        Fop::Rename {
            parent,
            name,
            new_parent,
            new_name,
            flags,
        } => {
            brick.rename(&parent, &name, &new_parent, &new_name, flags)?;
            (Reply::Empty, none)
        }
        Fop::Link {
            gfid,
            new_parent,
            new_name,
        } => (Reply::Entry(brick.link(&gfid, &new_parent, &new_name)?), none),
        Fop::Readlink { gfid } => (Reply::Link(brick.readlink(&gfid)?), none),
        Fop::Open { gfid, flags } => {
            let file = brick.open(&gfid, flags)?;
            (
                Reply::Opened {
                    fh: files.register(brick, gfid, file)?,
                },
                none,
            )
        }
        Fop::OpenRead { gfid, flags, max } => {
            let file = brick.open(&gfid, flags)?;
            let whole = inode::read_whole_if_small(&file, max.min(MAX_IO_SIZE))?;
            let fh = files.register(brick, gfid, file)?;
            match whole {
                Some(data) => (
                    Reply::OpenedWhole {
                        fh,
                        len: data.len() as u32,
                    },
                    Bytes::from(data),
                ),
                None => (Reply::Opened { fh }, none),
            }
        }
        Fop::Create {
            parent,
            name,
            gfid,
            mode,
            umask,
            flags,
            creds,
        } => {
            let (attr, fd) = brick.create(&parent, &name, &gfid, mode, umask, flags, &creds)?;
            let fh = files.register(brick, attr.gfid, File::from(fd))?;
            (Reply::Created { attr, fh }, none)
        }
        Fop::Read { fh, offset, size } => {
            let (file, _) = files.get(brick, fh)?;
            let data = inode::read_at(&file, offset, size.min(MAX_IO_SIZE) as usize)?;
            (Reply::Data { len: data.len() as u32 }, Bytes::from(data))
        }
        Fop::Checksum { fh, offset, len } => {
            let (file, _) = files.get(brick, fh)?;
            let sums = inode::block_checksums(&file, offset, len.min(cairn_common::proto::MAX_CHECKSUM_SPAN))?;
            (Reply::Checksums(sums), none)
        }
        Fop::Write { fh, offset, len: _ } => {
            let (file, _) = files.get(brick, fh)?;
            let n = inode::write_at(&file, offset, &payload)?;
            (Reply::Written { len: n as u32 }, none)
        }
        Fop::Fsync { fh, datasync } => {
            let (file, _) = files.get(brick, fh)?;
            let r = if datasync { file.sync_data() } else { file.sync_all() };
            r.map_err(|e| FsError::new(e.raw_os_error().unwrap_or(libc::EIO), "fsync"))?;
            (Reply::Empty, none)
        }
        Fop::Fsyncdir { gfid, datasync: _ } => {
            let dir = brick.dir_for_sync(&gfid)?;
            crate::sys::fsync(std::os::fd::AsFd::as_fd(&*dir))
                .map_err(|e| FsError::new(e.raw_os_error().unwrap_or(libc::EIO), "fsyncdir"))?;
            (Reply::Empty, none)
        }
        Fop::Readdir {
            gfid,
            cookie,
            plus,
            max_entries,
        } => {
            let (entries, eof) = brick.readdir(&gfid, cookie, plus, max_entries as usize)?;
            (Reply::Dir { entries, eof }, none)
        }
        Fop::Statfs => (Reply::Statfs(brick.statfs()?), none),
        Fop::GetXattr { gfid, name } => (Reply::Xattr(brick.getxattr(&gfid, &name)?), none),
        Fop::SetXattr {
            gfid,
            name,
            value,
            flags,
        } => {
            brick.setxattr(&gfid, &name, &value, flags)?;
            (Reply::Empty, none)
        }
        Fop::ListXattr { gfid } => (Reply::XattrNames(brick.listxattr(&gfid)?), none),
        Fop::RemoveXattr { gfid, name } => {
            brick.removexattr(&gfid, &name)?;
            (Reply::Empty, none)
        }
        Fop::Fallocate { fh, mode, offset, len } => {
            let (file, _) = files.get(brick, fh)?;
            let allowed = libc::FALLOC_FL_KEEP_SIZE | libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE;
            if mode & !allowed != 0 {
                return Err(FsError::new(libc::EOPNOTSUPP, "fallocate mode"));
            }
            crate::sys::fallocate(std::os::fd::AsFd::as_fd(&*file), mode, offset, len)
                .map_err(|e| FsError::new(e.raw_os_error().unwrap_or(libc::EIO), "fallocate"))?;
            (Reply::Empty, none)
        }
        Fop::Lseek { fh, offset, whence } => {
            let (file, _) = files.get(brick, fh)?;
            if ![
                libc::SEEK_SET,
                libc::SEEK_CUR,
                libc::SEEK_END,
                libc::SEEK_DATA,
                libc::SEEK_HOLE,
            ]
            .contains(&whence)
            {
                return Err(FsError::new(libc::EINVAL, "lseek whence"));
            }
            let off = crate::sys::lseek(std::os::fd::AsFd::as_fd(&*file), offset, whence)
                .map_err(|e| FsError::new(e.raw_os_error().unwrap_or(libc::EIO), "lseek"))?;
            (Reply::Offset(off as u64), none)
        }
        Fop::CopyFileRange {
            fh_in,
            offset_in,
            fh_out,
            offset_out,
            len,
        } => {
            let (fin, _) = files.get(brick, fh_in)?;
            let (fout, _) = files.get(brick, fh_out)?;
            let n = crate::sys::copy_file_range(
                std::os::fd::AsFd::as_fd(&*fin),
                offset_in,
                std::os::fd::AsFd::as_fd(&*fout),
                offset_out,
                len.min(u64::from(MAX_IO_SIZE)) as usize,
            )
            .map_err(|e| FsError::new(e.raw_os_error().unwrap_or(libc::EIO), "copy_file_range"))?;
            (Reply::Written { len: n as u32 }, none)
        }
        Fop::LayoutGet { gfid } => (Reply::Xattr(brick.layout_get(&gfid)?), none),
        Fop::LayoutSet { gfid, entry } => {
            brick.layout_set(&gfid, &entry)?;
            (Reply::Empty, none)
        }
        Fop::MakeLink {
            parent,
            name,
            gfid,
            target,
        } => (Reply::Entry(brick.make_link(&parent, &name, &gfid, &target)?), none),
        Fop::Xattrop { gfid, deltas } => (Reply::Counters(brick.xattrop(&gfid, &deltas)?), none),
        Fop::SetLinkto { gfid, target } => {
            brick.set_linkto(&gfid, target.as_ref())?;
            (Reply::Empty, none)
        }
        Fop::GetLk { .. }
        | Fop::SetLk { .. }
        | Fop::Flush { .. }
        | Fop::Release { .. }
        | Fop::InodeLk { .. }
        | Fop::TxnBegin { .. }
        | Fop::TxnEnd { .. }
        | Fop::TxnCreate { .. }
        | Fop::EntryLk { .. }
        | Fop::MigrateFreeze { .. }
        | Fop::MigrateDone { .. } => return Err(FsError::new(libc::EINVAL, "lock operation on the blocking path")),
    })
}
