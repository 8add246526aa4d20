//! Entry operations under distribute: finding a name, creating it on its
//! hashed subvolume, and keeping link files right through unlink, rename
//! and link.

use super::{Distribute, Errno, Place};
use crate::layer::FopResult;
use bytes::Bytes;
use cairn_common::proto::{Attr, Fop, Reply};
use cairn_common::Gfid;
use std::sync::atomic::Ordering;

fn entry_of(r: &FopResult) -> Option<Attr> {
    match r {
        Ok((Reply::Entry(a) | Reply::Attr(a), _)) => Some(*a),
        _ => None,
    }
}

fn reply_entry(a: Attr) -> FopResult {
    Ok((Reply::Entry(a), Bytes::new()))
}

/// Where a name resolved to.
#[derive(Clone, Copy)]
pub(super) struct Found {
    attr: Attr,
    /// Subvolume holding the data (files) — for directories, the hashed one.
    data: usize,
    /// The hashed subvolume, where a link file stands if `data` differs.
    hashed: usize,
    /// A link file for it stands on `hashed`.
    linked: bool,
}

impl Distribute {
    async fn hashed_of(&self, parent: Gfid, name: &[u8]) -> Result<usize, Errno> {
        let layout = self.layout_of(parent).await?;
        match layout.hashed(name) {
            Some(i) => Ok(i),
            None => {
                // A hole: refresh once (a repair may have run elsewhere).
                self.layouts.drop_dir(&parent);
                self.read_layout(parent)
                    .await?
                    .hashed(name)
                    .ok_or(Errno(libc::ENOTCONN))
            }
        }
    }

    /// Resolves `name` in `parent`: one round trip to the hashed subvolume
    /// in the common case, a link file's target when it points elsewhere,
    /// and every subvolume only when the layout cannot vouch for a miss.
    async fn find(&self, parent: Gfid, name: &[u8]) -> Result<Found, Errno> {
        let layout = self.layout_of(parent).await?;
        let hashed = match layout.hashed(name) {
            Some(h) => h,
            None => return self.find_everywhere(parent, name, None).await,
        };
        let op = Fop::Lookup {
            parent,
            name: name.to_vec(),
        };
        match self.on(hashed, op).await {
            Ok((Reply::Entry(a), _)) if a.is_dir() => Ok(Found {
                attr: a,
                data: hashed,
                hashed,
                linked: false,
            }),
            Ok((Reply::Entry(a), _)) => match a.linkto {
                None => Ok(Found {
                    attr: a,
                    data: hashed,
                    hashed,
                    linked: false,
                }),
                Some(target) => {
                    let Some(t) = self.child_by_id(&target) else {
                        tracing::warn!(name = %String::from_utf8_lossy(name), %target, "link file to an unknown subvolume");
                        return self.find_everywhere(parent, name, Some(hashed)).await;
                    };
                    match entry_of(
                        &self
                            .on(
                                t,
                                Fop::Lookup {
                                    parent,
                                    name: name.to_vec(),
                                },
                            )
                            .await,
                    ) {
                        Some(d) if d.linkto.is_none() && !d.is_dir() => Ok(Found {
                            attr: d,
                            data: t,
                            hashed,
                            linked: true,
                        }),
                        // A stale link: the file moved or went.
                        _ => self.find_everywhere(parent, name, Some(hashed)).await,
                    }
                }
            },
            Ok(_) => Err(Errno(libc::EIO)),
            Err(Errno(libc::ENOENT)) if layout.authoritative && self.lookup_optimize.load(Ordering::Relaxed) => {
                Err(Errno(libc::ENOENT))
            }
            Err(Errno(libc::ENOENT)) => self.find_everywhere(parent, name, Some(hashed)).await,
            Err(e) => Err(e),
        }
    }

