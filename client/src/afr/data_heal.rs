//! Data heal: makes the sinks' bytes the source's. Both sides checksum
//! their 128 KiB blocks and only blocks that differ cross the network
//! (`cluster.data-self-heal-algorithm diff`; `full` skips the sinks'
//! checksums and sends every block). A block of zeros on the source
//! becomes a hole on the sink, so sparse files stay sparse.
//!
//! A heal goes through the file one window at a time, each under the
//! inode lock writers take, and lets go between windows: an application
//! writing the file waits for at most one window's copy, not the whole
//! heal. Writes that land between windows reach every replica (the sink
//! included) and mark their own changelog, so the blame seen when the heal
//! began is exactly what it clears at the end.

use super::changelog::{Counters, Kind};
use super::Replicate;
use crate::layer::Errno;
use bytes::Bytes;
use cairn_common::proto::{Fop, Reply, SetAttr, TimeSet, CHECKSUM_BLOCK};
use cairn_common::Gfid;
use std::sync::atomic::Ordering;

/// Bytes healed under one hold of the inode lock.
const WINDOW: u64 = 16 << 20;
/// Most bytes one read or write of a heal carries.
pub(super) const RUN: u64 = 1 << 20;

/// What the locked look at a file decided: copy `source`'s data over the
/// sinks, then clear the blame seen then.
pub(super) struct DataPlan {
    pub sources: Vec<usize>,
    pub sinks: Vec<usize>,
    pub seen: Vec<Option<Counters>>,
}

/// Open handles on the source and the sinks, for one heal.
struct Handles {
    source: (usize, u64),
    sinks: Vec<(usize, u64)>,
}

impl Replicate {
    /// Heals a file's data window by window (the inode lock is not held on
    /// entry; it is taken for each window; the caller holds the self-heal
    /// lock throughout).
    pub(super) async fn heal_data(&self, gfid: Gfid, plan: DataPlan, owner: u64) -> Result<(), Errno> {
        let source = plan.sources[0];
        let sinks: Vec<usize> = plan.sinks.iter().copied().filter(|s| !self.is_arbiter(*s)).collect();
        let handles = self.open_for_heal(gfid, source, &sinks).await?;
        let mut members: Vec<usize> = sinks.iter().copied().chain([source]).collect();
        members.sort_unstable();
        let mut offset = 0;
        let result = loop {
            let locked = self.lock_inode(gfid, owner, true, &members).await;
            let step = async {
                if locked.len() != members.len() {
                    return Err(Errno(libc::ENOTCONN));
                }
                // Still the source? A write it missed since (it went away
                // and came back) would make this copy undo that write.
                let now = self.judge(&self.counters(gfid, &members).await, Kind::Data);
                if now.split_brain || !now.sources.contains(&source) {
                    return Err(Errno(libc::EAGAIN));
                }
                let size = self.attr_on(source, gfid).await?.size;
                if offset == 0 || offset >= size {
                    self.resize_sinks(&handles, gfid, size).await?;
                }
                if offset >= size {
                    self.finish_data_heal(&handles, gfid).await?;
                    self.clear_blame(gfid, Kind::Data, &plan.sources, &plan.sinks, &plan.seen)
                        .await;
                    return Ok(true);
                }
                let len = WINDOW.min(size - offset);
                self.copy_window(&handles, offset, len).await?;
                offset += len;
                Ok(false)
            }
            .await;
            self.lock_inode(gfid, owner, false, &locked).await;
            match step {
                Ok(true) => break Ok(()),
                Ok(false) => {}
                Err(e) => break Err(e),
            }
        };
        self.close_heal_handles(&handles).await;
        if result.is_ok() {
            tracing::info!(subvolume = %self.name, %gfid, from = source, to = ?sinks, "healed data");
        }
        result
    }

    /// Makes `sink`'s data `source`'s in one go, under a lock the caller
    /// holds (split-brain resolution).
    pub(super) async fn copy_data(&self, gfid: Gfid, source: usize, sink: usize) -> Result<(), Errno> {
        let handles = self.open_for_heal(gfid, source, &[sink]).await?;
        let result = async {
            let size = self.attr_on(source, gfid).await?.size;
            self.resize_sinks(&handles, gfid, size).await?;
            let mut offset = 0;
            while offset < size {
                let len = WINDOW.min(size - offset);
                self.copy_window(&handles, offset, len).await?;
                offset += len;
            }
            self.finish_data_heal(&handles, gfid).await
        }
        .await;
        self.close_heal_handles(&handles).await;
        result
    }

