//! Distribute (DHT): spreads a volume's files over its subvolumes by
//! hashing each entry's name into its parent directory's layout, with no
//! metadata server. Directories exist on every subvolume; a file lives on
//! the subvolume whose range holds its name's hash, or — after a layout
//! change or when placed elsewhere — is reached through a link file on that
//! subvolume.
//!
//! Directory metadata: subvolume 0 is authoritative for mode, owner and
//! xattrs (changes go to every copy, subvolume 0 first); times are the
//! latest over all copies, since each copy's mtime moves with the entries
//! created on it.

mod layouts;
mod listing;
mod namespace;
pub mod rebalance;
mod recent;
mod space;

use crate::layer::{Errno, FopFuture, FopResult, Subvolume};
use bytes::Bytes;
use cairn_common::proto::{Attr, Fop, Reply, Statfs};
use cairn_common::Gfid;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use uuid::Uuid;

/// Subvolume indexes ride above the bricks' 56-bit directory cookies.
const COOKIE_SHIFT: u32 = 56;
/// At most this many subvolumes (7 bits of cookie).
pub const MAX_SUBVOLUMES: usize = 127;
/// Bound on the gfid → subvolume memory; forgetting only costs a fan-out.
const LOCATION_LIMIT: usize = 1 << 20;
/// Tries at finding a file again after it moved (rebalance) while a
/// request was on its way: the old copy answers EREMCHG from the moment the
/// new one is complete until its name is gone, a few milliseconds.
const MOVE_TRIES: u32 = 12;

#[derive(Clone)]
pub struct Child {
    /// The subvolume's id, as link files name it (its first brick's id).
    pub id: Uuid,
    pub layer: Arc<dyn Subvolume>,
}

/// Where an inode lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Dir,
    File(usize),
}

/// A file open through this layer: which subvolume's handle it maps to.
#[derive(Clone)]
struct OpenFile {
    idx: usize,
    child_fh: u64,
    /// The layer `child_fh` belongs to: when the volume's shape changes and
    /// this subvolume's layer is rebuilt, the file is opened again on the
    /// new one.
    layer: Arc<dyn Subvolume>,
    gfid: Gfid,
    flags: i32,
}

pub struct Distribute {
    /// Replaced whole when bricks are added, replaced or removed; a
    /// request works on one snapshot.
    children: RwLock<Arc<Vec<Child>>>,
    /// The volume's layout generation: a directory whose layout carries it
    /// has every file where its layout says (or linked from there).
    commit: AtomicU32,
    /// Subvolumes being drained (remove-brick): no range in new layouts.
    decommissioned: RwLock<Vec<Uuid>>,
    /// A rebalance or remove-brick is running: layouts change under us, so
    /// they are trusted for seconds, not half a minute.
    rebalancing: AtomicBool,
    layouts: layouts::LayoutCache,
    space: space::SpaceWatch,
    places: Mutex<HashMap<Gfid, Place>>,
    /// Where files were just looked up, for the unlink that follows.
    recent: recent::RecentNames<namespace::Found>,
    handles: Mutex<HashMap<u64, OpenFile>>,
    next_fh: AtomicU64,
    /// `cluster.weighted-rebalance`
    weighted: AtomicBool,
    /// `cluster.lookup-optimize`
    lookup_optimize: AtomicBool,
    /// `cluster.min-free-disk`, in percent.
    min_free_percent: AtomicU64,
}

fn errno_of(e: &Errno) -> i32 {
    e.0
}

impl Distribute {
    pub fn new(children: Vec<Child>, commit: u32) -> anyhow::Result<Distribute> {
        if children.is_empty() || children.len() > MAX_SUBVOLUMES {
            anyhow::bail!(
                "distribute needs 1 to {MAX_SUBVOLUMES} subvolumes, got {}",
                children.len()
            );
        }
        Ok(Distribute {
            children: RwLock::new(Arc::new(children)),
            commit: AtomicU32::new(commit),
            decommissioned: RwLock::new(Vec::new()),
            rebalancing: AtomicBool::new(false),
            layouts: layouts::LayoutCache::default(),
            space: space::SpaceWatch::default(),
            places: Mutex::new(HashMap::new()),
            recent: recent::RecentNames::default(),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            weighted: AtomicBool::new(true),
            lookup_optimize: AtomicBool::new(true),
            min_free_percent: AtomicU64::new(10),
        })
    }

