//! Settling a split-brain: pick the copy to keep (by policy), keep the
//! others beside the file when `cluster.split-brain-backup` is on, make
//! every copy the kept one's, and clear the blames both ways.

use super::changelog::Kind;
use super::{Policy, Replicate};
use uuid::Uuid;

/// Which copy a resolution keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Chosen by a policy (size, mtime, ctime, majority).
    Policy(Policy),
    /// The copy on this brick.
    Brick(Uuid),
}
use crate::layer::Errno;
use bytes::Bytes;
use cairn_common::proto::{Attr, Creds, Fop, Reply};
use cairn_common::Gfid;
use std::sync::atomic::Ordering;

impl Replicate {
    /// Resolves the split-brain of `name` in `parent` (inode `gfid`) among
    /// the `present` children by `policy`; EIO if the policy names no
    /// single winner (equal sizes, equal times, no majority).
    pub(super) async fn resolve(
        &self,
        parent: Gfid,
        name: &[u8],
        gfid: Gfid,
        present: &[usize],
        rule: Rule,
    ) -> Result<bool, Errno> {
        let owner = super::heal::heal_owner();
        let healers = self.lock_healing(gfid, owner).await?;
        let locked = self.lock_inode(gfid, owner, true, present).await;
        // A policy's copies and removals are the mount's own work, even
        // when a user's lookup triggered them: never squashed.
        let result = crate::caller::internal(self.resolve_locked(parent, name, gfid, &locked, rule)).await;
        self.lock_inode(gfid, owner, false, &locked).await;
        self.unlock_healing(gfid, owner, &healers).await;
        result
    }

    /// The administrator's resolution of `name` in `parent` (`volume heal
    /// VOL split-brain …`): Ok(false) if the file is not in split-brain
    /// here, ENOENT if this replica set does not hold it.
    pub async fn settle_split_brain(&self, parent: Gfid, name: &[u8], rule: Rule) -> Result<bool, Errno> {
        let mut present = Vec::new();
        let mut gfid = None;
        for i in self.all() {
            if let Ok((Reply::Entry(a), _)) = self
                .on(
                    i,
                    Fop::Lookup {
                        parent,
                        name: name.to_vec(),
                    },
                    Bytes::new(),
                )
                .await
            {
                if gfid.is_some_and(|g| g != a.gfid) {
                    // A gfid split-brain: one copy keeps the name.
                    return self.settle_gfid(parent, name, rule).await;
                }
                if a.linkto.is_some() {
                    return Ok(false);
                }
                gfid = Some(a.gfid);
                present.push(i);
            }
        }
        let gfid = gfid.ok_or(Errno(libc::ENOENT))?;
        self.resolve(parent, name, gfid, &present, rule).await
    }

    async fn resolve_locked(
        &self,
        parent: Gfid,
        name: &[u8],
        gfid: Gfid,
        locked: &[usize],
        rule: Rule,
    ) -> Result<bool, Errno> {
        let counters = self.counters(gfid, locked).await;
        let data = self.judge(&counters, Kind::Data);
        let metadata = self.judge(&counters, Kind::Metadata);
        if !data.split_brain && !metadata.split_brain {
            return Ok(false);
        }
        let mut attrs: Vec<(usize, Attr)> = Vec::new();
        for &i in locked.iter().filter(|i| !self.is_arbiter(**i)) {
            if let Ok(a) = self.attr_on(i, gfid).await {
                attrs.push((i, a));
            }
        }
        let winner = self.choose(rule, &attrs).ok_or_else(|| {
            tracing::warn!(subvolume = %self.name, %gfid, ?rule, "split-brain: no single copy to keep");
            Errno(libc::EIO)
        })?;
        let losers: Vec<usize> = locked.iter().copied().filter(|i| *i != winner).collect();
        if data.split_brain && self.backup.load(Ordering::Relaxed) {
            for &l in losers.iter().filter(|l| !self.is_arbiter(**l)) {
                self.keep_copy(parent, name, gfid, l).await?;
            }
        }
        for &l in &losers {
            if data.split_brain && !self.is_arbiter(l) {
                self.copy_data(gfid, winner, l).await?;
            }
            if metadata.split_brain {
                self.copy_metadata(gfid, winner, l).await?;
            }
        }
        for kind in [Kind::Data, Kind::Metadata] {
            self.clear_blame(gfid, kind, &[winner], &losers, &counters).await;
        }
        self.readable.lock().expect("readable poisoned").remove(&gfid);
        tracing::warn!(subvolume = %self.name, %gfid, ?rule, kept = winner, "split-brain resolved");
        Ok(true)
    }

