//! The FUSE adapter: translates fuser calls into [`CairnFs`] calls and the
//! answers back. Every `fuser::` type stays in this module, so a fuser
//! upgrade touches one place. Handlers copy their arguments, spawn onto the
//! mount's tokio runtime and return at once; replies are sent from the task.

mod attr;

use crate::fs::CairnFs;
use attr::{fuse_attr, set_attr_from};
use bytes::Bytes;
use cairn_common::proto::{Creds, LockSpec, LockType};
use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno as FErrno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLock, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Largest write the kernel sends us (it caps at max_pages_limit × 4 KiB).
pub const MAX_WRITE: u32 = 1 << 20;
/// Directory entries fetched per readdir round trip.
const READDIR_BATCH: u32 = 512;

/// Cache lifetimes handed to the kernel.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub attr: Duration,
    pub entry: Duration,
    /// How long the kernel may remember that a name does not exist (0, the
    /// default as in gluster, keeps every client's creations visible at once).
    pub negative: Duration,
}

pub struct FuseAdapter {
    fs: Arc<CairnFs>,
    rt: tokio::runtime::Handle,
    timeouts: Timeouts,
    /// `-o acl`: the kernel enforces POSIX ACLs (FUSE_POSIX_ACL).
    posix_acl: bool,
}

impl FuseAdapter {
    pub fn new(fs: Arc<CairnFs>, rt: tokio::runtime::Handle, timeouts: Timeouts) -> FuseAdapter {
        FuseAdapter {
            fs,
            rt,
            timeouts,
            posix_acl: false,
        }
    }

    /// Asks the kernel to enforce POSIX ACLs in its permission checks.
    /// Without it the ACL xattrs are still stored and read back (bricks
    /// keep them, ext4/xfs keep the mode in step), but only the mode bits
    /// decide access, as in gluster without `-o acl`.
    pub fn with_posix_acl(mut self, on: bool) -> FuseAdapter {
        self.posix_acl = on;
        self
    }

    /// Runs a handler's work on the runtime, on behalf of the requesting
    /// user (see [`crate::caller`]).
    fn spawn<F>(&self, req: &Request, f: impl FnOnce(Arc<CairnFs>, Timeouts) -> F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let work = f(self.fs.clone(), self.timeouts);
        self.rt.spawn(crate::caller::as_user(creds(req), work));
    }
}

fn errno(e: crate::layer::Errno) -> FErrno {
    FErrno::from_i32(e.0)
}

fn creds(req: &Request) -> Creds {
    Creds {
        uid: req.uid(),
        gid: req.gid(),
    }
}

fn lock_type(typ: i32) -> Option<LockType> {
    match typ {
        libc::F_RDLCK => Some(LockType::Read),
        libc::F_WRLCK => Some(LockType::Write),
        libc::F_UNLCK => Some(LockType::Unlock),
        _ => None,
    }
}

/// The lock a getlk/setlk describes; None for an unknown lock type.
fn lock_spec(typ: i32, start: u64, end: u64, pid: u32, owner: LockOwner) -> Option<LockSpec> {
    Some(LockSpec {
        typ: lock_type(typ)?,
        start,
        end,
        pid,
        owner: owner.0,
    })
}

fn lock_code(t: LockType) -> i32 {
    match t {
        LockType::Read => libc::F_RDLCK,
        LockType::Write => libc::F_WRLCK,
        LockType::Unlock => libc::F_UNLCK,
    }
}

/// Replies to an entry-creating call, taking a kernel lookup reference.
fn reply_entry(fs: &CairnFs, t: Timeouts, reply: ReplyEntry, r: crate::fs::FsResult<cairn_common::proto::Attr>) {
    match r {
        Ok(a) => {
            fs.remember(&a);
            reply.entry_with_ttls(&t.entry, &t.attr, &fuse_attr(&a), Generation(0));
        }
        Err(e) => reply.error(errno(e)),
    }
}

fn reply_empty(reply: ReplyEmpty, r: crate::fs::FsResult<()>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}

