//! Free space per subvolume, so a full subvolume sends new files elsewhere
//! (with a link file on the hashed one) instead of failing with ENOSPC
//! while others have room — gluster's `cluster.min-free-disk` (default 10 %).

use super::{Distribute, Errno};
use cairn_common::proto::{Fop, Reply};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How stale the free-space figures may be.
const REFRESH: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct SpaceWatch {
    /// When measured, and each subvolume's free space (None: unknown).
    seen: Mutex<Option<(Instant, Vec<Option<Free>>)>>,
}

/// One subvolume's free space.
#[derive(Clone, Copy, Debug)]
struct Free {
    permille: u64,
    bytes: u64,
}

impl SpaceWatch {
    pub fn clear(&self) {
        *self.seen.lock().expect("space poisoned") = None;
    }
}

impl Distribute {
    async fn free_space(&self) -> Vec<Option<Free>> {
        if let Some((at, v)) = self.space.seen.lock().expect("space poisoned").as_ref() {
            if at.elapsed() < REFRESH {
                return v.clone();
            }
        }
        let v: Vec<Option<Free>> = self
            .everywhere(&Fop::Statfs)
            .await
            .into_iter()
            .map(|r| match r {
                Ok((Reply::Statfs(s), _)) if s.blocks > 0 => Some(Free {
                    permille: s.bavail.saturating_mul(1000) / s.blocks,
                    bytes: s.bavail.saturating_mul(u64::from(s.frsize.max(1))),
                }),
                _ => None,
            })
            .collect();
        *self.space.seen.lock().expect("space poisoned") = Some((Instant::now(), v.clone()));
        v
    }

    async fn free_permille(&self) -> Vec<Option<u64>> {
        self.free_space().await.iter().map(|f| f.map(|f| f.permille)).collect()
    }

    /// The free bytes and share (‰) of the fullest subvolume, at most
    /// REFRESH old; None if no subvolume answered.
    pub async fn least_free(&self) -> Option<(u64, u64)> {
        self.free_space()
            .await
            .into_iter()
            .flatten()
            .map(|f| (f.bytes, f.permille))
            .min_by_key(|(bytes, _)| *bytes)
    }

    /// Where a new file hashed to `hashed` should go: there if it has room
    /// (or nobody has more), else the subvolume with the most free space.
    pub(super) async fn placement_for_new_file(&self, hashed: usize) -> Result<usize, Errno> {
        let free = self.free_permille().await;
        let min_permille = self.min_free_percent.load(std::sync::atomic::Ordering::Relaxed) * 10;
        let has_room = |i: usize| free.get(i).copied().flatten().is_none_or(|p| p >= min_permille);
        if has_room(hashed) {
            return Ok(hashed);
        }
        let kids = self.kids();
        let drained = self.decommissioned.read().expect("poisoned").clone();
        let best = (0..kids.len())
            .filter(|&i| i != hashed && has_room(i) && !drained.contains(&kids[i].id))
            .max_by_key(|&i| free[i].unwrap_or(0));
        if let Some(b) = best {
            tracing::debug!(
                hashed,
                chosen = b,
                "hashed subvolume is short of space: placing the file elsewhere"
            );
        }
        Ok(best.unwrap_or(hashed))
    }
}
