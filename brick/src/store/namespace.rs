//! Namespace operations: entries looked up, made, renamed and removed by
//! (parent gfid, name), each name checked before it reaches a syscall.

use super::{c, Brick, Ctx, FsError, FsResult, Node, GFID_XATTR};
use crate::sys;
use cairn_common::names::{check_name, PRIVATE_DIR};
use cairn_common::proto::{Attr, Creds, DirEntry};
use cairn_common::Gfid;
use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

/// What kind of inode a create makes.
pub enum NewKind<'a> {
    Dir,
    /// mknod: regular file, fifo, socket or device, with its rdev.
    Special(u64),
    Symlink(&'a [u8]),
}

impl Brick {
    /// Checks an entry name in `parent`; the brick's private directory is
    /// invisible at the root.
    pub(crate) fn entry_name(&self, parent: &Gfid, name: &[u8]) -> FsResult<CString> {
        check_name(name)
            .map_err(|e| FsError::new(e.errno(), format!("name {:?}: {e}", String::from_utf8_lossy(name))))?;
        if parent.is_root() && name == PRIVATE_DIR {
            return Err(FsError::new(
                libc::EPERM,
                "the brick's private directory is not part of the volume",
            ));
        }
        sys::cstr(name).ctx(|| "name".into())
    }