    /// The subvolumes now.
    pub fn kids(&self) -> Arc<Vec<Child>> {
        self.children.read().expect("children poisoned").clone()
    }

    fn commit(&self) -> u32 {
        self.commit.load(Ordering::Relaxed)
    }

    fn child_by_id(&self, id: &Uuid) -> Option<usize> {
        self.kids().iter().position(|c| c.id == *id)
    }

    fn layer_of(&self, idx: usize) -> Result<Arc<dyn Subvolume>, Errno> {
        self.kids().get(idx).map(|c| c.layer.clone()).ok_or(Errno(libc::ESTALE))
    }

    async fn on(&self, idx: usize, op: Fop) -> FopResult {
        self.layer_of(idx)?.call(op, Bytes::new()).await
    }

    /// Sends `op` to every subvolume at once; results in subvolume order.
    async fn everywhere(&self, op: &Fop) -> Vec<FopResult> {
        let kids = self.kids();
        let futures = kids.iter().map(|c| c.layer.call(op.clone(), Bytes::new()));
        crate::layer::join_all(futures).await
    }

    /// Takes the volume's new shape: its subvolumes (existing ones keep
    /// their layers, so open files and caches carry over), its layout
    /// generation, the subvolumes being drained, and whether a rebalance
    /// runs. Layouts are read again; files open on a rebuilt subvolume
    /// are opened again on their next use.
    pub fn reshape(&self, children: Vec<Child>, commit: u32, decommissioned: Vec<Uuid>, rebalancing: bool) {
        if children.is_empty() || children.len() > MAX_SUBVOLUMES {
            tracing::error!(
                count = children.len(),
                "ignoring a volume shape with no or too many subvolumes"
            );
            return;
        }
        let old = self.kids();
        let changed = old.len() != children.len()
            || old
                .iter()
                .zip(&children)
                .any(|(a, b)| a.id != b.id || !Arc::ptr_eq(&a.layer, &b.layer));
        let reshaped = changed
            || self.commit() != commit
            || *self.decommissioned.read().expect("poisoned") != decommissioned
            || self.rebalancing.load(Ordering::Relaxed) != rebalancing;
        if !reshaped {
            return;
        }
        {
            let mut handles = self.handles.lock().expect("handles poisoned");
            for h in handles.values_mut() {
                let id = old.get(h.idx).map(|c| c.id);
                if let Some(j) = children.iter().position(|c| Some(c.id) == id) {
                    h.idx = j;
                }
            }
        }
        if changed {
            let mut places = self.places.lock().expect("places poisoned");
            places.retain(|_, p| *p == Place::Dir);
        }
        *self.children.write().expect("children poisoned") = Arc::new(children);
        self.recent.clear();
        self.commit.store(commit, Ordering::Relaxed);
        *self.decommissioned.write().expect("poisoned") = decommissioned;
        self.rebalancing.store(rebalancing, Ordering::Relaxed);
        self.layouts.clear();
        self.space.clear();
        tracing::info!(
            subvolumes = self.kids().len(),
            commit,
            rebalancing,
            "volume shape changed"
        );
    }

    fn remember(&self, gfid: Gfid, place: Place) {
        let mut p = self.places.lock().expect("places poisoned");
        if p.len() >= LOCATION_LIMIT {
            p.clear();
        }
        p.insert(gfid, place);
    }

    fn forget(&self, gfid: &Gfid) {
        self.places.lock().expect("places poisoned").remove(gfid);
    }

