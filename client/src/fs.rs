//! Filesystem semantics over the volume graph, free of FUSE types so it can
//! be driven directly in tests: inode numbers ↔ gfids with kernel lookup
//! counts, new gfids for new inodes, and typed wrappers over each fop.

use crate::layer::{Errno, FopResult, Subvolume};
use crate::listing_ahead::ListingAhead;
use crate::skip::{AbsentCapabilities, LockHolders, CAPABILITY_XATTR};
use crate::write_behind::WriteBehind;
use bytes::Bytes;
use cairn_common::proto::{Attr, Creds, DirEntry, Fop, LockSpec, Reply, SetAttr, Statfs};
use cairn_common::Gfid;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub type FsResult<T> = Result<T, Errno>;

/// Inodes the kernel knows, with how many lookups it holds on each.
#[derive(Default)]
struct InodeTable {
    map: HashMap<u64, (Gfid, u64)>,
}

pub struct CairnFs {
    top: Arc<dyn Subvolume>,
    inodes: Mutex<InodeTable>,
    lock_holders: LockHolders,
    absent_caps: AbsentCapabilities,
    /// The write-behind layer in `top`, which close(2) must settle.
    write_behind: Option<Arc<WriteBehind>>,
    /// The part of each listing batch the kernel had no room for.
    ahead: ListingAhead,
}

/// A batch of directory entries, and the generation of this client's
/// changes it was fetched under (see [`CairnFs::keep_unlisted`]).
pub struct Listing {
    pub entries: Vec<DirEntry>,
    pub eof: bool,
    generation: u64,
}

fn unexpected(r: &Reply) -> Errno {
    tracing::error!(reply = ?r, "unexpected reply");
    Errno(libc::EIO)
}

impl CairnFs {
    /// `attr_timeout` bounds how long this client trusts what it learned
    /// about an inode's attributes (here: an absent capability xattr).
    pub fn new(top: Arc<dyn Subvolume>, attr_timeout: std::time::Duration) -> CairnFs {
        let mut table = InodeTable::default();
        table.map.insert(1, (Gfid::ROOT, u64::MAX / 2));
        CairnFs {
            top,
            inodes: Mutex::new(table),
            lock_holders: LockHolders::default(),
            absent_caps: AbsentCapabilities::new(attr_timeout),
            write_behind: None,
            ahead: ListingAhead::new(attr_timeout),
        }
    }

    /// Names the write-behind layer inside `top`, so close(2) waits for
    /// the file's writes and reports one that failed.
    pub fn with_write_behind(mut self, wb: Arc<WriteBehind>) -> CairnFs {
        self.write_behind = Some(wb);
        self
    }

    pub fn gfid(&self, ino: u64) -> FsResult<Gfid> {
        if ino == 1 {
            return Ok(Gfid::ROOT);
        }
        self.inodes
            .lock()
            .expect("inodes poisoned")
            .map
            .get(&ino)
            .map(|e| e.0)
            .ok_or(Errno(libc::ESTALE))
    }

    /// Records that the kernel now holds one more reference to `attr`'s inode.
    pub fn remember(&self, attr: &Attr) -> u64 {
        let ino = attr.gfid.inode_number();
        let mut t = self.inodes.lock().expect("inodes poisoned");
        let entry = t.map.entry(ino).or_insert((attr.gfid, 0));
        if entry.0 != attr.gfid {
            // Two gfids folding to one inode number: astronomically rare;
            // the newer one wins and the older becomes ESTALE.
            tracing::warn!(ino, old = %entry.0, new = %attr.gfid, "inode number collision");
            *entry = (attr.gfid, 0);
        }
        entry.1 += 1;
        ino
    }

    pub fn forget(&self, ino: u64, n: u64) {
        if ino == 1 {
            return;
        }
        let mut t = self.inodes.lock().expect("inodes poisoned");
        if let Some(e) = t.map.get_mut(&ino) {
            e.1 = e.1.saturating_sub(n);
            if e.1 == 0 {
                t.map.remove(&ino);
                self.absent_caps.forget(ino);
            }
        }
    }

    pub fn known_inodes(&self) -> usize {
        self.inodes.lock().expect("inodes poisoned").map.len()
    }

    async fn call(&self, op: Fop) -> FsResult<Reply> {
        Ok(self.call_with(op, Bytes::new()).await?.0)
    }

    /// Every request goes through here, so a change of any kind also
    /// drops what listings kept, before it is sent (a listing fetched
    /// meanwhile is not kept) and once it is answered.
    async fn call_with(&self, op: Fop, payload: Bytes) -> FopResult {
        let changes = !op.only_reads();
        if changes {
            self.ahead.changed();
        }
        let answer = self.top.call(op, payload).await;
        if changes {
            self.ahead.changed();
        }
        answer
    }

