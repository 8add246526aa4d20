//! Rebalance: rewriting directory layouts for the volume's current
//! subvolumes (fix-layout) and moving each file to the subvolume its name
//! hashes to, while applications keep using it.
//!
//! A file moves from subvolume S to D in these steps (gluster's
//! `dht_migrate_file`, with the brick's freeze in place of its mode bits):
//! 1. D gets a link file for it (or keeps the one it has): lookups of the
//!    name keep going to S.
//! 2. The data is copied into that link file, block by block, holes left
//!    as holes; applications keep reading and writing S.
//! 3. S is frozen: writes wait at its bricks, and the freeze is granted once
//!    writes under way are done.
//! 4. The blocks that changed meanwhile are copied (block checksums), the
//!    size, owner, mode, times and user xattrs set, and D's link target
//!    removed: D is now the file (same gfid).
//! 5. S is marked moved: the waiting writes, and every later request on
//!    handles open on S, fail with EREMCHG, and distribute sends them
//!    again to D. Then S's name and any stale link file go.
//!
//! A failure before step 5 thaws S and turns D back into a link file; the
//! file stays where it was, reachable as before.

use super::{Child, Distribute, Errno, Place};
use crate::layer::Subvolume;
use bytes::Bytes;
use cairn_common::layout::LayoutEntry;
use cairn_common::proto::{Attr, DirEntry, Fop, Reply, SetAttr, TimeSet, CHECKSUM_BLOCK, MAX_CHECKSUM_SPAN};
use cairn_common::Gfid;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long a migration waits after its fix-layout before moving files:
/// every mount learns a rebalance started within its spec poll (5 s) and
/// from then on trusts a layout for 2 s, so after this no mount places a
/// new file by a layout from before the fix-layout.
pub const LAYOUT_SETTLE: Duration = Duration::from_secs(9);
/// Largest read or write the copy sends at once.
const COPY_CHUNK: u64 = 1 << 20;
/// Entries asked for per listing page.
const PAGE: u32 = 1024;

/// What a rebalance run counts (shown by `rebalance status`).
#[derive(Default, Debug)]
pub struct Counters {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
    pub scanned: AtomicU64,
    pub failures: AtomicU64,
    pub skipped: AtomicU64,
    pub fixed_dirs: AtomicU64,
    /// Directories found by the fix-layout pass, and those whose files
    /// have been looked at since (for the time-left estimate).
    pub dirs_total: AtomicU64,
    pub dirs_done: AtomicU64,
}

impl Counters {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// Which files this worker moves: those whose data sits on a subvolume
/// it answers for (`owns(source index, gfid)`).
pub type Owner = dyn Fn(usize, &Gfid) -> bool + Send + Sync;

/// What a rebalance run does.
pub struct Plan {
    /// The layout generation the fix-layout writes.
    pub commit: u32,
    /// Move files too (not only fix layouts).
    pub migrate: bool,
    /// Move files even onto a subvolume with less free space than theirs.
    pub force: bool,
    /// Files moved at once (`cluster.rebal-throttle`).
    pub parallel: usize,
    pub owns: Arc<Owner>,
}

/// A name's entries in one directory, by subvolume.
#[derive(Default)]
struct Copies {
    data: Vec<(usize, DirEntry)>,
    links: Vec<(usize, DirEntry)>,
}

/// How one file's move ended.
#[derive(Debug, PartialEq, Eq)]
enum Moved {
    Done(u64),
    Skipped(&'static str),
}

impl Distribute {
    /// Fix-layout of the whole volume, directory by directory from the
    /// root; returns every directory found (the migration pass walks them).
    pub async fn fix_layout_tree(&self, commit: u32, counters: &Counters, stop: &AtomicBool) -> Vec<Gfid> {
        let mut dirs = vec![Gfid::ROOT];
        let mut next = 0;
        while next < dirs.len() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let dir = dirs[next];
            next += 1;
            Counters::add(&counters.dirs_total, 1);
            match self.fix_layout(dir, commit).await {
                Ok(true) => Counters::add(&counters.fixed_dirs, 1),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(%dir, errno = e.0, "could not fix a directory's layout");
                    Counters::add(&counters.failures, 1);
                }
            }
            match self.subdirectories(dir).await {
                Ok(subs) => dirs.extend(subs),
                Err(e) => {
                    tracing::warn!(%dir, errno = e.0, "could not list a directory");
                    Counters::add(&counters.failures, 1);
                }
            }
        }
        dirs
    }