fn reply_xattr(reply: ReplyXattr, size: u32, r: crate::fs::FsResult<Vec<u8>>) {
    match r {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(FErrno::from_i32(libc::ERANGE)),
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(errno(e)),
    }
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_WRITE);
        let _ = config.set_max_readahead(MAX_WRITE);
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        // Only capabilities known to work in fuser 0.18 (see
        // docs/architecture.md): never SETXATTR_EXT, HANDLE_KILLPRIV_V2,
        // SECURITY_CTX, CREATE_SUPP_GROUP or ALLOW_IDMAP.
        let wanted = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_ASYNC_DIO
            | InitFlags::FUSE_POSIX_LOCKS
            | InitFlags::FUSE_FLOCK_LOCKS;
        let wanted = if self.posix_acl {
            wanted | InitFlags::FUSE_POSIX_ACL
        } else {
            wanted
        };
        if self.posix_acl && !config.capabilities().contains(InitFlags::FUSE_POSIX_ACL) {
            tracing::warn!("the kernel does not offer POSIX ACLs: option acl has no effect");
        }
        let offered = config.capabilities() & wanted;
        if let Err(missing) = config.add_capabilities(offered) {
            tracing::warn!(?missing, "kernel refused FUSE capabilities");
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = name.as_bytes().to_vec();
        self.spawn(req, move |fs, t| async move {
            match fs.lookup(parent.0, &name).await {
                // A negative entry (inode 0) the kernel keeps for a while.
                Err(e) if e.0 == libc::ENOENT && !t.negative.is_zero() => {
                    let mut none = fuse_attr(&attr::placeholder(cairn_common::Gfid::ROOT));
                    none.ino = INodeNo(0);
                    reply.entry_with_ttls(&t.negative, &t.negative, &none, Generation(0));
                }
                r => reply_entry(&fs, t, reply, r),
            }
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.spawn(req, move |fs, t| async move {
            match fs.getattr(ino.0).await {
                Ok(a) => reply.attr(&t.attr, &fuse_attr(&a)),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = set_attr_from(mode, uid, gid, size, atime, mtime);
        self.spawn(req, move |fs, t| async move {
            match fs.setattr(ino.0, fh.map(|f| f.0), set).await {
                Ok(a) => reply.attr(&t.attr, &fuse_attr(&a)),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        self.spawn(req, move |fs, _| async move {
            match fs.readlink(ino.0).await {
                Ok(target) => reply.data(&target),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        let (name, creds) = (name.as_bytes().to_vec(), creds(req));
        self.spawn(req, move |fs, t| async move {
            let r = fs.mknod(parent.0, &name, mode, umask, u64::from(rdev), creds).await;
            reply_entry(&fs, t, reply, r);
        });
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let (name, creds) = (name.as_bytes().to_vec(), creds(req));
        self.spawn(req, move |fs, t| async move {
            let r = fs.mkdir(parent.0, &name, mode, umask, creds).await;
            reply_entry(&fs, t, reply, r);
        });
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.as_bytes().to_vec();
        self.spawn(req, move |fs, _| async move {
            reply_empty(reply, fs.unlink(parent.0, &name).await)
        });
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.as_bytes().to_vec();
        self.spawn(req, move |fs, _| async move {
            reply_empty(reply, fs.rmdir(parent.0, &name).await)
        });
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &std::path::Path, reply: ReplyEntry) {
        let (name, target, creds) = (
            link_name.as_bytes().to_vec(),
            target.as_os_str().as_bytes().to_vec(),
            creds(req),
        );
        self.spawn(req, move |fs, t| async move {
            let r = fs.symlink(parent.0, &name, &target, creds).await;
            reply_entry(&fs, t, reply, r);
        });
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (name, newname) = (name.as_bytes().to_vec(), newname.as_bytes().to_vec());
        self.spawn(req, move |fs, _| async move {
            reply_empty(
                reply,
                fs.rename(parent.0, &name, newparent.0, &newname, flags.bits()).await,
            )
        });
    }

    fn link(&self, req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let newname = newname.as_bytes().to_vec();
        self.spawn(req, move |fs, t| async move {
            let r = fs.link(ino.0, newparent.0, &newname).await;
            reply_entry(&fs, t, reply, r);
        });
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.spawn(req, move |fs, _| async move {
            match fs.open(ino.0, flags.0).await {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.spawn(req, move |fs, _| async move {
            match fs.read(fh.0, offset, size).await {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // The one copy out of fuser's session buffer; QUIC sends it as is.
        let data = Bytes::copy_from_slice(data);
        self.spawn(req, move |fs, _| async move {
            match fs.write(fh.0, offset, data).await {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn flush(&self, req: &Request, ino: INodeNo, fh: FileHandle, lock_owner: LockOwner, reply: ReplyEmpty) {
        self.spawn(req, move |fs, _| async move {
            reply_empty(reply, fs.flush(ino.0, fh.0, lock_owner.0).await)
        });
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.spawn(req, move |fs, _| async move {
            // The last close of an flock'ed file drops its flock.
            if let Some(owner) = lock_owner {
                let _ = fs.flush(ino.0, fh.0, owner.0).await;
            }
            reply_empty(reply, fs.release(fh.0).await)
        });
    }

    fn fsync(&self, req: &Request, _ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        self.spawn(req, move |fs, _| async move {
            reply_empty(reply, fs.fsync(fh.0, datasync).await)
        });
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // Listings are stateless on the brick (cookie based): no handle.
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn readdir(&self, req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        self.spawn(req, move |fs, _| async move {
            match fs.list(ino.0, offset, false, READDIR_BATCH).await {
                Ok(listing) => {
                    let mut taken = 0;
                    for e in &listing.entries {
                        let ino = if e.name == b".." { 1 } else { e.gfid.inode_number() };
                        if reply.add(
                            INodeNo(ino),
                            e.cookie,
                            attr::file_type(e.kind),
                            OsStr::from_bytes(&e.name),
                        ) {
                            break;
                        }
                        taken += 1;
                    }
                    reply.ok();
                    fs.keep_unlisted(ino.0, false, listing, taken);
                }
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn readdirplus(&self, req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        self.spawn(req, move |fs, t| async move {
            match fs.list(ino.0, offset, true, READDIR_BATCH).await {
                Ok(listing) => {
                    // Entries up to the last one the kernel took or we
                    // skipped. A remainder kept after a skipped one is
                    // never served (the kernel resumes from the last
                    // entry it took): kept after the last taken instead,
                    // a remainder of only skipped entries would end the
                    // listing early.
                    let mut taken = 0;
                    for (i, e) in listing.entries.iter().enumerate() {
                        let dots = e.name == b"." || e.name == b"..";
                        let Some(a) = e.attr.or_else(|| dots.then(|| attr::placeholder(e.gfid))) else {
                            taken = i + 1;
                            continue;
                        };
                        let entry_ino = if dots { ino.0 } else { a.gfid.inode_number() };
                        if reply.add(
                            INodeNo(entry_ino),
                            e.cookie,
                            OsStr::from_bytes(&e.name),
                            &t.entry,
                            &fuse_attr(&a),
                            Generation(0),
                        ) {
                            break;
                        }
                        taken = i + 1;
                        // The kernel takes a lookup reference on each entry
                        // but the dots.
                        if !dots {
                            fs.remember(&a);
                        }
                    }
                    reply.ok();
                    fs.keep_unlisted(ino.0, true, listing, taken);
                }
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn fsyncdir(&self, req: &Request, ino: INodeNo, _fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        self.spawn(req, move |fs, _| async move {
            reply_empty(reply, fs.fsyncdir(ino.0, datasync).await)
        });
    }

    fn statfs(&self, req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.spawn(req, move |fs, _| async move {
            match fs.statfs().await {
                Ok(s) => reply.statfs(
                    s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
                ),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let (name, value) = (name.as_bytes().to_vec(), value.to_vec());
        self.spawn(req, move |fs, _| async move {
            reply_empty(reply, fs.setxattr(ino.0, &name, &value, flags).await)
        });
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let name = name.as_bytes().to_vec();
        self.spawn(req, move |fs, _| async move {
            reply_xattr(reply, size, fs.getxattr(ino.0, &name).await)
        });
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.spawn(req, move |fs, _| async move {
            let r = fs.listxattr(ino.0).await.map(|names| {
                let mut out = Vec::new();
                for n in names {
                    out.extend_from_slice(&n);
                    out.push(0);
                }
                out
            });
            reply_xattr(reply, size, r)
        });
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.as_bytes().to_vec();
        self.spawn(req, move |fs, _| async move {
            reply_empty(reply, fs.removexattr(ino.0, &name).await)
        });
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let (uid, gid) = (req.uid(), req.gid());
        self.spawn(req, move |fs, _| async move {
            reply_empty(reply, fs.access(ino.0, mask.bits(), uid, gid).await)
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let (name, creds) = (name.as_bytes().to_vec(), creds(req));
        self.spawn(req, move |fs, t| async move {
            match fs.create(parent.0, &name, mode, umask, flags, creds).await {
                Ok((a, fh)) => {
                    fs.remember(&a);
                    reply.created(
                        &t.entry,
                        &fuse_attr(&a),
                        Generation(0),
                        FileHandle(fh),
                        FopenFlags::empty(),
                    );
                }
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn getlk(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        reply: ReplyLock,
    ) {
        let Some(lock) = lock_spec(typ, start, end, pid, lock_owner) else {
            return reply.error(FErrno::from_i32(libc::EINVAL));
        };
        self.spawn(req, move |fs, _| async move {
            match fs.getlk(fh.0, lock).await {
                Ok(Some(l)) => reply.locked(l.start, l.end, lock_code(l.typ), l.pid),
                Ok(None) => reply.locked(start, end, libc::F_UNLCK, 0),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn setlk(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let Some(lock) = lock_spec(typ, start, end, pid, lock_owner) else {
            return reply.error(FErrno::from_i32(libc::EINVAL));
        };
        self.spawn(req, move |fs, _| async move {
            reply_empty(reply, fs.setlk(ino.0, fh.0, lock, sleep).await)
        });
    }

    fn fallocate(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.spawn(req, move |fs, _| async move {
            reply_empty(reply, fs.fallocate(fh.0, mode, offset, length).await)
        });
    }

    fn lseek(&self, req: &Request, _ino: INodeNo, fh: FileHandle, offset: i64, whence: i32, reply: ReplyLseek) {
        self.spawn(req, move |fs, _| async move {
            match fs.lseek(fh.0, offset, whence).await {
                Ok(o) => reply.offset(o as i64),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn copy_file_range(
        &self,
        req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        self.spawn(req, move |fs, _| async move {
            match fs.copy_file_range(fh_in.0, offset_in, fh_out.0, offset_out, len).await {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(errno(e)),
            }
        });
    }
}