    fn place_of(&self, gfid: &Gfid) -> Option<Place> {
        if gfid.is_root() {
            return Some(Place::Dir);
        }
        self.places.lock().expect("places poisoned").get(gfid).copied()
    }

    /// Finds where `gfid` lives, asking every subvolume if we do not know.
    async fn locate(&self, gfid: &Gfid) -> Result<Place, Errno> {
        self.locate_avoiding(gfid, None).await
    }

    /// The same, passing over subvolume `moved_from` (the file was just
    /// found moved away from it) and, while another copy exists, copies
    /// with no name left (a migrated file's old copy, kept alive by handles
    /// still open on it).
    async fn locate_avoiding(&self, gfid: &Gfid, moved_from: Option<usize>) -> Result<Place, Errno> {
        if let Some(p) = self.place_of(gfid) {
            if moved_from.is_none_or(|m| p != Place::File(m)) {
                return Ok(p);
            }
        }
        let results = self.everywhere(&Fop::GetAttr { gfid: *gfid }).await;
        let mut first_err = None;
        let mut unnamed = None;
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok((Reply::Attr(a), _)) if a.is_dir() => {
                    self.remember(*gfid, Place::Dir);
                    return Ok(Place::Dir);
                }
                Ok((Reply::Attr(a), _)) if a.linkto.is_none() && Some(i) != moved_from => {
                    if a.nlink == 0 {
                        unnamed.get_or_insert(i);
                        continue;
                    }
                    self.remember(*gfid, Place::File(i));
                    return Ok(Place::File(i));
                }
                Ok(_) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(i) = unnamed {
            return Ok(Place::File(i));
        }
        Err(first_err.unwrap_or(Errno(libc::ESTALE)))
    }

    /// Merges a directory's copies: subvolume 0's identity and permissions,
    /// the latest times.
    fn merge_dir(results: &[FopResult]) -> Result<Attr, Errno> {
        let mut merged: Option<Attr> = None;
        let mut first_err = None;
        for r in results {
            match r {
                Ok((Reply::Attr(a) | Reply::Entry(a), _)) => match &mut merged {
                    None => merged = Some(*a),
                    Some(m) => {
                        m.mtime = m.mtime.max(a.mtime);
                        m.ctime = m.ctime.max(a.ctime);
                        m.atime = m.atime.max(a.atime);
                    }
                },
                Ok(_) => {}
                Err(e) => {
                    first_err.get_or_insert(e.clone());
                }
            }
        }
        merged.ok_or_else(|| first_err.unwrap_or(Errno(libc::EIO)))
    }

    async fn dir_attr(&self, gfid: Gfid) -> Result<Attr, Errno> {
        Self::merge_dir(&self.everywhere(&Fop::GetAttr { gfid }).await)
    }

    /// Applies a directory change to every copy, subvolume 0 first (its
    /// answer decides), then returns the merged attributes.
    async fn dir_change(&self, op: Fop) -> FopResult {
        let kids = self.kids();
        let first = kids[0].layer.call(op.clone(), Bytes::new()).await?;
        let rest = crate::layer::join_all(kids[1..].iter().map(|c| c.layer.call(op.clone(), Bytes::new()))).await;
        for (i, r) in rest.iter().enumerate() {
            if let Err(e) = r {
                tracing::warn!(
                    subvolume = i + 1,
                    op = op.name(),
                    errno = errno_of(e),
                    "directory change missed a copy"
                );
            }
        }
        match first.0 {
            Reply::Attr(_) => {
                let gfid = match &op {
                    Fop::SetAttr { gfid, .. } => *gfid,
                    _ => return Ok(first),
                };
                Ok((Reply::Attr(self.dir_attr(gfid).await?), Bytes::new()))
            }
            _ => Ok(first),
        }
    }

