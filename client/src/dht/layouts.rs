//! Directory layouts: fetched from every subvolume, cached, and repaired
//! when a copy is missing or the ranges leave holes or overlap.

use super::{Distribute, Errno};
use cairn_common::layout::{self, LayoutEntry};
use cairn_common::proto::{Fop, Reply};
use cairn_common::Gfid;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a complete layout is trusted before it is read again (a
/// fix-layout elsewhere changes it; a miss then refreshes it sooner).
const LAYOUT_TTL: Duration = Duration::from_secs(30);
/// The same while a rebalance rewrites layouts: its migration starts only
/// once every mount has stopped using a layout from before its fix-layout
/// (see `rebalance::LAYOUT_SETTLE`).
pub const LAYOUT_TTL_REBALANCING: Duration = Duration::from_secs(2);
const CACHE_LIMIT: usize = 1 << 16;

#[derive(Debug)]
pub struct DirLayout {
    pub entries: Vec<LayoutEntry>,
    /// Every file is where this layout says (or linked from there).
    pub authoritative: bool,
    fetched: Instant,
}

impl DirLayout {
    pub fn hashed(&self, name: &[u8]) -> Option<usize> {
        layout::find(&self.entries, layout::name_hash(name))
    }
}

#[derive(Default)]
pub struct LayoutCache {
    dirs: Mutex<HashMap<Gfid, Arc<DirLayout>>>,
    weights: Mutex<Option<Vec<u64>>>,
}

impl LayoutCache {
    pub fn get(&self, gfid: &Gfid, ttl: Duration) -> Option<Arc<DirLayout>> {
        let dirs = self.dirs.lock().expect("layouts poisoned");
        dirs.get(gfid).filter(|l| l.fetched.elapsed() < ttl).cloned()
    }

    /// Forgets every layout and the subvolumes' weights (the volume's
    /// shape changed).
    pub fn clear(&self) {
        self.dirs.lock().expect("layouts poisoned").clear();
        *self.weights.lock().expect("weights poisoned") = None;
    }

    fn put(&self, gfid: Gfid, l: Arc<DirLayout>) {
        let mut dirs = self.dirs.lock().expect("layouts poisoned");
        if dirs.len() >= CACHE_LIMIT {
            dirs.clear();
        }
        dirs.insert(gfid, l);
    }

    pub fn drop_dir(&self, gfid: &Gfid) {
        self.dirs.lock().expect("layouts poisoned").remove(gfid);
    }
}

/// A stable per-directory rotation, so small directories spread their first
/// ranges over all subvolumes.
fn rotation(gfid: &Gfid) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(&gfid.0) >> 32) as u32
}

impl Distribute {
    /// Relative capacities of the subvolumes (total size in MiB, as gluster
    /// weighs), asked once.
    async fn weights(&self) -> Result<Vec<u64>, Errno> {
        if let Some(w) = self.layouts.weights.lock().expect("weights poisoned").clone() {
            return Ok(w);
        }
        let mut w = Vec::with_capacity(self.kids().len());
        for r in self.everywhere(&Fop::Statfs).await {
            match r? {
                (Reply::Statfs(s), _) => w.push((s.blocks.saturating_mul(u64::from(s.frsize)) >> 20).max(1)),
                _ => return Err(Errno(libc::EIO)),
            }
        }
        *self.layouts.weights.lock().expect("weights poisoned") = Some(w.clone());
        Ok(w)
    }

    /// The layout a new directory gets.
    pub(super) async fn fresh_layout(&self, gfid: &Gfid) -> Result<Vec<LayoutEntry>, Errno> {
        self.layout_for(gfid, self.commit(), None).await
    }

    /// A layout of generation `commit` over today's subvolumes (weighted
    /// by size, drained ones left out). Given the directory's `old` layout
    /// and equal weights, ranges are handed out so that as many names as
    /// possible keep their subvolume (gluster's maximize-overlap).
    pub(super) async fn layout_for(
        &self,
        gfid: &Gfid,
        commit: u32,
        old: Option<&[LayoutEntry]>,
    ) -> Result<Vec<LayoutEntry>, Errno> {
        let kids = self.kids();
        let mut weights = if self.weighted.load(std::sync::atomic::Ordering::Relaxed) {
            self.weights().await?
        } else {
            vec![1; kids.len()]
        };
        if weights.len() != kids.len() {
            return Err(Errno(libc::EAGAIN));
        }
        let drained = self.decommissioned.read().expect("poisoned").clone();
        for (w, c) in weights.iter_mut().zip(kids.iter()) {
            if drained.contains(&c.id) {
                *w = 0;
            }
        }
        if weights.iter().all(|&w| w == 0) {
            return Err(Errno(libc::ENOSPC));
        }
        let mut entries = layout::compute(&weights, rotation(gfid), commit);
        if let Some(old) = old {
            let active: Vec<u64> = weights.iter().copied().filter(|&w| w > 0).collect();
            if old.len() == entries.len() && active.windows(2).all(|p| p[0] == p[1]) {
                layout::keep_overlap(old, &mut entries);
            }
        }
        Ok(entries)
    }