    async fn open_for_heal(&self, gfid: Gfid, source: usize, sinks: &[usize]) -> Result<Handles, Errno> {
        let from = self.open_on(source, gfid, libc::O_RDONLY).await?;
        let mut handles = Handles {
            source: (source, from),
            sinks: Vec::new(),
        };
        for &sink in sinks {
            // Read and write: its blocks are checksummed too.
            match self.open_on(sink, gfid, libc::O_RDWR).await {
                Ok(fh) => handles.sinks.push((sink, fh)),
                Err(e) => {
                    self.close_heal_handles(&handles).await;
                    return Err(e);
                }
            }
        }
        Ok(handles)
    }

    async fn close_heal_handles(&self, h: &Handles) {
        for &(i, fh) in h.sinks.iter().chain([&h.source]) {
            let _ = self.on(i, Fop::Release { fh }, Bytes::new()).await;
        }
    }

    async fn resize_sinks(&self, h: &Handles, gfid: Gfid, size: u64) -> Result<(), Errno> {
        for &(sink, fh) in &h.sinks {
            let set = SetAttr {
                size: Some(size),
                ..SetAttr::default()
            };
            self.on(
                sink,
                Fop::SetAttr {
                    gfid,
                    fh: Some(fh),
                    set,
                },
                Bytes::new(),
            )
            .await?;
        }
        Ok(())
    }

    /// Flushes the sinks and gives them the source's times back (the heal's
    /// writes moved them; the lock keeps them from changing meanwhile).
    async fn finish_data_heal(&self, h: &Handles, gfid: Gfid) -> Result<(), Errno> {
        let attr = self.attr_on(h.source.0, gfid).await?;
        for &(sink, fh) in &h.sinks {
            self.on(sink, Fop::Fsync { fh, datasync: false }, Bytes::new()).await?;
            let set = SetAttr {
                atime: Some(TimeSet::At(attr.atime)),
                mtime: Some(TimeSet::At(attr.mtime)),
                ..SetAttr::default()
            };
            self.on(sink, Fop::SetAttr { gfid, fh: None, set }, Bytes::new())
                .await?;
        }
        Ok(())
    }

    async fn checksums(&self, i: usize, fh: u64, offset: u64, len: u64) -> Result<Vec<Option<u64>>, Errno> {
        match self
            .on(
                i,
                Fop::Checksum {
                    fh,
                    offset,
                    len: len as u32,
                },
                Bytes::new(),
            )
            .await?
        {
            (Reply::Checksums(sums), _) => Ok(sums),
            _ => Err(Errno(libc::EIO)),
        }
    }