    /// The gfid of the entry `name` in `dir`, assigning one if the entry was
    /// made behind the brick's back (so files copied onto a brick appear).
    fn entry_gfid(&self, parent: &Gfid, dir: BorrowedFd<'_>, name: &CString, st: &libc::stat) -> FsResult<Gfid> {
        let path = sys::proc_path(dir, name.to_bytes()).ctx(|| "proc path".into())?;
        match sys::lgetxattr(&path, &c(GFID_XATTR)) {
            Ok(v) => {
                let gfid =
                    Gfid::from_slice(&v).ok_or_else(|| FsError::new(libc::EIO, format!("corrupt gfid on {name:?}")))?;
                if st.st_mode & libc::S_IFMT == libc::S_IFREG {
                    // A failed repair leaves things as they were: the lookup
                    // still answers.
                    if let Err(e) = self.repair_file_handle(parent, dir, name, &gfid) {
                        tracing::warn!(brick = %self.path.display(), %gfid, error = %e, "could not re-make a file's handle");
                    }
                }
                Ok(gfid)
            }
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {
                // Wait out a creation in progress, then look again.
                let _creating = self.entry_lock(parent, name.to_bytes());
                if let Ok(v) = sys::lgetxattr(&path, &c(GFID_XATTR)) {
                    return Gfid::from_slice(&v)
                        .ok_or_else(|| FsError::new(libc::EIO, format!("corrupt gfid on {name:?}")));
                }
                let gfid = Gfid::random();
                match sys::lsetxattr(&path, &c(GFID_XATTR), &gfid.0, libc::XATTR_CREATE) {
                    Ok(()) => {
                        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
                        self.make_handle(parent, dir, name, &gfid, is_dir)?;
                        tracing::info!(brick = %self.path.display(), ?gfid, name = ?name, "assigned a gfid to an entry made outside the volume");
                        Ok(gfid)
                    }
                    // Someone else assigned it first: read theirs.
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                        let v =
                            sys::lgetxattr(&path, &c(GFID_XATTR)).ctx(|| format!("reading the gfid of {name:?}"))?;
                        Gfid::from_slice(&v).ok_or_else(|| FsError::new(libc::EIO, format!("corrupt gfid on {name:?}")))
                    }
                    Err(e) => Err(e).ctx(|| format!("assigning a gfid to {name:?}")),
                }
            }
            Err(e) => Err(e).ctx(|| format!("reading the gfid of {name:?}")),
        }
    }

    /// A regular file whose name carries its gfid but whose handle link is
    /// missing: its create was cut short (the daemon was killed between
    /// setting the gfid and linking the handle). Every request by gfid
    /// failed (ESTALE) while the name kept lookups and entry heals content,
    /// so no heal could ever reach the copy (the chaos checker found it).
    /// The handle is made again, under the entry lock a create in progress
    /// holds.
    fn repair_file_handle(&self, parent: &Gfid, dir: BorrowedFd<'_>, name: &CString, gfid: &Gfid) -> FsResult<()> {
        let handle = Self::handle_name(gfid);
        let present = || sys::stat_at(self.files.as_fd(), &handle).is_ok();
        if present() {
            return Ok(());
        }
        let _creating = self.entry_lock(parent, name.to_bytes());
        if present() {
            return Ok(());
        }
        self.make_handle(parent, dir, name, gfid, false)?;
        tracing::warn!(brick = %self.path.display(), %gfid, name = ?name, "re-made the handle of a file whose create was cut short");
        Ok(())
    }

    fn make_handle(
        &self,
        parent: &Gfid,
        dir: BorrowedFd<'_>,
        name: &CString,
        gfid: &Gfid,
        is_dir: bool,
    ) -> FsResult<()> {
        let handle = Self::handle_name(gfid);
        if is_dir {
            let text = sys::cstr(&Self::dir_handle_text(parent, name.to_bytes())).ctx(|| "handle".into())?;
            match sys::symlink_at(&text, self.dirs.as_fd(), &handle) {
                // A handle left by a directory removed behind the brick's
                // back (a heal re-creating it, say) is replaced; one that
                // still leads to a live directory means the gfid is taken.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    self.forget_dir(gfid);
                    match self.dir_fd(gfid) {
                        Err(stale) if stale.errno == libc::ESTALE => {
                            self.rewrite_dir_handle(gfid, parent, name.to_bytes())
                        }
                        // The old handle's text names this very place.
                        Ok(fd) if same_inode(&sys::fstat(fd.as_fd()), &sys::stat_at(dir, name)) => Ok(()),
                        _ => Err(FsError::new(libc::EEXIST, format!("gfid {gfid} is already in use"))),
                    }
                }
                r => r.ctx(|| format!("creating the handle of {gfid}")),
            }
        } else {
            match sys::link_at(dir, name, self.files.as_fd(), &handle) {
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    // Likewise for a file handle that is its inode's only
                    // name — unless the file is open: unlinked while open
                    // (an entry heal removing a stale name, say), its
                    // handle is what the open file is reached by. Replacing
                    // it gave one gfid two inodes, and writes through the
                    // open handle went where no read or heal looked (a
                    // soak's stale read, 2026-12-06). The caller then links
                    // the name to the open file instead.
                    let orphan = sys::stat_at(self.files.as_fd(), &handle).is_ok_and(|st| st.st_nlink == 1);
                    if !orphan || self.is_open(gfid) {
                        return Err(FsError::new(libc::EEXIST, format!("gfid {gfid} is already in use")));
                    }
                    sys::unlink_at(self.files.as_fd(), &handle, false).ctx(|| "dropping an orphan handle".into())?;
                    sys::link_at(dir, name, self.files.as_fd(), &handle)
                        .ctx(|| format!("creating the handle of {gfid}"))
                }
                r => r.ctx(|| format!("creating the handle of {gfid}")),
            }
        }
    }

    /// Remembers where a file was last seen by name, so reports (`volume
    /// top`) can show a path for a gfid. In memory only: an xattr would eat
    /// into the single block ext4 gives all of a file's xattrs, which users'
    /// own large xattrs need.
    fn note_name(&self, gfid: Gfid, parent: &Gfid, name: &[u8]) {
        let mut names = self.names.lock().expect("names poisoned");
        if names.len() >= super::NAMES_LIMIT && !names.contains_key(&gfid) {
            names.clear();
        }
        names.insert(gfid, (*parent, name.to_vec()));
    }

    /// Points a directory's handle at its new place, atomically.
    fn rewrite_dir_handle(&self, gfid: &Gfid, parent: &Gfid, name: &[u8]) -> FsResult<()> {
        let handle = Self::handle_name(gfid);
        let tmp = c(&format!("{}.tmp{}", handle.to_str().expect("hex"), std::process::id()));
        let text = sys::cstr(&Self::dir_handle_text(parent, name)).ctx(|| "handle".into())?;
        let _ = sys::unlink_at(self.dirs.as_fd(), &tmp, false);
        sys::symlink_at(&text, self.dirs.as_fd(), &tmp).ctx(|| format!("rewriting the handle of {gfid}"))?;
        sys::rename_at(self.dirs.as_fd(), &tmp, self.dirs.as_fd(), &handle, 0)
            .ctx(|| format!("rewriting the handle of {gfid}"))
    }

    /// Drops a non-directory's handle once no user-visible name is left —
    /// unless the file is still open: then the handle keeps it reachable by
    /// gfid (fstat, fchmod, fsetxattr on an unlinked file) until the last
    /// close, as POSIX requires.
    pub(super) fn release_file_handle(&self, gfid: &Gfid) {
        if self.is_open(gfid) {
            return;
        }
        let handle = Self::handle_name(gfid);
        if let Ok(st) = sys::stat_at(self.files.as_fd(), &handle) {
            if st.st_nlink <= 1 {
                if let Err(e) = sys::unlink_at(self.files.as_fd(), &handle, false) {
                    tracing::warn!(%gfid, error = %e, "could not drop a file handle");
                }
            }
        }
    }

    /// Drops the handle of a file that no name leads to and nobody has
    /// open: one unlinked while open when this daemon was killed (the
    /// handle outlives the close that never came). Its heal index entry
    /// would otherwise wait for ever for replicas that rightly lack it.
    /// True if it was such an orphan and is gone.
    pub fn drop_if_orphan(&self, gfid: &Gfid) -> bool {
        let handle = Self::handle_name(gfid);
        let _guard = self.link_lock.lock().expect("link lock poisoned");
        if self.is_open(gfid) {
            return false;
        }
        let orphan = sys::stat_at(self.files.as_fd(), &handle).is_ok_and(|st| st.st_nlink == 1);
        if !orphan {
            return false;
        }
        match sys::unlink_at(self.files.as_fd(), &handle, false) {
            Ok(()) => {
                tracing::info!(%gfid, "dropped the handle of a file no name leads to (unlinked while open before a restart)");
                true
            }
            Err(e) => {
                tracing::warn!(%gfid, error = %e, "could not drop an orphan file handle");
                false
            }
        }
    }

    /// The last name of a file that migrated to another subvolume went:
    /// its handle goes too, even while the file is open here, so nothing
    /// reaches this copy by gfid again — not even a client reopening its
    /// handles after this daemon restarts (the "moved" mark lives in
    /// memory), which would otherwise write to a copy no name leads to.
    pub fn drop_moved_handle(&self, gfid: &Gfid) {
        let handle = Self::handle_name(gfid);
        let _guard = self.link_lock.lock().expect("link lock poisoned");
        if let Ok(st) = sys::stat_at(self.files.as_fd(), &handle) {
            if st.st_nlink <= 1 {
                if let Err(e) = sys::unlink_at(self.files.as_fd(), &handle, false) {
                    tracing::warn!(%gfid, error = %e, "could not drop a migrated file's handle");
                }
            }
        }
    }

    fn drop_dir_handle(&self, gfid: &Gfid) {
        self.forget_dir(gfid);
        if let Err(e) = sys::unlink_at(self.dirs.as_fd(), &Self::handle_name(gfid), false) {
            tracing::warn!(%gfid, error = %e, "could not drop a directory handle");
        }
    }

    pub fn lookup(&self, parent: &Gfid, name: &[u8]) -> FsResult<Attr> {
        if parent.is_root() && name == PRIVATE_DIR {
            return Err(FsError::new(libc::ENOENT, "hidden"));
        }
        let cname = self.entry_name(parent, name)?;
        let dir = self.dir_fd(parent)?;
        let st = sys::stat_at(dir.as_fd(), &cname).ctx(|| format!("lookup {:?}", String::from_utf8_lossy(name)))?;
        let gfid = self.entry_gfid(parent, dir.as_fd(), &cname, &st)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            self.note_name(gfid, parent, name);
        }
        self.entry_attr(gfid, dir.as_fd(), &cname, &st)
    }

    /// Attributes of an entry, recognising distribute link files.
    fn entry_attr(&self, gfid: Gfid, dir: BorrowedFd<'_>, name: &CString, st: &libc::stat) -> FsResult<Attr> {
        let mut attr = self.attr_from_stat(gfid, st);
        if super::looks_like_link(st) {
            attr.linkto = super::read_linkto(&sys::proc_path(dir, name.to_bytes()).ctx(|| "proc path".into())?);
        }
        Ok(attr)
    }

    /// Creates a distribute link file for `gfid` pointing at `target`,
    /// atomically: it is made unnamed (O_TMPFILE), given its gfid and target,
    /// and only then linked in, so no reader ever sees a half-made one.
    pub fn make_link(&self, parent: &Gfid, name: &[u8], gfid: &Gfid, target: &uuid::Uuid) -> FsResult<Attr> {
        // Another name of this file already stands here (the link file of
        // another hard link, or the data itself): the new name joins that
        // inode, so all of a file's names on a brick are one inode — the
        // one its gfid handle reaches (gluster's posix links to an existing
        // gfid handle likewise). Else rebalance would fill one of two
        // inodes and leave the other name a link file.
        if let Ok(Node::File(_)) = self.resolve(gfid) {
            self.link(gfid, parent, name)?;
            let attr = self.lookup(parent, name)?;
            if attr.linkto.is_some_and(|t| t != *target) {
                self.set_linkto(gfid, Some(target))?;
                return self.lookup(parent, name);
            }
            return Ok(attr);
        }
        let cname = self.entry_name(parent, name)?;
        let dir = self.dir_fd(parent)?;
        let fd = sys::open_beneath(dir.as_fd(), c".", libc::O_TMPFILE | libc::O_WRONLY, libc::S_ISVTX)
            .ctx(|| "creating a link file".into())?;
        sys::fsetxattr(fd.as_fd(), &c(GFID_XATTR), &gfid.0, libc::XATTR_CREATE).ctx(|| "setting the gfid".into())?;
        sys::fsetxattr(fd.as_fd(), &c(super::LINKTO_XATTR), target.as_bytes(), 0)
            .ctx(|| "setting the link target".into())?;
        // O_TMPFILE applies the umask: set the exact mode that marks a link.
        sys::chmod_fd(fd.as_fd(), libc::S_ISVTX).ctx(|| "chmod link file".into())?;
        let proc = sys::proc_path(fd.as_fd(), b"").ctx(|| "proc path".into())?;
        let proc =
            sys::cstr(proc.to_bytes().strip_suffix(b"/").unwrap_or(proc.to_bytes())).ctx(|| "proc path".into())?;
        let _guard = self.link_lock.lock().expect("link lock poisoned");
        sys::link_follow(&proc, dir.as_fd(), &cname)
            .ctx(|| format!("linking in {:?}", String::from_utf8_lossy(name)))?;
        let st = sys::stat_at(dir.as_fd(), &cname).ctx(|| "stat link file".into())?;
        // The handle reaches the link file on this brick; a data file that
        // arrives later (rebalance) replaces it.
        if let Err(e) = self.make_handle(parent, dir.as_fd(), &cname, gfid, false) {
            if e.errno != libc::EEXIST {
                let _ = sys::unlink_at(dir.as_fd(), &cname, false);
                return Err(e);
            }
        }
        self.entry_attr(*gfid, dir.as_fd(), &cname, &st)
    }

    /// A directory's layout entry on this brick.
    pub fn layout_get(&self, gfid: &Gfid) -> FsResult<Vec<u8>> {
        let dir = self.dir_fd(gfid)?;
        sys::fgetxattr(dir.as_fd(), &c(super::LAYOUT_XATTR)).ctx(|| format!("layout of {gfid}"))
    }

    pub fn layout_set(&self, gfid: &Gfid, entry: &[u8]) -> FsResult<()> {
        if cairn_common::layout::LayoutEntry::decode(entry).is_none() {
            return Err(FsError::new(libc::EINVAL, "malformed layout entry"));
        }
        let dir = self.dir_fd(gfid)?;
        sys::fsetxattr(dir.as_fd(), &c(super::LAYOUT_XATTR), entry, 0).ctx(|| format!("setting the layout of {gfid}"))
    }

    /// The owner of a new inode: the caller, but the group of a setgid parent.
    fn new_owner(&self, dir: BorrowedFd<'_>, creds: &Creds) -> FsResult<(u32, u32, bool)> {
        let pst = sys::fstat(dir).ctx(|| "stat parent".into())?;
        let setgid = pst.st_mode & libc::S_ISGID != 0;
        Ok((creds.uid, if setgid { pst.st_gid } else { creds.gid }, setgid))
    }

    /// Makes a directory, device, fifo, socket, regular file or symlink.
    #[allow(clippy::too_many_arguments)]
    pub fn make_entry(
        &self,
        parent: &Gfid,
        name: &[u8],
        gfid: &Gfid,
        kind: NewKind<'_>,
        mode: u32,
        umask: u32,
        creds: &Creds,
    ) -> FsResult<Attr> {
        let cname = self.entry_name(parent, name)?;
        if gfid.is_root() {
            return Err(FsError::new(libc::EINVAL, "the root gfid cannot be reused"));
        }
        let dir = self.dir_fd(parent)?;
        let (uid, gid, setgid_parent) = self.new_owner(dir.as_fd(), creds)?;
        let is_dir = matches!(kind, NewKind::Dir);
        // A directory made in a setgid directory is setgid too.
        let perm = mode & 0o7777 & !umask | if is_dir && setgid_parent { libc::S_ISGID } else { 0 };
        let what = || format!("create {:?}", String::from_utf8_lossy(name));
        let _creating = self.entry_lock(parent, name);
        match kind {
            NewKind::Dir => sys::mkdir_at(dir.as_fd(), &cname, perm).ctx(what)?,
            NewKind::Special(rdev) => {
                let typ = mode & libc::S_IFMT;
                let typ = if typ == 0 { libc::S_IFREG } else { typ };
                if ![
                    libc::S_IFREG,
                    libc::S_IFIFO,
                    libc::S_IFSOCK,
                    libc::S_IFCHR,
                    libc::S_IFBLK,
                ]
                .contains(&typ)
                {
                    return Err(FsError::new(libc::EINVAL, "mknod of an unsupported file type"));
                }
                sys::mknod_at(dir.as_fd(), &cname, typ | perm, rdev).ctx(what)?
            }
            NewKind::Symlink(target) => {
                if target.is_empty() || target.len() >= libc::PATH_MAX as usize {
                    return Err(FsError::new(libc::ENAMETOOLONG, "symlink target length"));
                }
                let t = sys::cstr(target).ctx(|| "symlink target".into())?;
                sys::symlink_at(&t, dir.as_fd(), &cname).ctx(what)?
            }
        }
        match self.finish_entry(parent, dir.as_fd(), &cname, gfid, is_dir, uid, gid, perm) {
            Ok(attr) => Ok(attr),
            Err(e) => {
                let _ = sys::unlink_at(dir.as_fd(), &cname, is_dir);
                Err(e)
            }
        }
    }

    /// The steps after an entry exists: its gfid, owner and handle.
    #[allow(clippy::too_many_arguments)]
    fn finish_entry(
        &self,
        parent: &Gfid,
        dir: BorrowedFd<'_>,
        cname: &CString,
        gfid: &Gfid,
        is_dir: bool,
        uid: u32,
        gid: u32,
        perm: u32,
    ) -> FsResult<Attr> {
        let path = sys::proc_path(dir, cname.to_bytes()).ctx(|| "proc path".into())?;
        sys::lsetxattr(&path, &c(GFID_XATTR), &gfid.0, libc::XATTR_CREATE).ctx(|| "setting the gfid".into())?;
        sys::chown_at(dir, cname, uid, gid).ctx(|| "setting the owner".into())?;
        let st = sys::stat_at(dir, cname).ctx(|| "stat new entry".into())?;
        // The mode is exactly what the client asked (its umask already
        // applied): the daemon's own umask stripped bits at creation, and
        // chown clears set-id bits on some file systems.
        if st.st_mode & libc::S_IFMT != libc::S_IFLNK && st.st_mode & 0o7777 != perm {
            sys::chmod_at(dir, cname, perm).ctx(|| "setting the mode asked for".into())?;
        }
        if !is_dir {
            self.note_name(*gfid, parent, cname.to_bytes());
        }
        self.make_handle(parent, dir, cname, gfid, is_dir).map_err(|e| {
            if e.errno == libc::EEXIST {
                FsError::new(libc::EEXIST, format!("gfid {gfid} is already in use"))
            } else {
                e
            }
        })?;
        let st = sys::stat_at(dir, cname).ctx(|| "stat new entry".into())?;
        Ok(self.attr_from_stat(*gfid, &st))
    }

    /// Creates and opens a regular file. Without O_EXCL an existing file is
    /// opened instead (another client may have made it since our lookup).
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        &self,
        parent: &Gfid,
        name: &[u8],
        gfid: &Gfid,
        mode: u32,
        umask: u32,
        flags: i32,
        creds: &Creds,
    ) -> FsResult<(Attr, OwnedFd)> {
        let cname = self.entry_name(parent, name)?;
        let dir = self.dir_fd(parent)?;
        let (uid, gid, _) = self.new_owner(dir.as_fd(), creds)?;
        let perm = mode & 0o7777 & !umask;
        let open_flags = sanitize_open_flags(flags);
        {
            let _creating = self.entry_lock(parent, name);
            match sys::open_beneath(dir.as_fd(), &cname, open_flags | libc::O_CREAT | libc::O_EXCL, perm) {
                Ok(fd) => {
                    return match self.finish_entry(parent, dir.as_fd(), &cname, gfid, false, uid, gid, perm) {
                        Ok(attr) => Ok((attr, fd)),
                        Err(e) => {
                            let _ = sys::unlink_at(dir.as_fd(), &cname, false);
                            Err(e)
                        }
                    };
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) && flags & libc::O_EXCL == 0 => {}
                Err(e) => return Err(e).ctx(|| format!("create {:?}", String::from_utf8_lossy(name))),
            }
        }
        // It exists and the caller did not ask for O_EXCL: open it (outside
        // the entry lock, which the lookup may need).
        let fd = sys::open_regular_beneath(dir.as_fd(), &cname, open_flags).ctx(|| "open existing".into())?;
        let attr = self.lookup(parent, name)?;
        Ok((attr, fd))
    }

    pub fn unlink(&self, parent: &Gfid, name: &[u8]) -> FsResult<()> {
        let cname = self.entry_name(parent, name)?;
        let dir = self.dir_fd(parent)?;
        let st = sys::stat_at(dir.as_fd(), &cname).ctx(|| "unlink".into())?;
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            return Err(FsError::new(libc::EISDIR, "unlink of a directory"));
        }
        let gfid = self.entry_gfid(parent, dir.as_fd(), &cname, &st)?;
        let _guard = self.link_lock.lock().expect("link lock poisoned");
        sys::unlink_at(dir.as_fd(), &cname, false).ctx(|| "unlink".into())?;
        self.release_file_handle(&gfid);
        Ok(())
    }

    pub fn rmdir(&self, parent: &Gfid, name: &[u8]) -> FsResult<()> {
        let cname = self.entry_name(parent, name)?;
        let dir = self.dir_fd(parent)?;
        let st = sys::stat_at(dir.as_fd(), &cname).ctx(|| "rmdir".into())?;
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(FsError::new(libc::ENOTDIR, "rmdir of a non-directory"));
        }
        let gfid = self.entry_gfid(parent, dir.as_fd(), &cname, &st)?;
        sys::unlink_at(dir.as_fd(), &cname, true).ctx(|| "rmdir".into())?;
        self.drop_dir_handle(&gfid);
        Ok(())
    }

    /// The gfid and type of an entry, or None if absent.
    fn probe(&self, parent: &Gfid, dir: BorrowedFd<'_>, name: &CString) -> FsResult<Option<(Gfid, bool)>> {
        match sys::stat_at(dir, name) {
            Ok(st) => {
                let gfid = self.entry_gfid(parent, dir, name, &st)?;
                Ok(Some((gfid, st.st_mode & libc::S_IFMT == libc::S_IFDIR)))
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e).ctx(|| "rename".into()),
        }
    }

    pub fn rename(&self, parent: &Gfid, name: &[u8], new_parent: &Gfid, new_name: &[u8], flags: u32) -> FsResult<()> {
        const NOREPLACE: u32 = 1;
        const EXCHANGE: u32 = 2;
        if flags & !(NOREPLACE | EXCHANGE) != 0 || flags == NOREPLACE | EXCHANGE {
            return Err(FsError::new(libc::EINVAL, "unsupported rename flags"));
        }
        let cname = self.entry_name(parent, name)?;
        let cnew = self.entry_name(new_parent, new_name)?;
        let dir = self.dir_fd(parent)?;
        let new_dir = self.dir_fd(new_parent)?;
        let src = self
            .probe(parent, dir.as_fd(), &cname)?
            .ok_or_else(|| FsError::new(libc::ENOENT, "rename source"))?;
        let _guard = self.link_lock.lock().expect("link lock poisoned");
        let dst = self.probe(new_parent, new_dir.as_fd(), &cnew)?;
        if dst.map(|d| d.0) == Some(src.0) && flags & EXCHANGE == 0 {
            if parent == new_parent && cname == cnew {
                return Ok(());
            }
            // Two names of one inode. The kernel never sends such a rename
            // (POSIX makes it a no-op, and the VFS answers it itself), so
            // the client's view has two different files here and this
            // replica holds a stale extra link a heal made (the 1500 s
            // soak: an entry heal linked the file at its new name while
            // its old name's heal had not run yet). A no-op would leave
            // the old name on this replica alone while the others moved
            // it; removing it gives what the move gives everywhere else.
            sys::unlink_at(dir.as_fd(), &cname, false).ctx(|| "rename onto another name of the same file".into())?;
            self.note_name(src.0, new_parent, new_name);
            return Ok(());
        }
        sys::rename_at(dir.as_fd(), &cname, new_dir.as_fd(), &cnew, flags).ctx(|| "rename".into())?;
        if src.1 {
            self.rewrite_dir_handle(&src.0, new_parent, new_name)?;
        } else {
            self.note_name(src.0, new_parent, new_name);
        }
        match dst {
            Some((g, true)) if flags & EXCHANGE != 0 => self.rewrite_dir_handle(&g, parent, name)?,
            Some((g, true)) => self.drop_dir_handle(&g),
            Some((g, false)) if flags & EXCHANGE == 0 => self.release_file_handle(&g),
            _ => {}
        }
        Ok(())
    }

    pub fn link(&self, gfid: &Gfid, new_parent: &Gfid, new_name: &[u8]) -> FsResult<Attr> {
        let cnew = self.entry_name(new_parent, new_name)?;
        let handle = match self.resolve(gfid)? {
            Node::Dir(_) => return Err(FsError::new(libc::EPERM, "hard link to a directory")),
            Node::File(h) => h,
        };
        let new_dir = self.dir_fd(new_parent)?;
        let _guard = self.link_lock.lock().expect("link lock poisoned");
        sys::link_at(self.files.as_fd(), &handle, new_dir.as_fd(), &cnew).ctx(|| "link".into())?;
        let st = sys::stat_at(new_dir.as_fd(), &cnew).ctx(|| "stat link".into())?;
        Ok(self.attr_from_stat(*gfid, &st))
    }

    /// Lists a directory from `cookie` (0: the start). Cookies derive from
    /// the brick file system's own directory offsets, stable across calls
    /// and while entries are added; see [`super::cookies`].
    pub fn readdir(&self, gfid: &Gfid, cookie: u64, plus: bool, max: usize) -> FsResult<(Vec<DirEntry>, bool)> {
        let dir = self.dir_fd(gfid)?;
        let mut stream =
            rustix::fs::Dir::read_from(dir.as_fd()).map_err(|e| FsError::new(e.raw_os_error(), "opendir"))?;
        if cookie > super::cookies::MAX {
            return Err(FsError::new(libc::EINVAL, "directory cookie out of range"));
        }
        if cookie != 0 {
            let pos = self.cookies.seek_position(cookie);
            stream
                .seek(pos as i64)
                .map_err(|e| FsError::new(e.raw_os_error(), "seekdir"))?;
        }
        let mut out = Vec::new();
        let max = max.clamp(1, 4096);
        // Keep each reply well inside the wire's header limit.
        let mut budget = cairn_common::proto::MAX_HEADER_LEN / 2;
        while out.len() < max {
            if budget < 512 {
                return Ok((out, false));
            }
            let Some(entry) = stream.read() else {
                return Ok((out, true));
            };
            let entry = entry.map_err(|e| FsError::new(e.raw_os_error(), "readdir"))?;
            let next = self.cookies.encode(entry.offset() as u64)?;
            // After a seek to a shortened cookie, entries already returned
            // come round again: they resume at or before the cookie.
            if cookie != 0 && next <= cookie {
                continue;
            }
            let name = entry.file_name().to_bytes();
            if gfid.is_root() && name == PRIVATE_DIR {
                continue;
            }
            if name == b"." || name == b".." {
                out.push(DirEntry {
                    cookie: next,
                    name: name.to_vec(),
                    gfid: *gfid,
                    kind: libc::S_IFDIR,
                    attr: None,
                    linkto: None,
                });
                continue;
            }
            budget = budget.saturating_sub(name.len() + 160);
            let cname = CString::from(entry.file_name());
            // An entry removed since getdents saw it is simply skipped.
            let Ok(st) = sys::stat_at(dir.as_fd(), &cname) else {
                continue;
            };
            let Ok(child) = self.entry_gfid(gfid, dir.as_fd(), &cname, &st) else {
                continue;
            };
            let Ok(attr) = self.entry_attr(child, dir.as_fd(), &cname, &st) else {
                continue;
            };
            out.push(DirEntry {
                cookie: next,
                name: name.to_vec(),
                gfid: child,
                kind: st.st_mode & libc::S_IFMT,
                linkto: attr.linkto,
                attr: plus.then_some(attr),
            });
        }
        Ok((out, false))
    }

    pub fn dir_for_sync(&self, gfid: &Gfid) -> FsResult<Arc<OwnedFd>> {
        self.dir_fd(gfid)
    }
}

fn same_inode(a: &std::io::Result<libc::stat>, b: &std::io::Result<libc::stat>) -> bool {
    matches!((a, b), (Ok(x), Ok(y)) if x.st_dev == y.st_dev && x.st_ino == y.st_ino)
}

/// Open flags a client may pass through: access mode and the flags that
/// change I/O semantics. Creation, following and terminal flags are ours.
/// O_DIRECT stays on the client side: the kernel already bypasses the
/// mount's page cache, and the brick writes from network buffers that
/// O_DIRECT's alignment rules would refuse.
pub fn sanitize_open_flags(flags: i32) -> i32 {
    let keep = libc::O_ACCMODE | libc::O_APPEND | libc::O_TRUNC | libc::O_SYNC | libc::O_DSYNC | libc::O_NOATIME;
    (flags & keep) | libc::O_NONBLOCK
}