    /// Rewrites one directory's layout as generation `commit` over the
    /// current subvolumes, unless it already is; false if nothing changed.
    pub async fn fix_layout(&self, dir: Gfid, commit: u32) -> Result<bool, Errno> {
        let (found, missing, unreachable) = self.raw_layout(dir).await;
        if unreachable || !missing.is_empty() {
            // gluster skips a directory while a subvolume is down; a copy
            // missing on a new subvolume is made by the parent's listing.
            return Err(Errno(if unreachable { libc::ENOTCONN } else { libc::ESTALE }));
        }
        let old: Vec<LayoutEntry> = found
            .iter()
            .map(|e| e.unwrap_or(LayoutEntry { commit: 0, range: None }))
            .collect();
        let fresh = self.layout_for(&dir, commit, Some(&old)).await?;
        if found.iter().all(Option::is_some) && old == fresh {
            return Ok(false);
        }
        self.store_layout(dir, fresh, commit == self.commit()).await;
        Ok(true)
    }

    /// The subdirectories of `dir`, each made on every subvolume that
    /// lacks it (a subvolume added since it was made).
    async fn subdirectories(&self, dir: Gfid) -> Result<Vec<Gfid>, Errno> {
        let mut subs = Vec::new();
        for e in self.list_on(0, dir).await? {
            if e.kind == libc::S_IFDIR {
                // The lookup makes missing copies (and heals the layout).
                match self.lookup(dir, &e.name).await {
                    Ok(_) => subs.push(e.gfid),
                    Err(err) => {
                        tracing::warn!(%dir, name = %String::from_utf8_lossy(&e.name), errno = err.0, "could not look up a directory");
                    }
                }
            }
        }
        Ok(subs)
    }

    /// Every entry of `dir` on one subvolume (all pages).
    async fn list_on(&self, idx: usize, dir: Gfid) -> Result<Vec<DirEntry>, Errno> {
        let mut out = Vec::new();
        let mut cookie = 0;
        loop {
            let op = Fop::Readdir {
                gfid: dir,
                cookie,
                plus: true,
                max_entries: PAGE,
            };
            let (entries, eof) = match self.on(idx, op).await? {
                (Reply::Dir { entries, eof }, _) => (entries, eof),
                _ => return Err(Errno(libc::EIO)),
            };
            let last = entries.last().map(|e| e.cookie);
            out.extend(entries.into_iter().filter(|e| e.name != b"." && e.name != b".."));
            match last {
                Some(c) if !eof => cookie = c,
                _ => return Ok(out),
            }
        }
    }