    /// Brings `[offset, offset + len)` of every sink to the source's bytes.
    async fn copy_window(&self, h: &Handles, offset: u64, len: u64) -> Result<(), Errno> {
        let block = u64::from(CHECKSUM_BLOCK);
        let blocks = len.div_ceil(block) as usize;
        let (source, from) = h.source;
        let want = self.checksums(source, from, offset, len).await?;
        if want.len() != blocks {
            // The source is shorter than it said: a truncate raced us,
            // which the lock rules out; refuse rather than guess.
            return Err(Errno(libc::EIO));
        }
        // Per sink, per block: write it, punch it, or leave it.
        let mut plans: Vec<Vec<BlockAction>> = Vec::new();
        for &(sink, fh) in &h.sinks {
            let have = if self.full_data_heal.load(Ordering::Relaxed) {
                vec![Unknown; blocks]
            } else {
                let sums = self.checksums(sink, fh, offset, len).await?;
                (0..blocks)
                    .map(|k| sums.get(k).map_or(Unknown, |s| Known(*s)))
                    .collect()
            };
            plans.push(
                want.iter()
                    .zip(have)
                    .map(|(w, h)| match (w, h) {
                        (None, Known(None)) => BlockAction::Keep,
                        (Some(a), Known(Some(b))) if *a == b => BlockAction::Keep,
                        (None, _) => BlockAction::Punch,
                        (Some(_), _) => BlockAction::Write,
                    })
                    .collect(),
            );
        }
        let span = |k: usize| {
            let start = offset + k as u64 * block;
            (start, block.min(offset + len - start))
        };
        // Runs of blocks some sink needs written: read each once.
        let per_run = (RUN / block) as usize;
        let mut k = 0;
        while k < blocks {
            if !plans.iter().any(|p| p[k] == BlockAction::Write) {
                k += 1;
                continue;
            }
            let first = k;
            while k < blocks && k - first < per_run && plans.iter().any(|p| p[k] == BlockAction::Write) {
                k += 1;
            }
            let (start, _) = span(first);
            let (last_start, last_len) = span(k - 1);
            let size = (last_start + last_len - start) as u32;
            let (_, data) = self
                .on(
                    source,
                    Fop::Read {
                        fh: from,
                        offset: start,
                        size,
                    },
                    Bytes::new(),
                )
                .await?;
            if data.len() != size as usize {
                return Err(Errno(libc::EIO));
            }
            for (p, &(sink, fh)) in plans.iter().zip(&h.sinks) {
                for (from_block, to_block) in runs(&p[..k], BlockAction::Write, first) {
                    let (a, _) = span(from_block);
                    let (b, b_len) = span(to_block - 1);
                    let slice = data.slice((a - start) as usize..(b + b_len - start) as usize);
                    let n = slice.len() as u32;
                    self.on(sink, Fop::Write { fh, offset: a, len: n }, slice).await?;
                    self.healed_bytes.fetch_add(u64::from(n), Ordering::Relaxed);
                }
            }
        }
        for (p, &(sink, fh)) in plans.iter().zip(&h.sinks) {
            for (from_block, to_block) in runs(p, BlockAction::Punch, 0) {
                let (a, _) = span(from_block);
                let (b, b_len) = span(to_block - 1);
                self.punch(sink, fh, a, b + b_len - a).await?;
            }
        }
        Ok(())
    }

    /// Makes `[offset, offset + len)` of a sink zeros: a hole where its
    /// filesystem can punch one, written zeros where it cannot.
    async fn punch(&self, sink: usize, fh: u64, offset: u64, len: u64) -> Result<(), Errno> {
        let hole = Fop::Fallocate {
            fh,
            mode: libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        };
        match self.on(sink, hole, Bytes::new()).await {
            Err(Errno(libc::EOPNOTSUPP)) => {}
            other => return other.map(|_| ()),
        }
        let mut at = offset;
        while at < offset + len {
            let n = RUN.min(offset + len - at) as u32;
            let zeros = Bytes::from(vec![0u8; n as usize]);
            self.on(sink, Fop::Write { fh, offset: at, len: n }, zeros).await?;
            at += u64::from(n);
        }
        Ok(())
    }
}

/// A sink block's checksum, when it was asked for.
#[derive(Clone, Copy)]
enum SinkBlock {
    Unknown,
    Known(Option<u64>),
}
use SinkBlock::{Known, Unknown};

/// The runs `[start, end)` of consecutive blocks in `plan[from..]` that
/// call for `action`.
fn runs(plan: &[BlockAction], action: BlockAction, from: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut j = from;
    while j < plan.len() {
        if plan[j] != action {
            j += 1;
            continue;
        }
        let start = j;
        while j < plan.len() && plan[j] == action {
            j += 1;
        }
        out.push((start, j));
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum BlockAction {
    Keep,
    Write,
    Punch,
}

#[cfg(test)]
mod tests {
    use super::*;
    use BlockAction::{Keep, Punch, Write};

    #[test]
    fn runs_group_consecutive_blocks() {
        let plan = [Write, Write, Keep, Punch, Write, Punch, Punch];
        assert_eq!(runs(&plan, Write, 0), vec![(0, 2), (4, 5)]);
        assert_eq!(runs(&plan, Punch, 0), vec![(3, 4), (5, 7)]);
        assert_eq!(runs(&plan[..5], Write, 1), vec![(1, 2), (4, 5)]);
        assert_eq!(runs(&plan, Keep, 3), vec![]);
    }
}