    async fn entry(&self, op: Fop) -> FsResult<Attr> {
        match self.call(op).await? {
            Reply::Entry(a) | Reply::Attr(a) => Ok(a),
            r => Err(unexpected(&r)),
        }
    }

    async fn empty(&self, op: Fop) -> FsResult<()> {
        match self.call(op).await? {
            Reply::Empty => Ok(()),
            r => Err(unexpected(&r)),
        }
    }

    pub async fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<Attr> {
        self.entry(Fop::Lookup {
            parent: self.gfid(parent)?,
            name: name.to_vec(),
        })
        .await
    }

    pub async fn getattr(&self, ino: u64) -> FsResult<Attr> {
        self.entry(Fop::GetAttr { gfid: self.gfid(ino)? }).await
    }

    pub async fn setattr(&self, ino: u64, fh: Option<u64>, set: SetAttr) -> FsResult<Attr> {
        self.entry(Fop::SetAttr {
            gfid: self.gfid(ino)?,
            fh,
            set,
        })
        .await
    }

    pub async fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        match self.call(Fop::Readlink { gfid: self.gfid(ino)? }).await? {
            Reply::Link(t) => Ok(t),
            r => Err(unexpected(&r)),
        }
    }

    pub async fn mknod(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
        rdev: u64,
        creds: Creds,
    ) -> FsResult<Attr> {
        let parent = self.gfid(parent)?;
        self.entry(Fop::Mknod {
            parent,
            name: name.to_vec(),
            gfid: Gfid::random(),
            mode,
            umask,
            rdev,
            creds,
        })
        .await
    }

    pub async fn mkdir(&self, parent: u64, name: &[u8], mode: u32, umask: u32, creds: Creds) -> FsResult<Attr> {
        let parent = self.gfid(parent)?;
        self.entry(Fop::Mkdir {
            parent,
            name: name.to_vec(),
            gfid: Gfid::random(),
            mode,
            umask,
            creds,
        })
        .await
    }

    pub async fn symlink(&self, parent: u64, name: &[u8], target: &[u8], creds: Creds) -> FsResult<Attr> {
        let parent = self.gfid(parent)?;
        self.entry(Fop::Symlink {
            parent,
            name: name.to_vec(),
            gfid: Gfid::random(),
            target: target.to_vec(),
            creds,
        })
        .await
    }

    pub async fn unlink(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        self.empty(Fop::Unlink {
            parent: self.gfid(parent)?,
            name: name.to_vec(),
        })
        .await
    }

    pub async fn rmdir(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        self.empty(Fop::Rmdir {
            parent: self.gfid(parent)?,
            name: name.to_vec(),
        })
        .await
    }

    pub async fn rename(&self, parent: u64, name: &[u8], new_parent: u64, new_name: &[u8], flags: u32) -> FsResult<()> {
        let op = Fop::Rename {
            parent: self.gfid(parent)?,
            name: name.to_vec(),
            new_parent: self.gfid(new_parent)?,
            new_name: new_name.to_vec(),
            flags,
        };
        self.empty(op).await
    }

    pub async fn link(&self, ino: u64, new_parent: u64, new_name: &[u8]) -> FsResult<Attr> {
        self.entry(Fop::Link {
            gfid: self.gfid(ino)?,
            new_parent: self.gfid(new_parent)?,
            new_name: new_name.to_vec(),
        })
        .await
    }

    pub async fn open(&self, ino: u64, flags: i32) -> FsResult<u64> {
        match self
            .call(Fop::Open {
                gfid: self.gfid(ino)?,
                flags,
            })
            .await?
        {
            Reply::Opened { fh } => Ok(fh),
            r => Err(unexpected(&r)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn create(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
        flags: i32,
        creds: Creds,
    ) -> FsResult<(Attr, u64)> {
        let op = Fop::Create {
            parent: self.gfid(parent)?,
            name: name.to_vec(),
            gfid: Gfid::random(),
            mode,
            umask,
            flags,
            creds,
        };
        match self.call(op).await? {
            Reply::Created { attr, fh } => {
                // A brand-new file carries no capability.
                self.absent_caps.note_absent(attr.gfid.inode_number());
                Ok((attr, fh))
            }
            r => Err(unexpected(&r)),
        }
    }

    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        match self.call_with(Fop::Read { fh, offset, size }, Bytes::new()).await? {
            (Reply::Data { .. }, data) => Ok(data),
            (r, _) => Err(unexpected(&r)),
        }
    }

    pub async fn write(&self, fh: u64, offset: u64, data: Bytes) -> FsResult<u32> {
        let len = data.len() as u32;
        match self.call_with(Fop::Write { fh, offset, len }, data).await? {
            (Reply::Written { len }, _) => Ok(len),
            (r, _) => Err(unexpected(&r)),
        }
    }

    /// close(2): waits for the file's written-behind writes (reporting one
    /// that failed) and releases the owner's locks on it, if it has any.
    pub async fn flush(&self, ino: u64, fh: u64, lock_owner: u64) -> FsResult<()> {
        let written = match &self.write_behind {
            Some(wb) => wb.settle(fh).await,
            None => Ok(()),
        };
        if self.lock_holders.take_for_flush(ino, lock_owner) {
            self.empty(Fop::Flush { fh, lock_owner }).await?;
        }
        written
    }

    pub async fn release(&self, fh: u64) -> FsResult<()> {
        self.empty(Fop::Release { fh }).await
    }

    pub async fn fsync(&self, fh: u64, datasync: bool) -> FsResult<()> {
        self.empty(Fop::Fsync { fh, datasync }).await
    }

    pub async fn fsyncdir(&self, ino: u64, datasync: bool) -> FsResult<()> {
        self.empty(Fop::Fsyncdir {
            gfid: self.gfid(ino)?,
            datasync,
        })
        .await
    }

    pub async fn readdir(
        &self,
        ino: u64,
        cookie: u64,
        plus: bool,
        max_entries: u32,
    ) -> FsResult<(Vec<DirEntry>, bool)> {
        match self
            .call(Fop::Readdir {
                gfid: self.gfid(ino)?,
                cookie,
                plus,
                max_entries,
            })
            .await?
        {
            Reply::Dir { entries, eof } => Ok((entries, eof)),
            r => Err(unexpected(&r)),
        }
    }

    /// A batch of `ino`'s entries from `cookie` on: what an earlier batch
    /// left over there if it was kept and is still good, else fetched.
    pub async fn list(&self, ino: u64, cookie: u64, plus: bool, max_entries: u32) -> FsResult<Listing> {
        let generation = self.ahead.generation();
        let (entries, eof) = match self.ahead.take(ino, plus, cookie) {
            Some(kept) => kept,
            None => self.readdir(ino, cookie, plus, max_entries).await?,
        };
        Ok(Listing {
            entries,
            eof,
            generation,
        })
    }

    /// The kernel took `listing`'s entries up to index `taken` (exclusive):
    /// the rest is kept for its next readdir, which resumes from the last
    /// one taken.
    pub fn keep_unlisted(&self, ino: u64, plus: bool, mut listing: Listing, taken: usize) {
        if taken == 0 || taken > listing.entries.len() {
            return;
        }
        let rest = listing.entries.split_off(taken);
        let after = listing.entries[taken - 1].cookie;
        self.ahead.keep(ino, plus, after, rest, listing.eof, listing.generation);
    }

    pub async fn statfs(&self) -> FsResult<Statfs> {
        match self.call(Fop::Statfs).await? {
            Reply::Statfs(s) => Ok(s),
            r => Err(unexpected(&r)),
        }
    }

    pub async fn getxattr(&self, ino: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        let capability = name == CAPABILITY_XATTR;
        if capability && self.absent_caps.known_absent(ino) {
            return Err(Errno(libc::ENODATA));
        }
        let result = match self
            .call(Fop::GetXattr {
                gfid: self.gfid(ino)?,
                name: name.to_vec(),
            })
            .await?
        {
            Reply::Xattr(v) => Ok(v),
            r => Err(unexpected(&r)),
        };
        if capability && result == Err(Errno(libc::ENODATA)) {
            self.absent_caps.note_absent(ino);
        }
        result
    }

    pub async fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], flags: i32) -> FsResult<()> {
        if name == CAPABILITY_XATTR {
            self.absent_caps.forget(ino);
        }
        self.empty(Fop::SetXattr {
            gfid: self.gfid(ino)?,
            name: name.to_vec(),
            value: value.to_vec(),
            flags,
        })
        .await
    }

    pub async fn listxattr(&self, ino: u64) -> FsResult<Vec<Vec<u8>>> {
        match self.call(Fop::ListXattr { gfid: self.gfid(ino)? }).await? {
            Reply::XattrNames(v) => Ok(v),
            r => Err(unexpected(&r)),
        }
    }

    pub async fn removexattr(&self, ino: u64, name: &[u8]) -> FsResult<()> {
        if name == CAPABILITY_XATTR {
            self.absent_caps.forget(ino);
        }
        self.empty(Fop::RemoveXattr {
            gfid: self.gfid(ino)?,
            name: name.to_vec(),
        })
        .await
    }

    pub async fn fallocate(&self, fh: u64, mode: i32, offset: u64, len: u64) -> FsResult<()> {
        self.empty(Fop::Fallocate { fh, mode, offset, len }).await
    }

    pub async fn lseek(&self, fh: u64, offset: i64, whence: i32) -> FsResult<u64> {
        match self.call(Fop::Lseek { fh, offset, whence }).await? {
            Reply::Offset(o) => Ok(o),
            r => Err(unexpected(&r)),
        }
    }

    pub async fn getlk(&self, fh: u64, lock: LockSpec) -> FsResult<Option<LockSpec>> {
        match self.call(Fop::GetLk { fh, lock }).await? {
            Reply::Lock(l) => Ok(l),
            r => Err(unexpected(&r)),
        }
    }

    pub async fn setlk(&self, ino: u64, fh: u64, lock: LockSpec, wait: bool) -> FsResult<()> {
        // Noted before asking, so a lock granted as the reply is lost still
        // gets released at close.
        self.lock_holders.note_lock(ino, lock.owner);
        self.empty(Fop::SetLk { fh, lock, wait }).await
    }

    pub async fn copy_file_range(
        &self,
        fh_in: u64,
        offset_in: u64,
        fh_out: u64,
        offset_out: u64,
        len: u64,
    ) -> FsResult<u32> {
        match self
            .call(Fop::CopyFileRange {
                fh_in,
                offset_in,
                fh_out,
                offset_out,
                len,
            })
            .await?
        {
            Reply::Written { len } => Ok(len),
            r => Err(unexpected(&r)),
        }
    }

    /// Permission check for access(2), from the inode's attributes.
    pub async fn access(&self, ino: u64, mask: i32, uid: u32, gid: u32) -> FsResult<()> {
        let attr = self.getattr(ino).await?;
        if mask == libc::F_OK {
            return Ok(());
        }
        let perm = attr.mode;
        let granted = if uid == 0 {
            // root may do anything but execute a file nobody may execute.
            let any_x = perm & 0o111 != 0 || attr.is_dir();
            (mask & libc::X_OK == 0) || any_x
        } else {
            let bits = if uid == attr.uid {
                (perm >> 6) & 7
            } else if gid == attr.gid {
                (perm >> 3) & 7
            } else {
                perm & 7
            } as i32;
            bits & mask == mask
        };
        if granted {
            Ok(())
        } else {
            Err(Errno(libc::EACCES))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::FopFuture;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A root directory of named files that answers readdir from a cookie
    /// and unlink, counting the readdirs that reach it.
    #[derive(Default)]
    struct Dir {
        names: Mutex<Vec<String>>,
        readdirs: AtomicUsize,
    }

    impl Subvolume for Dir {
        fn call(&self, op: Fop, _payload: Bytes) -> FopFuture<'_> {
            Box::pin(async move {
                match op {
                    Fop::Readdir { cookie, .. } => {
                        self.readdirs.fetch_add(1, Ordering::SeqCst);
                        let names = self.names.lock().unwrap();
                        let entries = (cookie as usize..names.len())
                            .map(|i| DirEntry {
                                cookie: i as u64 + 1,
                                name: names[i].clone().into_bytes(),
                                gfid: Gfid([i as u8 + 1; 16]),
                                kind: libc::S_IFREG,
                                attr: None,
                                linkto: None,
                            })
                            .collect();
                        Ok((Reply::Dir { entries, eof: true }, Bytes::new()))
                    }
                    Fop::Unlink { name, .. } => {
                        self.names.lock().unwrap().retain(|n| n.as_bytes() != name);
                        Ok((Reply::Empty, Bytes::new()))
                    }
                    _ => Err(Errno(libc::ENOSYS)),
                }
            })
        }

        fn name(&self) -> String {
            "dir".into()
        }
    }

    fn names(l: &Listing) -> Vec<String> {
        l.entries
            .iter()
            .map(|e| String::from_utf8_lossy(&e.name).into_owned())
            .collect()
    }

    #[tokio::test]
    async fn the_rest_of_a_batch_serves_the_next_readdir_until_this_client_changes_anything() {
        let dir = Arc::new(Dir::default());
        *dir.names.lock().unwrap() = (0..10).map(|i| format!("f{i}")).collect();
        let fs = CairnFs::new(dir.clone(), Duration::from_secs(1));

        let first = fs.list(1, 0, false, 512).await.unwrap();
        assert_eq!(first.entries.len(), 10);
        fs.keep_unlisted(1, false, first, 4);
        let rest = fs.list(1, 4, false, 512).await.unwrap();
        assert_eq!(names(&rest), ["f4", "f5", "f6", "f7", "f8", "f9"]);
        assert!(rest.eof);
        assert_eq!(dir.readdirs.load(Ordering::SeqCst), 1, "served from what was kept");

        // Kept again, then a file is removed: the next batch is fetched
        // and does not show it.
        fs.keep_unlisted(1, false, rest, 2);
        fs.unlink(1, b"f9").await.unwrap();
        let after = fs.list(1, 6, false, 512).await.unwrap();
        assert_eq!(names(&after), ["f6", "f7", "f8"]);
        assert_eq!(dir.readdirs.load(Ordering::SeqCst), 2);
    }
}
