//! What the self-heal daemon (in `cairnd`) asks of a replica set: heal one
//! inode its brick's heal index names, whatever the mount-side heal options
//! say, and tell which replicas answer now (a replica that comes back is
//! the daemon's cue to heal).

use super::changelog::Kind;
use super::Replicate;
use crate::layer::Errno;
use bytes::Bytes;
use cairn_common::proto::{Attr, Fop, Reply};
use cairn_common::Gfid;
use std::sync::atomic::Ordering;

/// What healing one index entry came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Healed {
    /// Replicas that disagreed agree now.
    Done,
    /// Nothing was behind (a stale index entry, or a change that finished).
    Clean,
    /// Replicas blame each other: left for `volume heal … split-brain` or
    /// the favorite-child policy.
    SplitBrain,
    /// No replica has the inode any more.
    Gone,
    /// Some replica is still behind (it went away again, or a change is in
    /// flight): a later pass retries.
    Pending,
}

impl Replicate {
    /// Marks this layer as the self-heal daemon's: it heals every kind of
    /// change, since the `cluster.*-self-heal` options govern mounts only
    /// (as in gluster).
    pub fn serve_self_heal_daemon(&self) {
        self.daemon.store(true, Ordering::Relaxed);
    }

    /// Heals `gfid`: its data and metadata, and a directory's entries,
    /// each under the locks writers take.
    pub async fn heal_index_entry(&self, gfid: Gfid) -> Result<Healed, Errno> {
        self.heal_index_entry_named(gfid, None).await
    }

    /// As `heal_index_entry`, with the name the inode was last seen under
    /// on the indexing brick, if it knows: a replica lacking the inode, or
    /// holding another under that name, gets it from the name's heal when
    /// its parent's changelog has nothing to heal.
    pub async fn heal_index_entry_named(&self, gfid: Gfid, seen_as: Option<(Gfid, Vec<u8>)>) -> Result<Healed, Errno> {
        let Some((mut attr, mut missing)) = self.find_inode(gfid).await? else {
            return Ok(Healed::Gone);
        };
        if let (true, Some((parent, name))) = (missing, &seen_as) {
            if self.heal_name(*parent, name, Some(gfid)).await.unwrap_or(false) {
                match self.find_inode(gfid).await? {
                    Some(found) => (attr, missing) = found,
                    None => return Ok(Healed::Gone),
                }
            }
        }
        let is_dir = attr.is_dir();
        let before = self.counters(gfid, &self.all()).await;
        if !missing && before.iter().all(|c| c.as_ref().is_some_and(all_zero)) {
            return Ok(Healed::Clean);
        }
        if self.split_in(&before, is_dir) {
            return Ok(Healed::SplitBrain);
        }
        self.heal_inode(gfid, is_dir).await?;
        if is_dir {
            self.heal_entries(gfid).await?;
        }
        let after = self.counters(gfid, &self.all()).await;
        // A replica lacking the inode itself gets it from its parent's
        // entry heal (the parent is in a brick's index too); until then
        // this entry stays pending.
        if missing || after.iter().any(Option::is_none) {
            tracing::debug!(subvolume = %self.name, %gfid, missing, ?after, "still pending");
            return Ok(Healed::Pending);
        }
        if after.iter().flatten().all(all_zero) {
            Ok(Healed::Done)
        } else if self.split_in(&after, is_dir) || is_dir && self.judge(&after, Kind::Entry).split_brain {
            Ok(Healed::SplitBrain)
        } else {
            tracing::debug!(subvolume = %self.name, %gfid, ?after, "still pending");
            Ok(Healed::Pending)
        }
    }

    /// The inode's attributes from some replica that has it, and whether
    /// some answering replica lacks it; None when no replica has it and
    /// all answered. ENOTCONN when none has it and some did not answer.
    async fn find_inode(&self, gfid: Gfid) -> Result<Option<(Attr, bool)>, Errno> {
        let replies = self
            .on_each(&self.all(), |_| Some((Fop::GetAttr { gfid }, Bytes::new())))
            .await;
        let mut found = None;
        let mut missing = false;
        let mut silent = false;
        for (_, r) in replies {
            match r {
                Ok((Reply::Attr(a), _)) | Ok((Reply::Entry(a), _)) => {
                    found.get_or_insert(a);
                }
                Err(Errno(libc::ENOENT)) | Err(Errno(libc::ESTALE)) => missing = true,
                _ => silent = true,
            }
        }
        match found {
            Some(a) => Ok(Some((a, missing))),
            None if silent => Err(Errno(libc::ENOTCONN)),
            None => Ok(None),
        }
    }