    /// Asks every subvolume for `name`; a file found off its hashed
    /// subvolume gets a link file there, so the next lookup is direct.
    async fn find_everywhere(&self, parent: Gfid, name: &[u8], hashed: Option<usize>) -> Result<Found, Errno> {
        let results = self
            .everywhere(&Fop::Lookup {
                parent,
                name: name.to_vec(),
            })
            .await;
        let mut dir = None;
        let mut file = None;
        for (i, r) in results.iter().enumerate() {
            if let Some(a) = entry_of(r) {
                if a.is_dir() {
                    dir.get_or_insert((i, a));
                } else if a.linkto.is_none() {
                    file.get_or_insert((i, a));
                }
            }
        }
        if let Some((i, a)) = dir {
            return Ok(Found {
                attr: a,
                data: i,
                hashed: hashed.unwrap_or(i),
                linked: false,
            });
        }
        let Some((data, attr)) = file else {
            return Err(Errno(libc::ENOENT));
        };
        let Some(h) = hashed else {
            return Ok(Found {
                attr,
                data,
                hashed: data,
                linked: false,
            });
        };
        if h == data {
            return Ok(Found {
                attr,
                data,
                hashed: h,
                linked: false,
            });
        }
        // Replace a stale link (if any) with one that points right.
        if entry_of(&results[h]).is_some_and(|a| a.linkto.is_some()) {
            let _ = self.unlink_on(h, parent, name).await;
        }
        let linked = self.make_link(h, data, parent, name, attr.gfid).await.is_ok();
        Ok(Found {
            attr,
            data,
            hashed: h,
            linked,
        })
    }

    /// Removes `name` in `parent` on one subvolume.
    async fn unlink_on(&self, idx: usize, parent: Gfid, name: &[u8]) -> FopResult {
        self.on(
            idx,
            Fop::Unlink {
                parent,
                name: name.to_vec(),
            },
        )
        .await
    }