    /// Writes `entries` to every copy of the directory and caches it.
    pub(super) async fn store_layout(
        &self,
        gfid: Gfid,
        entries: Vec<LayoutEntry>,
        authoritative: bool,
    ) -> Arc<DirLayout> {
        let kids = self.kids();
        let writes = kids.iter().zip(&entries).map(|(c, e)| {
            c.layer.call(
                Fop::LayoutSet {
                    gfid,
                    entry: e.encode().to_vec(),
                },
                bytes::Bytes::new(),
            )
        });
        for (i, r) in crate::layer::join_all(writes).await.into_iter().enumerate() {
            if let Err(e) = r {
                tracing::warn!(dir = %gfid, subvolume = i, errno = e.0, "could not write a layout entry");
            }
        }
        let l = Arc::new(DirLayout {
            entries,
            authoritative,
            fetched: Instant::now(),
        });
        self.layouts.put(gfid, l.clone());
        l
    }

    /// The layout of directory `gfid`, read from every subvolume and
    /// repaired if it is incomplete.
    pub(super) async fn layout_of(&self, gfid: Gfid) -> Result<Arc<DirLayout>, Errno> {
        let ttl = if self.rebalancing.load(std::sync::atomic::Ordering::Relaxed) {
            LAYOUT_TTL_REBALANCING
        } else {
            LAYOUT_TTL
        };
        if let Some(l) = self.layouts.get(&gfid, ttl) {
            return Ok(l);
        }
        self.read_layout(gfid).await
    }

    /// Every subvolume's layout entry of a directory, as stored (`None`:
    /// none, or unreadable), and which subvolumes lack the directory or
    /// did not answer.
    pub(super) async fn raw_layout(&self, gfid: Gfid) -> (Vec<Option<LayoutEntry>>, Vec<usize>, bool) {
        let mut found = Vec::new();
        let mut unreachable = false;
        let mut missing_dir = Vec::new();
        for (i, r) in self.everywhere(&Fop::LayoutGet { gfid }).await.into_iter().enumerate() {
            match r {
                Ok((Reply::Xattr(bytes), _)) => found.push(LayoutEntry::decode(&bytes)),
                Ok(_) => found.push(None),
                Err(Errno(libc::ENODATA)) => found.push(None),
                Err(Errno(libc::ESTALE | libc::ENOENT)) => {
                    missing_dir.push(i);
                    found.push(None)
                }
                Err(_) => {
                    unreachable = true;
                    found.push(None)
                }
            }
        }
        (found, missing_dir, unreachable)
    }

    pub(super) async fn read_layout(&self, gfid: Gfid) -> Result<Arc<DirLayout>, Errno> {
        let (found, missing_dir, unreachable) = self.raw_layout(gfid).await;
        if missing_dir.len() == found.len() {
            return Err(Errno(libc::ESTALE));
        }
        if found.iter().all(Option::is_some) {
            let entries: Vec<LayoutEntry> = found.iter().flatten().copied().collect();
            if layout::is_complete(&entries) {
                let authoritative = entries[0].commit == self.commit();
                let l = Arc::new(DirLayout {
                    entries,
                    authoritative,
                    fetched: Instant::now(),
                });
                self.layouts.put(gfid, l.clone());
                return Ok(l);
            }
        }
        if unreachable || !missing_dir.is_empty() {
            // Work with what answered; the hole means "not reachable now".
            // Missing copies are made by the lookup that finds them missing.
            let entries = found
                .iter()
                .map(|e| e.unwrap_or(LayoutEntry { commit: 0, range: None }))
                .collect();
            return Ok(Arc::new(DirLayout {
                entries,
                authoritative: false,
                fetched: Instant::now(),
            }));
        }
        // Subvolumes added since the layout was written have no entry yet:
        // as in gluster, they take no new files here until a fix-layout,
        // and the files stay where the layout says.
        let present: Vec<LayoutEntry> = found.iter().flatten().copied().collect();
        if !present.is_empty() && layout::is_complete(&present) {
            let commit = present[0].commit;
            let entries: Vec<LayoutEntry> = found
                .iter()
                .map(|e| e.unwrap_or(LayoutEntry { commit, range: None }))
                .collect();
            let kids = self.kids();
            for (i, _) in found.iter().enumerate().filter(|(_, e)| e.is_none()) {
                let set = Fop::LayoutSet {
                    gfid,
                    entry: entries[i].encode().to_vec(),
                };
                if let Some(c) = kids.get(i) {
                    if let Err(e) = c.layer.call(set, bytes::Bytes::new()).await {
                        tracing::warn!(dir = %gfid, subvolume = i, errno = e.0, "could not write a layout entry");
                    }
                }
            }
            let l = Arc::new(DirLayout {
                authoritative: commit == self.commit(),
                entries,
                fetched: Instant::now(),
            });
            self.layouts.put(gfid, l.clone());
            return Ok(l);
        }
        // Every subvolume answered but the layout is missing or broken:
        // write a fresh one. If the copies that have entries agree with it,
        // only the missing ones change and files stay where they are.
        let fresh = self.fresh_layout(&gfid).await?;
        let consistent = found
            .iter()
            .zip(&fresh)
            .all(|(old, new)| old.is_none_or(|o| o.range == new.range && o.commit == new.commit));
        let untouched = found.iter().all(Option::is_none) && gfid.is_root();
        let authoritative = consistent && (untouched || found.iter().any(Option::is_some));
        let entries = if authoritative {
            fresh
        } else {
            // Files may sit anywhere: negative lookups must ask everyone
            // until a rebalance fixes the layout.
            fresh.into_iter().map(|e| LayoutEntry { commit: 0, ..e }).collect()
        };
        tracing::info!(dir = %gfid, authoritative, "repaired a directory layout");
        Ok(self.store_layout(gfid, entries, authoritative).await)
    }
}