    /// Moves the files of one directory that are not on their hashed
    /// subvolume and belong to this worker; removes stale link files.
    pub async fn migrate_dir(&self, dir: Gfid, plan: &Plan, counters: &Counters, stop: &AtomicBool) {
        let kids = self.kids();
        let mut names: BTreeMap<Vec<u8>, Copies> = BTreeMap::new();
        for i in 0..kids.len() {
            match self.list_on(i, dir).await {
                Ok(entries) => {
                    for e in entries.into_iter().filter(|e| e.kind != libc::S_IFDIR) {
                        let slot = names.entry(e.name.clone()).or_default();
                        if e.linkto.is_some() {
                            slot.links.push((i, e));
                        } else {
                            slot.data.push((i, e));
                        }
                    }
                }
                Err(Errno(libc::ESTALE | libc::ENOENT)) => {}
                Err(e) => {
                    tracing::warn!(%dir, subvolume = i, errno = e.0, "could not list a directory copy");
                    Counters::add(&counters.failures, 1);
                    return;
                }
            }
        }
        self.layouts.drop_dir(&dir);
        let layout = match self.layout_of(dir).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(%dir, errno = e.0, "no layout to migrate by");
                Counters::add(&counters.failures, 1);
                return;
            }
        };
        // Names of one hard-linked file must not move at once (the first
        // moves the file, the others follow it): those go one by one,
        // after the rest.
        let (linked, single): (Vec<_>, Vec<_>) = names
            .into_iter()
            .partition(|(_, c)| c.data.first().and_then(|(_, e)| e.attr).is_some_and(|a| a.nlink > 1));
        // Files move a few at once: each move is a chain of round trips,
        // so one at a time leaves the network and disks mostly idle.
        let slots = tokio::sync::Semaphore::new(plan.parallel.max(1));
        let moves = single.into_iter().map(|(name, copies)| {
            let (slots, layout) = (&slots, &layout);
            async move {
                let Ok(_slot) = slots.acquire().await else { return };
                if !stop.load(Ordering::Relaxed) {
                    self.settle_name(dir, &name, copies, layout, plan, counters).await;
                }
            }
        });
        crate::layer::join_all(moves).await;
        for (name, copies) in linked {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            self.settle_name(dir, &name, copies, &layout, plan, counters).await;
        }
    }

    /// One name of a listed directory: moves its file if it is not on
    /// its hashed subvolume and is this worker's; removes dangling link
    /// files.
    async fn settle_name(
        &self,
        dir: Gfid,
        name: &[u8],
        Copies { data, links }: Copies,
        layout: &super::layouts::DirLayout,
        plan: &Plan,
        counters: &Counters,
    ) {
        let Some(hashed) = layout.hashed(name) else {
            Counters::add(&counters.failures, 1);
            return;
        };
        let data = if data.len() > 1 {
            // Seen on two subvolumes: most likely another node moved it
            // between our listings of the two. Look again.
            tokio::time::sleep(Duration::from_millis(500)).await;
            self.still_data(dir, name, data).await
        } else {
            data
        };
        let Some((source, entry)) = data.first() else {
            // Only link files: the file went; they point nowhere.
            for (i, l) in &links {
                if plan.owns.as_ref()(*i, &l.gfid) {
                    self.remove_if_link(*i, dir, name, l.gfid).await;
                }
            }
            return;
        };
        if !plan.owns.as_ref()(*source, &entry.gfid) {
            return;
        }
        Counters::add(&counters.scanned, 1);
        if data.len() > 1 {
            tracing::error!(%dir, name = %String::from_utf8_lossy(name), "a file has data on two subvolumes; left alone");
            Counters::add(&counters.failures, 1);
            return;
        }
        if *source == hashed || !plan.migrate {
            return;
        }
        let started = std::time::Instant::now();
        match self.migrate_entry(dir, name, *source, hashed, entry, plan).await {
            Ok(Moved::Done(bytes)) => {
                Counters::add(&counters.files, 1);
                Counters::add(&counters.bytes, bytes);
                tracing::debug!(%dir, name = %String::from_utf8_lossy(name), from = source, to = hashed, bytes, ms = started.elapsed().as_millis() as u64, "file migrated");
                // Link files elsewhere pointed at the old place.
                for (i, l) in links.iter().filter(|(i, _)| *i != hashed) {
                    self.remove_if_link(*i, dir, name, l.gfid).await;
                }
            }
            Ok(Moved::Skipped(why)) => {
                tracing::info!(%dir, name = %String::from_utf8_lossy(name), why, "file not migrated");
                Counters::add(&counters.skipped, 1);
            }
            Err(e) => {
                tracing::warn!(%dir, name = %String::from_utf8_lossy(name), errno = e.0, "file migration failed");
                Counters::add(&counters.failures, 1);
            }
        }
    }

    /// Which of `copies` of `name` are still data files (not link files,
    /// nor gone).
    async fn still_data(&self, dir: Gfid, name: &[u8], copies: Vec<(usize, DirEntry)>) -> Vec<(usize, DirEntry)> {
        let mut kept = Vec::new();
        for (i, mut e) in copies {
            let look = Fop::Lookup {
                parent: dir,
                name: name.to_vec(),
            };
            if let Ok((Reply::Entry(a), _)) = self.on(i, look).await {
                if a.linkto.is_none() && !a.is_dir() {
                    e.gfid = a.gfid;
                    e.attr = Some(a);
                    kept.push((i, e));
                }
            }
        }
        kept
    }

    /// Removes `name` on subvolume `idx` if it is still a link file for
    /// `gfid` (a data file that arrived meanwhile stays).
    async fn remove_if_link(&self, idx: usize, dir: Gfid, name: &[u8], gfid: Gfid) {
        if let Ok(layer) = self.layer_of(idx) {
            remove_name(&layer, dir, name, gfid, true).await;
        }
    }

    async fn migrate_entry(
        &self,
        dir: Gfid,
        name: &[u8],
        from: usize,
        to: usize,
        entry: &DirEntry,
        plan: &Plan,
    ) -> Result<Moved, Errno> {
        let kids = self.kids();
        let (src, dst) = (kids[from].clone(), kids[to].clone());
        let attr = match self
            .on(
                from,
                Fop::Lookup {
                    parent: dir,
                    name: name.to_vec(),
                },
            )
            .await?
        {
            (Reply::Entry(a), _) if a.gfid == entry.gfid && a.linkto.is_none() => a,
            _ => return Ok(Moved::Skipped("changed while listed")),
        };
        let kind = attr.mode & libc::S_IFMT;
        if kind != libc::S_IFREG {
            return self.recreate_entry(dir, name, &src, &dst, &attr).await;
        }
        // Already at its destination under this name: an earlier name of a
        // hard-linked file moved the inode (all of a file's names on a
        // brick are one inode), or an earlier run stopped after the switch.
        // The old name goes only if its copy is known to have moved away.
        let here = Fop::Lookup {
            parent: dir,
            name: name.to_vec(),
        };
        if let Ok((Reply::Entry(a), _)) = dst.layer.call(here, Bytes::new()).await {
            if a.gfid == attr.gfid && a.linkto.is_none() {
                return match Handle::open(&src.layer, attr.gfid, libc::O_RDONLY).await {
                    // Moved away (ESTALE: its handle went with the move and
                    // the brick has restarted since).
                    Err(Errno(libc::EREMCHG | libc::ESTALE)) => {
                        remove_name(&src.layer, dir, name, attr.gfid, false).await;
                        Ok(Moved::Done(0))
                    }
                    Ok(h) => {
                        h.close().await;
                        tracing::error!(%dir, name = %String::from_utf8_lossy(name), "the file has data on two subvolumes; left alone");
                        Err(Errno(libc::EEXIST))
                    }
                    Err(e) => Err(e),
                };
            }
        }
        if attr.nlink > 1 {
            if !self.is_drained(&src) {
                // Hard links stay together where they are, reached through
                // a link file (gluster's rebalance skips them too).
                self.ensure_link(&dst, &src, dir, name, attr.gfid).await?;
                return Ok(Moved::Skipped("hard links"));
            }
            // Leaving bricks must be emptied (gluster's remove-brick moves
            // hard links too): the first name met moves the file, each
            // later one becomes a hard link to it where it went.
            if let Some(at) = self.moved_copy(attr.gfid, from).await {
                return self.link_moved_name(dir, name, &kids[at], &src, attr.gfid).await;
            }
        }
        if !plan.force && !self.has_room_for(from, to, attr.size).await {
            self.ensure_link(&dst, &src, dir, name, attr.gfid).await?;
            return Ok(Moved::Skipped("less free space on the destination"));
        }
        self.migrate_file(dir, name, &src, &dst, attr).await.map(Moved::Done)
    }

    /// Is this subvolume being drained by remove-brick?
    fn is_drained(&self, c: &Child) -> bool {
        self.decommissioned.read().expect("poisoned").contains(&c.id)
    }

    /// The subvolume other than `from` holding `gfid` as a file (an earlier
    /// name of a hard-linked file moved it there).
    async fn moved_copy(&self, gfid: Gfid, from: usize) -> Option<usize> {
        let results = self.everywhere(&Fop::GetAttr { gfid }).await;
        results.into_iter().enumerate().find_map(|(i, r)| match r {
            Ok((Reply::Attr(a), _)) if i != from && a.linkto.is_none() && !a.is_dir() => Some(i),
            _ => None,
        })
    }

    /// Another name of a hard-linked file that already moved to `at`: the
    /// name is made there as a hard link (with a link file on its hashed
    /// subvolume if that is elsewhere), then removed from `src`.
    async fn link_moved_name(
        &self,
        dir: Gfid,
        name: &[u8],
        at: &Child,
        src: &Child,
        gfid: Gfid,
    ) -> Result<Moved, Errno> {
        remove_name(&at.layer, dir, name, gfid, true).await;
        let link = Fop::Link {
            gfid,
            new_parent: dir,
            new_name: name.to_vec(),
        };
        match at.layer.call(link, Bytes::new()).await {
            Ok(_) | Err(Errno(libc::EEXIST)) => {}
            Err(e) => return Err(e),
        }
        let layout = self.layout_of(dir).await?;
        if let Some(h) = layout.hashed(name) {
            let kids = self.kids();
            if kids[h].id != at.id {
                self.ensure_link(&kids[h], at, dir, name, gfid).await?;
            }
        }
        remove_name(&src.layer, dir, name, gfid, false).await;
        Ok(Moved::Done(0))
    }

    /// Would moving `size` bytes leave `to` with a smaller free share than
    /// `from` would then have? In whole percent, as gluster's
    /// `__dht_check_free_space` (so bricks sharing a file system, whose
    /// shares move together, do not refuse every file).
    async fn has_room_for(&self, from: usize, to: usize, size: u64) -> bool {
        let statfs = |i| async move {
            match self.on(i, Fop::Statfs).await {
                Ok((Reply::Statfs(s), _)) if s.blocks > 0 => Some(s),
                _ => None,
            }
        };
        let (Some(f), Some(t)) = (statfs(from).await, statfs(to).await) else {
            return false;
        };
        let bytes = |blocks: u64, frsize: u32| u128::from(blocks) * u128::from(frsize.max(1));
        let size = u128::from(size);
        let dst_after = bytes(t.bavail, t.frsize).saturating_sub(size) * 100 / bytes(t.blocks, t.frsize);
        let src_after = (bytes(f.bavail, f.frsize) + size) * 100 / bytes(f.blocks, f.frsize);
        dst_after >= src_after
    }

    /// Makes sure `name`'s hashed subvolume `at` has a link file to `data`.
    async fn ensure_link(&self, at: &Child, data: &Child, dir: Gfid, name: &[u8], gfid: Gfid) -> Result<(), Errno> {
        let look = Fop::Lookup {
            parent: dir,
            name: name.to_vec(),
        };
        match at.layer.call(look, Bytes::new()).await {
            Ok((Reply::Entry(a), _)) if a.gfid == gfid && a.linkto == Some(data.id) => Ok(()),
            Ok((Reply::Entry(a), _)) if a.gfid == gfid && a.linkto.is_some() => at
                .layer
                .call(
                    Fop::SetLinkto {
                        gfid,
                        target: Some(data.id),
                    },
                    Bytes::new(),
                )
                .await
                .map(|_| ()),
            Ok(_) => Err(Errno(libc::EEXIST)),
            Err(Errno(libc::ENOENT)) => at
                .layer
                .call(
                    Fop::MakeLink {
                        parent: dir,
                        name: name.to_vec(),
                        gfid,
                        target: data.id,
                    },
                    Bytes::new(),
                )
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        }
    }

    /// Symlinks and special files carry no data: made again on `dst` with
    /// the same gfid, owner, mode and times, then removed from `src`.
    async fn recreate_entry(
        &self,
        dir: Gfid,
        name: &[u8],
        src: &Child,
        dst: &Child,
        attr: &Attr,
    ) -> Result<Moved, Errno> {
        let creds = cairn_common::proto::Creds {
            uid: attr.uid,
            gid: attr.gid,
        };
        let make = if attr.mode & libc::S_IFMT == libc::S_IFLNK {
            let target = match src.layer.call(Fop::Readlink { gfid: attr.gfid }, Bytes::new()).await? {
                (Reply::Link(t), _) => t,
                _ => return Err(Errno(libc::EIO)),
            };
            Fop::Symlink {
                parent: dir,
                name: name.to_vec(),
                gfid: attr.gfid,
                target,
                creds,
            }
        } else if attr.nlink > 1 {
            self.ensure_link(dst, src, dir, name, attr.gfid).await?;
            return Ok(Moved::Skipped("hard links"));
        } else {
            Fop::Mknod {
                parent: dir,
                name: name.to_vec(),
                gfid: attr.gfid,
                mode: attr.mode,
                umask: 0,
                rdev: attr.rdev,
                creds,
            }
        };
        // The link file standing for it goes first; the name resolves
        // through the other subvolumes in between (the directory is not
        // settled while a rebalance runs).
        remove_name(&dst.layer, dir, name, attr.gfid, true).await;
        dst.layer.call(make, Bytes::new()).await?;
        let set = SetAttr {
            atime: Some(TimeSet::At(attr.atime)),
            mtime: Some(TimeSet::At(attr.mtime)),
            ..Default::default()
        };
        if attr.mode & libc::S_IFMT != libc::S_IFLNK {
            let _ = dst
                .layer
                .call(
                    Fop::SetAttr {
                        gfid: attr.gfid,
                        fh: None,
                        set,
                    },
                    Bytes::new(),
                )
                .await;
        }
        remove_name(&src.layer, dir, name, attr.gfid, false).await;
        Ok(Moved::Done(0))
    }

    /// Moves a regular file's data (see the module comment); returns the
    /// bytes copied.
    async fn migrate_file(&self, dir: Gfid, name: &[u8], src: &Child, dst: &Child, attr: Attr) -> Result<u64, Errno> {
        let gfid = attr.gfid;
        self.ensure_link(dst, src, dir, name, gfid).await?;
        // Said again even when the link file was right: it also tells the
        // destination's bricks that the file is arriving (a copy that once
        // moved away from there is marked moved).
        let point = Fop::SetLinkto {
            gfid,
            target: Some(src.id),
        };
        dst.layer.call(point, Bytes::new()).await?;
        let s = Handle::open(&src.layer, gfid, libc::O_RDONLY).await?;
        let d = match Handle::open(&dst.layer, gfid, libc::O_RDWR).await {
            Ok(d) => d,
            Err(e) => {
                s.close().await;
                return Err(e);
            }
        };
        let result = self.copy_and_switch(dir, name, src, dst, &s, &d, attr).await;
        s.close().await;
        d.close().await;
        if result.is_ok() {
            // Lookups and opens of the gfid must find the new copy.
            self.remember(gfid, Place::File(self.child_by_id(&dst.id).unwrap_or(0)));
            remove_name(&src.layer, dir, name, gfid, false).await;
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn copy_and_switch(
        &self,
        dir: Gfid,
        name: &[u8],
        src: &Child,
        dst: &Child,
        s: &Handle,
        d: &Handle,
        attr: Attr,
    ) -> Result<u64, Errno> {
        let gfid = attr.gfid;
        // A link file left by an earlier attempt may hold data: start empty.
        d.truncate(0).await?;
        d.truncate(attr.size).await?;
        let mut copied = copy_blocks(s, d, attr.size, false).await?;
        let freeze = |on: bool| Fop::MigrateFreeze { gfid, freeze: on };
        match src.layer.call(freeze(true), Bytes::new()).await {
            Ok(_) => {}
            Err(Errno(libc::EBUSY)) => return Err(Errno(libc::EBUSY)),
            Err(e) => return Err(e),
        }
        let finished = async {
            // Frozen: what the source holds now is final.
            let now = match src.layer.call(Fop::GetAttr { gfid }, Bytes::new()).await? {
                (Reply::Attr(a), _) => a,
                _ => return Err(Errno(libc::EIO)),
            };
            d.truncate(now.size).await?;
            copied += copy_blocks(s, d, now.size, true).await?;
            copy_xattrs(&src.layer, &dst.layer, gfid).await?;
            let owner = SetAttr {
                uid: Some(now.uid),
                gid: Some(now.gid),
                ..Default::default()
            };
            d.setattr(owner).await?;
            // The mode makes it a file rather than a link file.
            let rest = SetAttr {
                mode: Some(now.mode & 0o7777),
                atime: Some(TimeSet::At(now.atime)),
                mtime: Some(TimeSet::At(now.mtime)),
                ..Default::default()
            };
            d.setattr(rest).await?;
            dst.layer
                .call(Fop::SetLinkto { gfid, target: None }, Bytes::new())
                .await?;
            d.fsync().await?;
            src.layer
                .call(Fop::MigrateDone { gfid, target: dst.id }, Bytes::new())
                .await?;
            Ok(copied)
        }
        .await;
        if let Err(e) = &finished {
            // Back as it was: the source is the file, the destination a
            // link file to it.
            tracing::info!(%dir, name = %String::from_utf8_lossy(name), errno = e.0, "migration abandoned");
            let _ = dst
                .layer
                .call(
                    Fop::SetLinkto {
                        gfid,
                        target: Some(src.id),
                    },
                    Bytes::new(),
                )
                .await;
            let _ = d
                .setattr(SetAttr {
                    mode: Some(libc::S_ISVTX),
                    size: Some(0),
                    ..Default::default()
                })
                .await;
            let _ = src.layer.call(freeze(false), Bytes::new()).await;
        }
        finished
    }
}

/// Removes `name` in `dir` from one subvolume if it still names `gfid`
/// (and, with `links_only`, only if it is a link file there): what was
/// listed may have changed since.
async fn remove_name(at: &Arc<dyn Subvolume>, dir: Gfid, name: &[u8], gfid: Gfid, links_only: bool) {
    let look = Fop::Lookup {
        parent: dir,
        name: name.to_vec(),
    };
    let Ok((Reply::Entry(a), _)) = at.call(look, Bytes::new()).await else {
        return;
    };
    if a.gfid != gfid || (links_only && a.linkto.is_none()) {
        return;
    }
    let unlink = Fop::Unlink {
        parent: dir,
        name: name.to_vec(),
    };
    if let Err(e) = at.call(unlink, Bytes::new()).await {
        tracing::warn!(%dir, name = %String::from_utf8_lossy(name), errno = e.0, "could not remove a migrated file's old name");
    }
}

/// A file open on one subvolume for the migration.
struct Handle {
    layer: Arc<dyn Subvolume>,
    gfid: Gfid,
    fh: u64,
}

impl Handle {
    async fn open(layer: &Arc<dyn Subvolume>, gfid: Gfid, flags: i32) -> Result<Handle, Errno> {
        match layer.call(Fop::Open { gfid, flags }, Bytes::new()).await? {
            (Reply::Opened { fh }, _) => Ok(Handle {
                layer: layer.clone(),
                gfid,
                fh,
            }),
            _ => Err(Errno(libc::EIO)),
        }
    }

    async fn close(&self) {
        let _ = self.layer.call(Fop::Release { fh: self.fh }, Bytes::new()).await;
    }

    async fn setattr(&self, set: SetAttr) -> Result<(), Errno> {
        let op = Fop::SetAttr {
            gfid: self.gfid,
            fh: Some(self.fh),
            set,
        };
        self.layer.call(op, Bytes::new()).await.map(|_| ())
    }

    async fn truncate(&self, size: u64) -> Result<(), Errno> {
        self.setattr(SetAttr {
            size: Some(size),
            ..Default::default()
        })
        .await
    }

    async fn fsync(&self) -> Result<(), Errno> {
        let op = Fop::Fsync {
            fh: self.fh,
            datasync: false,
        };
        self.layer.call(op, Bytes::new()).await.map(|_| ())
    }

    async fn checksums(&self, offset: u64, len: u32) -> Result<Vec<Option<u64>>, Errno> {
        let op = Fop::Checksum {
            fh: self.fh,
            offset,
            len,
        };
        match self.layer.call(op, Bytes::new()).await? {
            (Reply::Checksums(c), _) => Ok(c),
            _ => Err(Errno(libc::EIO)),
        }
    }

    async fn read(&self, offset: u64, size: u32) -> Result<Bytes, Errno> {
        let op = Fop::Read {
            fh: self.fh,
            offset,
            size,
        };
        match self.layer.call(op, Bytes::new()).await? {
            (Reply::Data { .. }, data) => Ok(data),
            _ => Err(Errno(libc::EIO)),
        }
    }

    async fn write(&self, offset: u64, data: Bytes) -> Result<(), Errno> {
        let op = Fop::Write {
            fh: self.fh,
            offset,
            len: data.len() as u32,
        };
        self.layer.call(op, data).await.map(|_| ())
    }

    async fn punch(&self, offset: u64, len: u64) -> Result<(), Errno> {
        let op = Fop::Fallocate {
            fh: self.fh,
            mode: libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        };
        match self.layer.call(op, Bytes::new()).await {
            Ok(_) => Ok(()),
            // No hole punching there: zeros say the same.
            Err(Errno(libc::EOPNOTSUPP)) => {
                let mut at = offset;
                while at < offset + len {
                    let n = (offset + len - at).min(COPY_CHUNK);
                    self.write(at, Bytes::from(vec![0u8; n as usize])).await?;
                    at += n;
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// Copies `s`'s data blocks to `d` up to `size`. The first pass copies
/// every block holding data; with `diff`, only blocks whose checksums
/// differ (and zero blocks on `s` become holes on `d`). Returns bytes sent.
async fn copy_blocks(s: &Handle, d: &Handle, size: u64, diff: bool) -> Result<u64, Errno> {
    let block = u64::from(CHECKSUM_BLOCK);
    let mut sent = 0;
    let mut span_start = 0;
    while span_start < size {
        let span = (size - span_start).min(u64::from(MAX_CHECKSUM_SPAN));
        let theirs = s.checksums(span_start, span as u32).await?;
        let ours = if diff {
            Some(d.checksums(span_start, span as u32).await?)
        } else {
            None
        };
        // Runs of blocks to copy, merged up to COPY_CHUNK.
        let mut k = 0;
        while k < theirs.len() {
            let off = span_start + k as u64 * block;
            let want = match &ours {
                None => theirs[k].is_some(),
                Some(o) => o.get(k).copied().flatten() != theirs[k],
            };
            if !want {
                k += 1;
                continue;
            }
            if theirs[k].is_none() {
                // Zeros (or a hole) at the source; the destination differs.
                let len = block.min(size - off);
                d.punch(off, len).await?;
                k += 1;
                continue;
            }
            let mut end = k + 1;
            while end < theirs.len()
                && (end - k) as u64 * block < COPY_CHUNK
                && theirs[end].is_some()
                && match &ours {
                    None => true,
                    Some(o) => o.get(end).copied().flatten() != theirs[end],
                }
            {
                end += 1;
            }
            let len = ((end - k) as u64 * block).min(size - off);
            let data = s.read(off, len as u32).await?;
            if !data.is_empty() {
                sent += data.len() as u64;
                d.write(off, data).await?;
            }
            k = end;
        }
        span_start += span;
    }
    Ok(sent)
}

/// Copies the user-visible extended attributes (ACLs included).
async fn copy_xattrs(src: &Arc<dyn Subvolume>, dst: &Arc<dyn Subvolume>, gfid: Gfid) -> Result<(), Errno> {
    let names = match src.call(Fop::ListXattr { gfid }, Bytes::new()).await? {
        (Reply::XattrNames(n), _) => n,
        _ => return Err(Errno(libc::EIO)),
    };
    for name in names {
        let value = match src
            .call(
                Fop::GetXattr {
                    gfid,
                    name: name.clone(),
                },
                Bytes::new(),
            )
            .await
        {
            Ok((Reply::Xattr(v), _)) => v,
            Err(Errno(libc::ENODATA)) => continue,
            Ok(_) => return Err(Errno(libc::EIO)),
            Err(e) => return Err(e),
        };
        dst.call(
            Fop::SetXattr {
                gfid,
                name,
                value,
                flags: 0,
            },
            Bytes::new(),
        )
        .await?;
    }
    Ok(())
}