    /// Do these counters make the inode a split-brain?
    fn split_in(&self, counters: &[Option<super::changelog::Counters>], is_dir: bool) -> bool {
        // A directory's entry split-brain is merged by its entry heal; only
        // names left in conflict keep it in split-brain afterwards.
        let kinds: &[Kind] = if is_dir {
            &[Kind::Metadata]
        } else {
            &[Kind::Data, Kind::Metadata]
        };
        kinds.iter().any(|k| self.judge(counters, *k).split_brain)
    }

    /// `volume heal VOL full`: walks the set's whole namespace and heals
    /// every inode, including differences no index recorded (a brick
    /// whose disk was replaced and emptied). A replica lacking names that
    /// another replica of the directory has all of is blamed for them
    /// first, so entry heal recreates them there. Names that differ both
    /// ways with no blame are left alone: without a changelog nothing says
    /// which side removed what. `each` hears every inode's outcome.
    pub async fn heal_tree(&self, mut each: impl FnMut(Healed)) {
        let mut dirs = vec![Gfid::ROOT];
        while let Some(dir) = dirs.pop() {
            self.blame_missing_names(dir).await;
            each(self.heal_index_entry(dir).await.unwrap_or(Healed::Pending));
            let Some(entries) = self.list_from_any(dir).await else {
                continue;
            };
            for e in entries {
                if e.kind == libc::S_IFDIR {
                    dirs.push(e.gfid);
                } else {
                    each(self.heal_index_entry(e.gfid).await.unwrap_or(Healed::Pending));
                }
            }
        }
    }

    async fn list_from_any(&self, dir: Gfid) -> Option<Vec<cairn_common::proto::DirEntry>> {
        for i in self.all() {
            if let Ok(list) = self.list_all(i, dir).await {
                return Some(list);
            }
        }
        None
    }

    async fn blame_missing_names(&self, dir: Gfid) {
        let mut lists = Vec::new();
        for i in self.all() {
            lists.push(self.list_all(i, dir).await.ok());
        }
        let names = |i: usize| -> std::collections::BTreeSet<Vec<u8>> {
            lists[i].iter().flatten().map(|e| e.name.clone()).collect()
        };
        let union: std::collections::BTreeSet<Vec<u8>> = (0..self.n()).flat_map(names).collect();
        let complete: Vec<usize> = (0..self.n())
            .filter(|&i| lists[i].is_some() && names(i) == union)
            .collect();
        let short: Vec<usize> = (0..self.n())
            .filter(|&i| lists[i].is_some() && names(i) != union)
            .collect();
        if short.is_empty() {
            return;
        }
        if complete.is_empty() {
            tracing::warn!(subvolume = %self.name, %dir, "replicas list different names with no changelog to settle it; left alone");
            return;
        }
        for &c in &complete {
            let deltas = short
                .iter()
                .map(|&i| (self.blame_names[i].clone(), Kind::Entry.delta(1)))
                .collect();
            let _ = self.on(c, Fop::Xattrop { gfid: dir, deltas }, Bytes::new()).await;
        }
        tracing::info!(subvolume = %self.name, %dir, missing_on = ?short, "full heal: names missing on some replicas");
    }

    /// Asks each replica something cheap: true where it answered. A
    /// replica that was down is re-dialled by the asking.
    pub async fn probe(&self) -> Vec<bool> {
        self.on_each(&self.all(), |_| Some((Fop::Statfs, Bytes::new())))
            .await
            .into_iter()
            .map(|(_, r)| r.is_ok())
            .collect()
    }

    /// Bytes of file data copied by heals so far (this layer's).
    pub fn healed_bytes(&self) -> u64 {
        self.healed_bytes.load(Ordering::Relaxed)
    }

    /// Replicas in the set.
    pub fn children_count(&self) -> usize {
        self.n()
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

fn all_zero(c: &super::changelog::Counters) -> bool {
    c.iter().all(|(_, v)| *v == [0; 3])
}