    fn new_handle(&self, idx: usize, child_fh: u64, gfid: Gfid, flags: i32) -> Result<u64, Errno> {
        let layer = self.layer_of(idx)?;
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().expect("handles poisoned").insert(
            fh,
            OpenFile {
                idx,
                child_fh,
                layer,
                gfid,
                flags: crate::layer::reopen_flags(flags),
            },
        );
        Ok(fh)
    }

    fn handle(&self, fh: u64) -> Result<OpenFile, Errno> {
        self.handles
            .lock()
            .expect("handles poisoned")
            .get(&fh)
            .cloned()
            .ok_or(Errno(libc::EBADF))
    }

    /// Is the handle's layer still the subvolume's layer?
    fn is_current(&self, h: &OpenFile) -> bool {
        self.kids().get(h.idx).is_some_and(|c| Arc::ptr_eq(&c.layer, &h.layer))
    }

    /// Opens `fh`'s file again where it lives now (it was migrated, or its
    /// subvolume was rebuilt) and lets go of the old handle.
    async fn reopen(&self, fh: u64, moved: bool) -> Result<(), Errno> {
        let old = self.handle(fh)?;
        let mut pause = Duration::from_millis(2);
        let mut last = Errno(libc::ESTALE);
        let mut avoid = moved.then_some(old.idx);
        for _ in 0..MOVE_TRIES {
            self.forget(&old.gfid);
            let Place::File(i) = self.locate_avoiding(&old.gfid, avoid).await? else {
                return Err(Errno(libc::EISDIR));
            };
            let layer = self.layer_of(i)?;
            let open = Fop::Open {
                gfid: old.gfid,
                flags: old.flags,
            };
            match layer.call(open, Bytes::new()).await {
                Ok((Reply::Opened { fh: child_fh }, _)) => {
                    let replaced = self.handles.lock().expect("handles poisoned").insert(
                        fh,
                        OpenFile {
                            idx: i,
                            child_fh,
                            layer,
                            ..old.clone()
                        },
                    );
                    if let Some(prev) = replaced {
                        tokio::spawn(async move {
                            let _ = prev.layer.call(Fop::Release { fh: prev.child_fh }, Bytes::new()).await;
                        });
                    }
                    tracing::debug!(gfid = %old.gfid, subvolume = i, "open file followed its file");
                    return Ok(());
                }
                Ok(_) => return Err(Errno(libc::EIO)),
                Err(e) if is_moved(&e) => {
                    avoid = Some(i);
                    last = e;
                }
                Err(e) => return Err(e),
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
        Err(last)
    }

    /// Runs a handle-based op on the subvolume that opened the file,
    /// following the file if it moved.
    async fn by_handle(&self, op: Fop, payload: Bytes) -> FopResult {
        let handles = op.handles();
        if handles.is_empty() {
            return Err(Errno(libc::EINVAL));
        }
        let mut tries = 0;
        loop {
            tries += 1;
            let mut mapped = Vec::with_capacity(handles.len());
            for fh in &handles {
                let h = self.handle(*fh)?;
                if !self.is_current(&h) && tries < MOVE_TRIES {
                    self.reopen(*fh, false).await?;
                }
                mapped.push((*fh, self.handle(*fh)?));
            }
            let first = mapped[0].1.clone();
            if mapped.iter().any(|(_, h)| h.idx != first.idx) {
                // copy_file_range between subvolumes: the kernel falls back to
                // copying through read and write.
                return Err(Errno(libc::EOPNOTSUPP));
            }
            let child_op = op.clone().map_handles(|fh| {
                mapped
                    .iter()
                    .find(|(ours, _)| *ours == fh)
                    .map_or(fh, |(_, h)| h.child_fh)
            });
            match first.layer.call(child_op, payload.clone()).await {
                // EBADF / ESTALE: the handle could not be reopened where it
                // was after a reconnect (the old copy of a migrated file
                // has no handle left there).
                Err(e)
                    if tries < MOVE_TRIES
                        && (is_moved(&e) || (tries == 1 && matches!(e.0, libc::EBADF | libc::ESTALE))) =>
                {
                    for fh in &handles {
                        self.reopen(*fh, is_moved(&e)).await?;
                    }
                }
                r => return r,
            }
        }
    }

    async fn statfs(&self) -> FopResult {
        let mut sum: Option<Statfs> = None;
        for r in self.everywhere(&Fop::Statfs).await {
            let (Reply::Statfs(s), _) = r? else {
                return Err(Errno(libc::EIO));
            };
            match &mut sum {
                None => sum = Some(s),
                Some(t) => {
                    // Express every subvolume in the first one's block size.
                    let scale = |n: u64| n.saturating_mul(u64::from(s.frsize.max(1))) / u64::from(t.frsize.max(1));
                    t.blocks += scale(s.blocks);
                    t.bfree += scale(s.bfree);
                    t.bavail += scale(s.bavail);
                    t.files += s.files;
                    t.ffree += s.ffree;
                    t.namelen = t.namelen.min(s.namelen);
                }
            }
        }
        Ok((Reply::Statfs(sum.ok_or(Errno(libc::EIO))?), Bytes::new()))
    }

    /// A file's operation on the subvolume holding it, looking again when
    /// the file turns out to have moved since we learned its place.
    async fn on_file(&self, gfid: Gfid, first: usize, op: Fop) -> FopResult {
        self.on_file_at(gfid, first, op).await.0
    }

    /// Opens a file where it is (see `on_file`); also says where.
    async fn open_on(&self, gfid: Gfid, first: usize, flags: i32) -> Result<((Reply, Bytes), usize), Errno> {
        let (r, at) = self.on_file_at(gfid, first, Fop::Open { gfid, flags }).await;
        Ok((r?, at))
    }

    async fn on_file_at(&self, gfid: Gfid, first: usize, op: Fop) -> (FopResult, usize) {
        let mut at = first;
        let mut pause = Duration::from_millis(2);
        for tries in 1.. {
            let r = self.on(at, op.clone()).await;
            let moved = match &r {
                Err(e) if is_moved(e) => true,
                Err(Errno(libc::ESTALE | libc::ENOENT)) => tries == 1,
                _ => false,
            };
            if !moved || tries >= MOVE_TRIES {
                return (r, at);
            }
            if tries > 1 {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            self.forget(&gfid);
            let moved_from = matches!(&r, Err(e) if is_moved(e)).then_some(at);
            match self.locate_avoiding(&gfid, moved_from).await {
                Ok(Place::File(j)) => at = j,
                Ok(Place::Dir) => return (r, at),
                Err(e) => return (Err(e), at),
            }
        }
        unreachable!("the loop returns")
    }

    /// Inode operations addressed by gfid.
    async fn by_gfid(&self, gfid: Gfid, op: Fop) -> FopResult {
        match self.locate(&gfid).await? {
            Place::File(i) => self.on_file(gfid, i, op).await,
            Place::Dir => match op {
                Fop::GetAttr { gfid } => Ok((Reply::Attr(self.dir_attr(gfid).await?), Bytes::new())),
                Fop::SetAttr { .. } | Fop::SetXattr { .. } | Fop::RemoveXattr { .. } | Fop::Fsyncdir { .. } => {
                    self.dir_change(op).await
                }
                other => self.on(0, other).await,
            },
        }
    }

    async fn perform(&self, op: Fop, payload: Bytes) -> FopResult {
        match op {
            Fop::Lookup { parent, name } => self.lookup(parent, &name).await,
            Fop::GetAttr { gfid }
            | Fop::SetAttr { gfid, fh: None, .. }
            | Fop::Readlink { gfid }
            | Fop::GetXattr { gfid, .. }
            | Fop::SetXattr { gfid, .. }
            | Fop::ListXattr { gfid }
            | Fop::RemoveXattr { gfid, .. }
            | Fop::Fsyncdir { gfid, .. } => self.by_gfid(gfid, op).await,
            Fop::Open { gfid, flags } => match self.locate(&gfid).await? {
                Place::File(i) => {
                    // The file may move while it opens: note where it opened.
                    let (reply, at) = self.open_on(gfid, i, flags).await?;
                    match reply {
                        (Reply::Opened { fh }, d) => Ok((
                            Reply::Opened {
                                fh: self.new_handle(at, fh, gfid, flags)?,
                            },
                            d,
                        )),
                        _ => Err(Errno(libc::EIO)),
                    }
                }
                Place::Dir => Err(Errno(libc::EISDIR)),
            },
            Fop::Release { fh } => {
                let h = self.handle(fh)?;
                self.handles.lock().expect("handles poisoned").remove(&fh);
                h.layer.call(Fop::Release { fh: h.child_fh }, Bytes::new()).await
            }
            Fop::Mknod { parent, ref name, .. }
            | Fop::Symlink { parent, ref name, .. }
            | Fop::Create { parent, ref name, .. } => {
                self.recent.forget(parent, name);
                self.create_file(op).await
            }
            Fop::Mkdir { parent, ref name, .. } => {
                self.recent.forget(parent, name);
                self.mkdir(op).await
            }
            Fop::Unlink { parent, name } => self.unlink(parent, &name).await,
            Fop::Rmdir { parent, name } => {
                self.recent.forget(parent, &name);
                self.rmdir(parent, &name).await
            }
            Fop::Rename {
                parent,
                name,
                new_parent,
                new_name,
                flags,
            } => {
                self.recent.forget(parent, &name);
                self.recent.forget(new_parent, &new_name);
                self.rename(parent, &name, new_parent, &new_name, flags).await
            }
            Fop::Link {
                gfid,
                new_parent,
                new_name,
            } => {
                self.recent.forget(new_parent, &new_name);
                self.link(gfid, new_parent, &new_name).await
            }
            Fop::Readdir {
                gfid,
                cookie,
                plus,
                max_entries,
            } => self.readdir(gfid, cookie, plus, max_entries).await,
            Fop::Statfs => self.statfs().await,
            // Layout, link-file and migration operations are this layer's
            // own business.
            Fop::LayoutGet { .. }
            | Fop::LayoutSet { .. }
            | Fop::MakeLink { .. }
            | Fop::SetLinkto { .. }
            | Fop::MigrateFreeze { .. }
            | Fop::MigrateDone { .. } => Err(Errno(libc::EPERM)),
            op => self.by_handle(op, payload).await,
        }
    }
}

impl Subvolume for Distribute {
    fn call(&self, op: Fop, payload: Bytes) -> FopFuture<'_> {
        Box::pin(self.perform(op, payload))
    }

    fn name(&self) -> String {
        format!("distribute({})", self.kids().len())
    }

    fn reconfigure(&self, options: &std::collections::BTreeMap<String, String>) {
        use cairn_common::options::{effective, parse_bool, parse_percent};
        let flag = |k| parse_bool(effective(options, k)).unwrap_or(true);
        self.weighted
            .store(flag("cluster.weighted-rebalance"), Ordering::Relaxed);
        self.lookup_optimize
            .store(flag("cluster.lookup-optimize"), Ordering::Relaxed);
        let min_free = parse_percent(effective(options, "cluster.min-free-disk")).unwrap_or(10);
        self.min_free_percent.store(min_free, Ordering::Relaxed);
        for c in self.kids().iter() {
            c.layer.reconfigure(options);
        }
    }
}

/// The file is now on another subvolume (rebalance moved it).
fn is_moved(e: &Errno) -> bool {
    e.0 == libc::EREMCHG
}

/// Names a subvolume in cookies.
fn cookie_of(idx: usize, brick_cookie: u64) -> u64 {
    ((idx as u64) << COOKIE_SHIFT) | brick_cookie
}

fn split_cookie(cookie: u64) -> (usize, u64) {
    ((cookie >> COOKIE_SHIFT) as usize, cookie & ((1 << COOKIE_SHIFT) - 1))
}