    /// Copies child `from`'s version of the file to a new file beside it,
    /// `NAME.split-brain.<child>.<unix time>`, created on every replica.
    pub(super) async fn keep_copy(&self, parent: Gfid, name: &[u8], gfid: Gfid, from: usize) -> Result<(), Errno> {
        let a = self.attr_on(from, gfid).await?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut backup = name.to_vec();
        backup.extend_from_slice(format!(".split-brain.{from}.{stamp}").as_bytes());
        let created = self
            .transact(
                Fop::Create {
                    parent,
                    name: backup.clone(),
                    gfid: Gfid::random(),
                    mode: a.mode & 0o7777,
                    umask: 0,
                    flags: libc::O_WRONLY | libc::O_EXCL,
                    creds: Creds { uid: a.uid, gid: a.gid },
                },
                Bytes::new(),
            )
            .await?;
        let Reply::Created { fh: ours, .. } = created.0 else {
            return Err(Errno(libc::EIO));
        };
        let src = self.open_on(from, gfid, libc::O_RDONLY).await?;
        let mut offset = 0;
        let result = async {
            while offset < a.size {
                let want = super::data_heal::RUN.min(a.size - offset) as u32;
                let (_, chunk) = self
                    .on(
                        from,
                        Fop::Read {
                            fh: src,
                            offset,
                            size: want,
                        },
                        Bytes::new(),
                    )
                    .await?;
                if chunk.is_empty() {
                    break;
                }
                let len = chunk.len() as u32;
                self.transact(Fop::Write { fh: ours, offset, len }, chunk).await?;
                offset += u64::from(len);
            }
            Ok::<(), Errno>(())
        }
        .await;
        let _ = self.on(from, Fop::Release { fh: src }, Bytes::new()).await;
        let _ = self.dispatch_release(ours).await;
        result?;
        tracing::warn!(subvolume = %self.name, %gfid, backup = %String::from_utf8_lossy(&backup), "kept the losing copy of a split-brain");
        Ok(())
    }
}

impl Replicate {
    /// The child whose copy `rule` keeps among `copies`, if it names one.
    pub(super) fn choose(&self, rule: Rule, copies: &[(usize, Attr)]) -> Option<usize> {
        match rule {
            Rule::Policy(policy) => {
                let data: Vec<(usize, Attr)> = copies.iter().copied().filter(|(i, _)| !self.is_arbiter(*i)).collect();
                pick(&data, policy, self.n())
            }
            Rule::Brick(id) => self
                .brick_ids
                .iter()
                .position(|b| *b == id)
                .filter(|i| copies.iter().any(|(j, _)| j == i)),
        }
    }
}

/// The copy a policy keeps, if it names exactly one.
fn pick(attrs: &[(usize, Attr)], policy: Policy, n: usize) -> Option<usize> {
    let best_by = |key: &dyn Fn(&Attr) -> (i64, i64)| {
        let top = attrs.iter().map(|(_, a)| key(a)).max()?;
        let mut winners = attrs.iter().filter(|(_, a)| key(a) == top);
        let first = winners.next()?;
        winners.next().is_none().then_some(first.0)
    };
    match policy {
        Policy::None => None,
        Policy::Size => best_by(&|a| (a.size as i64, 0)),
        Policy::Mtime => best_by(&|a| (a.mtime.sec, i64::from(a.mtime.nsec))),
        Policy::Ctime => best_by(&|a| (a.ctime.sec, i64::from(a.ctime.nsec))),
        Policy::Majority => attrs
            .iter()
            .find(|(_, a)| {
                attrs
                    .iter()
                    .filter(|(_, b)| b.size == a.size && b.mtime == a.mtime)
                    .count()
                    * 2
                    > n
            })
            .map(|(i, _)| *i),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_common::proto::Timespec;

    fn copy(size: u64, mtime: i64, ctime: i64) -> Attr {
        let t = |sec| Timespec { sec, nsec: 0 };
        Attr {
            mtime: t(mtime),
            ctime: t(ctime),
            ..crate::layer::test_file(Gfid::ROOT, size)
        }
    }

    #[test]
    fn each_policy_names_one_copy_or_none() {
        let copies = [(0, copy(10, 5, 9)), (1, copy(20, 7, 8)), (2, copy(10, 5, 9))];
        assert_eq!(pick(&copies, Policy::Size, 3), Some(1));
        assert_eq!(pick(&copies, Policy::Mtime, 3), Some(1));
        // Copies 0 and 2 share the latest ctime: no single winner.
        assert_eq!(pick(&copies, Policy::Ctime, 3), None);
        // Copies 0 and 2 agree on size and mtime: two of three.
        assert_eq!(pick(&copies, Policy::Majority, 3), Some(0));
        assert_eq!(
            pick(&copies[..2], Policy::Majority, 2),
            None,
            "one of two is no majority"
        );
        assert_eq!(pick(&copies, Policy::None, 3), None);
        let tied = [(0, copy(10, 5, 5)), (1, copy(10, 5, 5))];
        assert_eq!(pick(&tied, Policy::Size, 2), None, "equal sizes name nobody");
    }
}
