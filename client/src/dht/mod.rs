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
mod space;

use crate::layer::{Errno, FopFuture, FopResult, Subvolume};
use bytes::Bytes;
use cairn_common::proto::{Attr, Fop, Reply, Statfs};
use cairn_common::Gfid;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// Subvolume indexes ride above the bricks' 56-bit directory cookies.
const COOKIE_SHIFT: u32 = 56;
/// At most this many subvolumes (7 bits of cookie).
pub const MAX_SUBVOLUMES: usize = 127;
/// Bound on the gfid → subvolume memory; forgetting only costs a fan-out.
const LOCATION_LIMIT: usize = 1 << 20;

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

pub struct Distribute {
    children: Vec<Child>,
    /// The volume's layout generation: a directory whose layout carries it
    /// has every file where its layout says (or linked from there).
    commit: u32,
    layouts: layouts::LayoutCache,
    space: space::SpaceWatch,
    places: Mutex<HashMap<Gfid, Place>>,
    handles: Mutex<HashMap<u64, (usize, u64)>>,
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
            children,
            commit,
            layouts: layouts::LayoutCache::default(),
            space: space::SpaceWatch::default(),
            places: Mutex::new(HashMap::new()),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            weighted: AtomicBool::new(true),
            lookup_optimize: AtomicBool::new(true),
            min_free_percent: AtomicU64::new(10),
        })
    }

    fn child_by_id(&self, id: &Uuid) -> Option<usize> {
        self.children.iter().position(|c| c.id == *id)
    }

    async fn on(&self, idx: usize, op: Fop) -> FopResult {
        self.children[idx].layer.call(op, Bytes::new()).await
    }

    /// Sends `op` to every subvolume at once; results in subvolume order.
    async fn everywhere(&self, op: &Fop) -> Vec<FopResult> {
        let futures = self.children.iter().map(|c| c.layer.call(op.clone(), Bytes::new()));
        crate::layer::join_all(futures).await
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
        if let Some(p) = self.place_of(gfid) {
            return Ok(p);
        }
        let results = self.everywhere(&Fop::GetAttr { gfid: *gfid }).await;
        let mut first_err = None;
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok((Reply::Attr(a), _)) if a.is_dir() => {
                    self.remember(*gfid, Place::Dir);
                    return Ok(Place::Dir);
                }
                Ok((Reply::Attr(a), _)) if a.linkto.is_none() => {
                    self.remember(*gfid, Place::File(i));
                    return Ok(Place::File(i));
                }
                Ok(_) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
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
        let first = self.on(0, op.clone()).await?;
        let rest = crate::layer::join_all(
            self.children[1..]
                .iter()
                .map(|c| c.layer.call(op.clone(), Bytes::new())),
        )
        .await;
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

    fn new_handle(&self, idx: usize, child_fh: u64) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles
            .lock()
            .expect("handles poisoned")
            .insert(fh, (idx, child_fh));
        fh
    }

    fn handle(&self, fh: u64) -> Result<(usize, u64), Errno> {
        self.handles
            .lock()
            .expect("handles poisoned")
            .get(&fh)
            .copied()
            .ok_or(Errno(libc::EBADF))
    }

    /// Runs a handle-based op on the subvolume that opened the file.
    async fn by_handle(&self, op: Fop, payload: Bytes) -> FopResult {
        let handles = op.handles();
        let Some(first) = handles.first() else {
            return Err(Errno(libc::EINVAL));
        };
        let mut mapped = Vec::with_capacity(handles.len());
        for fh in &handles {
            mapped.push((*fh, self.handle(*fh)?));
        }
        let idx = self.handle(*first)?.0;
        if mapped.iter().any(|(_, (i, _))| *i != idx) {
            // copy_file_range between subvolumes: the kernel falls back to
            // copying through read and write.
            return Err(Errno(libc::EOPNOTSUPP));
        }
        let op = op.map_handles(|fh| mapped.iter().find(|(ours, _)| *ours == fh).map_or(fh, |(_, (_, c))| *c));
        self.children[idx].layer.call(op, payload).await
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

    /// Inode operations addressed by gfid.
    async fn by_gfid(&self, gfid: Gfid, op: Fop) -> FopResult {
        match self.locate(&gfid).await? {
            Place::File(i) => {
                let r = self.on(i, op.clone()).await;
                if matches!(r, Err(Errno(libc::ESTALE)) | Err(Errno(libc::ENOENT))) {
                    // Moved since we learned its place: look again.
                    self.forget(&gfid);
                    if let Place::File(j) = self.locate(&gfid).await? {
                        return self.on(j, op).await;
                    }
                }
                r
            }
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
                Place::File(i) => match self.on(i, Fop::Open { gfid, flags }).await? {
                    (Reply::Opened { fh }, d) => Ok((
                        Reply::Opened {
                            fh: self.new_handle(i, fh),
                        },
                        d,
                    )),
                    _ => Err(Errno(libc::EIO)),
                },
                Place::Dir => Err(Errno(libc::EISDIR)),
            },
            Fop::Release { fh } => {
                let (i, c) = self.handle(fh)?;
                self.handles.lock().expect("handles poisoned").remove(&fh);
                self.on(i, Fop::Release { fh: c }).await
            }
            Fop::Mknod { .. } | Fop::Symlink { .. } | Fop::Create { .. } => self.create_file(op).await,
            Fop::Mkdir { .. } => self.mkdir(op).await,
            Fop::Unlink { parent, name } => self.unlink(parent, &name).await,
            Fop::Rmdir { parent, name } => self.rmdir(parent, &name).await,
            Fop::Rename {
                parent,
                name,
                new_parent,
                new_name,
                flags,
            } => self.rename(parent, &name, new_parent, &new_name, flags).await,
            Fop::Link {
                gfid,
                new_parent,
                new_name,
            } => self.link(gfid, new_parent, &new_name).await,
            Fop::Readdir {
                gfid,
                cookie,
                plus,
                max_entries,
            } => self.readdir(gfid, cookie, plus, max_entries).await,
            Fop::Statfs => self.statfs().await,
            // Layout and link-file operations are this layer's own business.
            Fop::LayoutGet { .. } | Fop::LayoutSet { .. } | Fop::MakeLink { .. } => Err(Errno(libc::EPERM)),
            op => self.by_handle(op, payload).await,
        }
    }
}

impl Subvolume for Distribute {
    fn call(&self, op: Fop, payload: Bytes) -> FopFuture<'_> {
        Box::pin(self.perform(op, payload))
    }

    fn name(&self) -> String {
        format!("distribute({})", self.children.len())
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
        for c in &self.children {
            c.layer.reconfigure(options);
        }
    }
}

/// Names a subvolume in cookies.
fn cookie_of(idx: usize, brick_cookie: u64) -> u64 {
    ((idx as u64) << COOKIE_SHIFT) | brick_cookie
}

fn split_cookie(cookie: u64) -> (usize, u64) {
    ((cookie >> COOKIE_SHIFT) as usize, cookie & ((1 << COOKIE_SHIFT) - 1))
}