    async fn make_link(&self, at: usize, data: usize, parent: Gfid, name: &[u8], gfid: Gfid) -> Result<(), Errno> {
        let op = Fop::MakeLink {
            parent,
            name: name.to_vec(),
            gfid,
            target: self.kids().get(data).ok_or(Errno(libc::ESTALE))?.id,
        };
        match self.on(at, op).await {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(name = %String::from_utf8_lossy(name), errno = e.0, "could not make a link file");
                Err(e)
            }
        }
    }

    pub(super) async fn lookup(&self, parent: Gfid, name: &[u8]) -> FopResult {
        let found = self.find(parent, name).await?;
        if found.attr.is_dir() {
            let gfid = found.attr.gfid;
            self.remember(gfid, Place::Dir);
            let attr = self.heal_dir(parent, name, found.attr).await?;
            return reply_entry(attr);
        }
        self.remember(found.attr.gfid, Place::File(found.data));
        self.recent.note(parent, name, found);
        reply_entry(found.attr)
    }

    /// Makes sure a directory exists on every subvolume (a subvolume that
    /// was down at mkdir, or a directory made behind the volume's back) and
    /// returns its merged attributes. Found on no subvolume any more, it
    /// was removed since it was seen: ENOENT, and nothing is made again.
    /// Re-making it regardless brought back a directory another client had
    /// just removed (the chaos checker's rmdir that "succeeded" on an
    /// absent directory). A copy on some subvolume still counts: after
    /// add-brick a name may hash to a subvolume that has no copy yet.
    async fn heal_dir(&self, parent: Gfid, name: &[u8], seen: Attr) -> Result<Attr, Errno> {
        let results = self
            .everywhere(&Fop::Lookup {
                parent,
                name: name.to_vec(),
            })
            .await;
        if results.iter().all(|r| entry_of(r).is_none()) {
            return Err(if results.iter().any(|r| matches!(r, Err(Errno(libc::ENOENT)))) {
                Errno(libc::ENOENT)
            } else {
                Errno(libc::ENOTCONN)
            });
        }
        for (i, r) in results.iter().enumerate() {
            if matches!(r, Err(Errno(libc::ENOENT))) {
                let op = Fop::Mkdir {
                    parent,
                    name: name.to_vec(),
                    gfid: seen.gfid,
                    mode: seen.mode & 0o7777,
                    umask: 0,
                    creds: cairn_common::proto::Creds {
                        uid: seen.uid,
                        gid: seen.gid,
                    },
                };
                match self.on(i, op).await {
                    Ok(_) => {
                        tracing::info!(dir = %seen.gfid, subvolume = i, "re-created a missing directory copy")
                    }
                    Err(e) => {
                        tracing::warn!(dir = %seen.gfid, subvolume = i, errno = e.0, "could not re-create a directory copy")
                    }
                }
                self.layouts.drop_dir(&seen.gfid);
            } else if let Some(a) = entry_of(r) {
                if a.gfid != seen.gfid {
                    // Same name, different directories: no clear source.
                    tracing::error!(name = %String::from_utf8_lossy(name), subvolume = i, "directory gfid mismatch across subvolumes");
                    return Err(Errno(libc::EIO));
                }
            }
        }
        Self::merge_dir(&results).or(Ok(seen))
    }

    /// Creates a file, symlink or special file on the name's hashed
    /// subvolume.
    pub(super) async fn create_file(&self, op: Fop) -> FopResult {
        let (parent, name) = match &op {
            Fop::Create { parent, name, .. } | Fop::Mknod { parent, name, .. } | Fop::Symlink { parent, name, .. } => {
                (*parent, name.clone())
            }
            _ => return Err(Errno(libc::EINVAL)),
        };
        let layout = self.layout_of(parent).await?;
        let h = self.hashed_of(parent, &name).await?;
        if !layout.authoritative {
            // The name may exist elsewhere: creating here would make two.
            match self.find(parent, &name).await {
                Ok(_) if matches!(op, Fop::Create { flags, .. } if flags & libc::O_EXCL == 0) => {}
                Ok(_) => return Err(Errno(libc::EEXIST)),
                Err(Errno(libc::ENOENT)) => {}
                Err(e) => return Err(e),
            }
        }
        let target = self.placement_for_new_file(h).await?;
        let open_flags = match &op {
            Fop::Create { flags, .. } => *flags,
            _ => 0,
        };
        let gfid = match &op {
            Fop::Create { gfid, .. } | Fop::Mknod { gfid, .. } | Fop::Symlink { gfid, .. } => *gfid,
            _ => return Err(Errno(libc::EINVAL)),
        };
        if target != h {
            // The link first: the name then resolves as soon as the data exists,
            // and a concurrent creator of the same name fails on it.
            self.make_link(h, target, parent, &name, gfid).await?;
        }
        let result = self.on(target, op).await;
        if result.is_err() && target != h {
            self.on(
                h,
                Fop::Unlink {
                    parent,
                    name: name.clone(),
                },
            )
            .await
            .ok();
        }
        match result? {
            (Reply::Created { attr, fh }, d) => {
                self.remember(attr.gfid, Place::File(target));
                Ok((
                    Reply::Created {
                        attr,
                        fh: self.new_handle(target, fh, attr.gfid, open_flags)?,
                    },
                    d,
                ))
            }
            (Reply::Entry(a), d) => {
                self.remember(a.gfid, Place::File(target));
                Ok((Reply::Entry(a), d))
            }
            _ => Err(Errno(libc::EIO)),
        }
    }

    /// mkdir: the hashed subvolume first (it decides between racing
    /// creators), then every other one with the same gfid, then the layout.
    pub(super) async fn mkdir(&self, op: Fop) -> FopResult {
        let Fop::Mkdir {
            parent, ref name, gfid, ..
        } = op
        else {
            return Err(Errno(libc::EINVAL));
        };
        let h = self.hashed_of(parent, name).await?;
        let attr = match self.on(h, op.clone()).await? {
            (Reply::Entry(a), _) => a,
            _ => return Err(Errno(libc::EIO)),
        };
        let kids = self.kids();
        let others = kids.iter().enumerate().filter(|(i, _)| *i != h);
        let op = &op;
        let rest = crate::layer::join_all(
            others.map(|(i, c)| async move { (i, c.layer.call(op.clone(), Bytes::new()).await) }),
        )
        .await;
        for (i, r) in rest {
            if let Err(e) = r {
                tracing::warn!(dir = %gfid, subvolume = i, errno = e.0, "mkdir missed a subvolume; lookup will repair it");
            }
        }
        let fresh = self.fresh_layout(&gfid).await?;
        self.store_layout(gfid, fresh, true).await;
        self.remember(gfid, Place::Dir);
        reply_entry(attr)
    }

    pub(super) async fn unlink(&self, parent: Gfid, name: &[u8]) -> FopResult {
        let (found, r) = match self.recent.take(parent, name) {
            Some(found) => match self.unlink_on(found.data, parent, name).await {
                // Gone from where it was just found: resolve it afresh.
                Err(Errno(libc::ENOENT)) => self.unlink_found(parent, name).await?,
                r => (found, r?),
            },
            None => self.unlink_found(parent, name).await?,
        };
        if found.linked {
            if let Err(e) = self.unlink_on(found.hashed, parent, name).await {
                tracing::warn!(name = %String::from_utf8_lossy(name), errno = e.0, "could not remove a link file");
            }
        }
        Ok(r)
    }

    /// Resolves `name`, then removes it where its data is.
    async fn unlink_found(&self, parent: Gfid, name: &[u8]) -> Result<(Found, (Reply, Bytes)), Errno> {
        let found = self.find(parent, name).await?;
        if found.attr.is_dir() {
            return Err(Errno(libc::EISDIR));
        }
        let r = self.unlink_on(found.data, parent, name).await?;
        Ok((found, r))
    }

    pub(super) async fn rmdir(&self, parent: Gfid, name: &[u8]) -> FopResult {
        let found = self.find(parent, name).await?;
        if !found.attr.is_dir() {
            return Err(Errno(libc::ENOTDIR));
        }
        let gfid = found.attr.gfid;
        self.clear_stale_links(gfid).await?;
        // Every other copy first, the hashed one last: the name resolves
        // until the directory is gone everywhere.
        let h = found.hashed;
        for i in (0..self.kids().len()).filter(|&i| i != h) {
            match self
                .on(
                    i,
                    Fop::Rmdir {
                        parent,
                        name: name.to_vec(),
                    },
                )
                .await
            {
                Ok(_) | Err(Errno(libc::ENOENT)) => {}
                Err(e) => {
                    self.heal_dir(parent, name, found.attr).await.ok();
                    return Err(e);
                }
            }
        }
        let r = self
            .on(
                h,
                Fop::Rmdir {
                    parent,
                    name: name.to_vec(),
                },
            )
            .await;
        if r.is_err() {
            self.heal_dir(parent, name, found.attr).await.ok();
        }
        self.layouts.drop_dir(&gfid);
        self.forget(&gfid);
        r
    }

    /// rmdir must see only link files in the copies; those go first. A real
    /// entry anywhere makes the directory not empty.
    async fn clear_stale_links(&self, dir: Gfid) -> Result<(), Errno> {
        for (i, c) in self.kids().iter().enumerate() {
            let op = Fop::Readdir {
                gfid: dir,
                cookie: 0,
                plus: false,
                max_entries: 64,
            };
            let entries = match c.layer.call(op, Bytes::new()).await {
                Ok((Reply::Dir { entries, .. }, _)) => entries,
                Ok(_) => return Err(Errno(libc::EIO)),
                Err(Errno(libc::ESTALE | libc::ENOENT)) => continue,
                Err(e) => return Err(e),
            };
            for e in entries.iter().filter(|e| e.name != b"." && e.name != b"..") {
                if e.linkto.is_none() {
                    return Err(Errno(libc::ENOTEMPTY));
                }
                let _ = self
                    .on(
                        i,
                        Fop::Unlink {
                            parent: dir,
                            name: e.name.clone(),
                        },
                    )
                    .await;
            }
        }
        Ok(())
    }

    pub(super) async fn link(&self, gfid: Gfid, new_parent: Gfid, new_name: &[u8]) -> FopResult {
        let Place::File(data) = self.locate(&gfid).await? else {
            return Err(Errno(libc::EPERM));
        };
        let h = self.hashed_of(new_parent, new_name).await?;
        if h != data {
            // The link file first: the new name resolves the moment it exists.
            if self.find(new_parent, new_name).await.is_ok() {
                return Err(Errno(libc::EEXIST));
            }
            self.make_link(h, data, new_parent, new_name, gfid).await?;
        }
        let r = self
            .on(
                data,
                Fop::Link {
                    gfid,
                    new_parent,
                    new_name: new_name.to_vec(),
                },
            )
            .await;
        if r.is_err() && h != data {
            let _ = self.unlink_on(h, new_parent, new_name).await;
        }
        r
    }

    pub(super) async fn rename(
        &self,
        parent: Gfid,
        name: &[u8],
        new_parent: Gfid,
        new_name: &[u8],
        flags: u32,
    ) -> FopResult {
        const NOREPLACE: u32 = 1;
        const EXCHANGE: u32 = 2;
        let src = self.find(parent, name).await?;
        let dst = match self.find(new_parent, new_name).await {
            Ok(d) => Some(d),
            Err(Errno(libc::ENOENT)) => None,
            Err(e) => return Err(e),
        };
        if flags & NOREPLACE != 0 && dst.is_some() {
            return Err(Errno(libc::EEXIST));
        }
        if flags & EXCHANGE != 0 && dst.is_none() {
            return Err(Errno(libc::ENOENT));
        }
        let op = Fop::Rename {
            parent,
            name: name.to_vec(),
            new_parent,
            new_name: new_name.to_vec(),
            flags,
        };
        if src.attr.is_dir() {
            if let Some(d) = &dst {
                if !d.attr.is_dir() && flags & EXCHANGE == 0 {
                    return Err(Errno(libc::ENOTDIR));
                }
            }
            // Directories are everywhere: rename every copy, subvolume 0
            // first (its answer decides, as for other directory changes).
            return self.dir_change(op).await;
        }
        if let Some(d) = &dst {
            if d.attr.is_dir() && flags & EXCHANGE == 0 {
                return Err(Errno(libc::EISDIR));
            }
            if d.attr.gfid == src.attr.gfid && flags & EXCHANGE == 0 {
                return Ok((Reply::Empty, Bytes::new()));
            }
        }
        if flags & EXCHANGE != 0 {
            return self.exchange(op, &src, dst.as_ref().expect("checked")).await;
        }
        self.rename_file(parent, name, new_parent, new_name, &src, dst.as_ref())
            .await
    }

    /// Renames a file whose data stays on its subvolume S. The new name's
    /// hashed subvolume gets a link to S when it is not S; old links go.
    /// Ordering keeps the file reachable under one of its names throughout.
    async fn rename_file(
        &self,
        parent: Gfid,
        name: &[u8],
        new_parent: Gfid,
        new_name: &[u8],
        src: &Found,
        dst: Option<&Found>,
    ) -> FopResult {
        let s = src.data;
        let h2 = self.hashed_of(new_parent, new_name).await?;
        let rename_on_s = Fop::Rename {
            parent,
            name: name.to_vec(),
            new_parent,
            new_name: new_name.to_vec(),
            flags: 0,
        };
        // Whatever stands at the new name on h2 (data or link) is replaced.
        let dst_data_on_h2 = dst.is_some_and(|d| d.data == h2 && h2 != s);
        if h2 != s && !dst_data_on_h2 {
            if dst.is_some_and(|d| d.linked && d.hashed == h2) {
                self.unlink_on(h2, new_parent, new_name).await.ok();
            }
            self.make_link(h2, s, new_parent, new_name, src.attr.gfid).await?;
        }
        let r = self.on(s, rename_on_s).await;
        if let Err(e) = r {
            if h2 != s && !dst_data_on_h2 {
                self.unlink_on(h2, new_parent, new_name).await.ok();
            }
            return Err(e);
        }
        if dst_data_on_h2 {
            // The old target's data sits on h2: readers see it until the
            // link replaces it.
            self.unlink_on(h2, new_parent, new_name).await.ok();
            self.make_link(h2, s, new_parent, new_name, src.attr.gfid).await.ok();
        }
        if let Some(d) = dst {
            if d.data != s && d.data != h2 {
                // The replaced file's data lived elsewhere.
                self.unlink_on(d.data, new_parent, new_name).await.ok();
            }
            if d.gfid_differs(src) {
                self.forget(&d.attr.gfid);
            }
        }
        if src.linked {
            // The old name's link file goes with the old name.
            self.unlink_on(src.hashed, parent, name).await.ok();
        }
        Ok((Reply::Empty, Bytes::new()))
    }

    /// RENAME_EXCHANGE of two files on one subvolume, or of two directories
    /// (a change to every copy). Exchanging files whose data sit on
    /// different subvolumes would move both; it is refused with EOPNOTSUPP,
    /// which renameat2 callers treat as "not supported here".
    async fn exchange(&self, op: Fop, src: &Found, dst: &Found) -> FopResult {
        if src.attr.is_dir() || dst.attr.is_dir() {
            return self.dir_change(op).await;
        }
        if src.data != dst.data {
            return Err(Errno(libc::EOPNOTSUPP));
        }
        let r = self.on(src.data, op).await?;
        // Link files stay valid (same target subvolume); drop cached places.
        self.forget(&src.attr.gfid);
        self.forget(&dst.attr.gfid);
        Ok(r)
    }
}

impl Found {
    fn gfid_differs(&self, other: &Found) -> bool {
        self.attr.gfid != other.attr.gfid
    }
}
