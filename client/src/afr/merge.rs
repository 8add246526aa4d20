//! A directory in entry split-brain — its replicas each changed names
//! while the other was away, so each blames the other and neither is a
//! source — heals name by name. Without a quorum promise (replica 2,
//! quorum off) that is a conservative merge, as gluster's: every name some
//! replica has is made on the replicas lacking it and nothing is removed.
//! Where quorum makes every acknowledged change reach a majority, the
//! holders of a name decide: a majority keeps it everywhere, fewer than a
//! majority even counting the replicas away means it was removed (or never
//! acknowledged) and it goes; anything in between waits for the replicas
//! away. gluster's merge would bring back names whose unlink was
//! acknowledged after two replicas failed in turn (the chaos checker found
//! it), and its merged listing served them meanwhile.
//! A name with different gfids on different replicas (a gfid split-brain)
//! answers EIO until a policy or the administrator picks the copy to keep
//! (`settle_gfid`): the other copies are kept beside it
//! (`cluster.split-brain-backup`) and replaced by the kept one.

use super::changelog::Kind;
use super::heal::heal_owner;
use super::resolve::Rule;
use super::{Policy, Replicate};
use crate::layer::Errno;
use cairn_common::proto::{Attr, DirEntry};
use cairn_common::Gfid;
use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::Ordering;

/// What becomes of a name that only some replicas of a directory in
/// entry split-brain hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NameFate {
    /// Made on the replicas lacking it.
    Spread,
    /// Removed from the replicas holding it.
    Remove,
    /// Undecidable until the replicas away answer.
    Unknown,
}

/// The fate of a name held by `holders` of the `answered` replicas (of
/// `n`), when every acknowledged change reached `majority` replicas (None:
/// no such promise, so the conservative merge).
pub(super) fn name_fate(holders: usize, answered: usize, n: usize, majority: Option<usize>) -> NameFate {
    let Some(q) = majority else {
        return NameFate::Spread;
    };
    if holders >= q {
        NameFate::Spread
    } else if holders + n.saturating_sub(answered) < q {
        NameFate::Remove
    } else {
        NameFate::Unknown
    }
}

/// The gfid that at least `majority` of the copies of a name carry, if
/// quorum makes a majority decisive: a create or rename that put another
/// gfid there and was acknowledged would have reached as many.
pub(super) fn majority_gfid(copies: &[Gfid], majority: Option<usize>) -> Option<Gfid> {
    let q = majority?;
    copies
        .iter()
        .copied()
        .find(|g| copies.iter().filter(|x| *x == g).count() >= q)
}

impl Replicate {
    /// Heals one name whose copies differ — missing on some replicas, or
    /// another gfid there — when a majority's copy decides it: under the
    /// name's entry lock, that copy is made on every other replica. A
    /// directory's changelog can be clean while a name differs (a create
    /// refused on all but one replica that could not be taken back, a
    /// heal cut short), and such a name waited for ever for an entry heal
    /// of its parent. Ok(true) if it now agrees where answered; Ok(false)
    /// if no majority decides it, or a copy is a directory (left to the
    /// administrator, as gfid split-brains of directories are).
    /// With `expect`, only when the majority's copy is that inode (the
    /// daemon's name for an inode may be stale after a rename: the name
    /// then belongs to another file, perhaps one being made right now).
    pub async fn heal_name(&self, parent: Gfid, name: &[u8], expect: Option<Gfid>) -> Result<bool, Errno> {
        let Some(majority) = self.name_majority() else {
            return Ok(false);
        };
        let owner = heal_owner();
        let locked = self.lock_entry(parent, name, owner, true, &self.all()).await;
        let result = async {
            let mut copies: Vec<(usize, Attr)> = Vec::new();
            let mut lacking = Vec::new();
            for &i in &locked {
                match self.lookup_on(i, parent, name).await? {
                    Some(a) => copies.push((i, a)),
                    None => lacking.push(i),
                }
            }
            let gfids: Vec<Gfid> = copies.iter().map(|(_, a)| a.gfid).collect();
            let Some(kept) = majority_gfid(&gfids, Some(majority)).filter(|g| expect.is_none_or(|e| e == *g)) else {
                return Ok(false);
            };
            let stale: Vec<&(usize, Attr)> = copies.iter().filter(|(_, a)| a.gfid != kept).collect();
            if stale.is_empty() && lacking.is_empty() {
                return Ok(true);
            }
            if copies.iter().any(|(_, a)| a.is_dir()) && !stale.is_empty() {
                return Ok(false);
            }
            let Some(&(source, a)) = copies.iter().find(|(_, a)| a.gfid == kept) else {
                return Ok(false);
            };
            let entry = DirEntry {
                cookie: 0,
                name: name.to_vec(),
                gfid: kept,
                kind: a.mode & libc::S_IFMT,
                attr: None,
                linkto: a.linkto,
            };
            for (i, old) in stale {
                self.remove_on(*i, parent, name, old.is_dir()).await?;
                self.recreate(parent, &entry, source, *i).await?;
            }
            for i in lacking {
                self.recreate(parent, &entry, source, i).await?;
            }
            tracing::info!(subvolume = %self.name, %parent, name = %String::from_utf8_lossy(name), "a name a majority holds is made on the other replicas");
            Ok(true)
        }
        .await;
        self.lock_entry(parent, name, owner, false, &locked).await;
        result
    }

    /// The majority every acknowledged change reached, if quorum gives one.
    pub(super) fn name_majority(&self) -> Option<usize> {
        self.quorum.lock().expect("quorum poisoned").majority(self.n())
    }

    /// The rule a favorite-child policy gives, if one is set.
    pub(super) fn policy_rule(&self) -> Option<Rule> {
        match self.policy() {
            Policy::None => None,
            p => Some(Rule::Policy(p)),
        }
    }

    /// Merges the entries of `dir` (the caller holds its self-heal lock
    /// as `owner`); Ok(true) when no name is left in conflict and the
    /// directory's entry blames are cleared.
    pub(super) async fn merge_entries_as(&self, dir: Gfid, owner: u64, rule: Option<Rule>) -> Result<bool, Errno> {
        let seen = self.counters(dir, &self.all()).await;
        let present: Vec<usize> = (0..self.n()).filter(|i| seen[*i].is_some()).collect();
        if present.len() < 2 {
            return Ok(false);
        }
        let mut lists: Vec<(usize, Vec<DirEntry>)> = Vec::new();
        for &i in &present {
            lists.push((i, self.list_all(i, dir).await?));
        }
        let names: BTreeSet<Vec<u8>> = lists
            .iter()
            .flat_map(|(_, l)| l.iter().map(|e| e.name.clone()))
            .collect();
        let majority = self.name_majority();
        let mut conflicts = 0;
        let mut waiting = 0;
        for name in names {
            let holders: Vec<(usize, &DirEntry)> = lists
                .iter()
                .filter_map(|(i, l)| l.iter().find(|e| e.name == name).map(|e| (*i, e)))
                .collect();
            let gfids: HashSet<Gfid> = holders.iter().map(|(_, e)| e.gfid).collect();
            if gfids.len() == 1 && holders.len() == present.len() {
                continue;
            }
            let fate = name_fate(holders.len(), present.len(), self.n(), majority);
            if gfids.len() == 1 && fate == NameFate::Unknown {
                tracing::info!(subvolume = %self.name, %dir, name = %String::from_utf8_lossy(&name), holders = holders.len(), "entry split-brain: a name's fate waits for the replicas away");
                conflicts += 1;
                continue;
            }
            let locked = self.lock_entry(dir, &name, owner, true, &present).await;
            let settled = async {
                if gfids.len() > 1 {
                    return match rule {
                        Some(rule) => self.resolve_gfid_locked(dir, &name, &present, rule).await,
                        None => Ok(false),
                    };
                }
                // Re-checked under the lock: the listings are older, and a
                // client may have made or removed the name meanwhile.
                let mut now = Vec::new();
                for &i in &present {
                    if let Some(a) = self.lookup_on(i, dir, &name).await? {
                        now.push((i, a));
                    }
                }
                let want = holders[0].1.gfid;
                if now.iter().any(|(_, a)| a.gfid != want) || name_fate(now.len(), present.len(), self.n(), majority) != fate
                {
                    return Ok(false);
                }
                if now.is_empty() {
                    return Ok(true);
                }
                if fate == NameFate::Remove {
                    for (i, a) in now {
                        self.remove_on(i, dir, &name, a.is_dir()).await?;
                    }
                    tracing::info!(subvolume = %self.name, %dir, name = %String::from_utf8_lossy(&name), "entry split-brain: removed a name fewer than a majority held");
                    return Ok(true);
                }
                let (source, e) = holders
                    .iter()
                    .find(|(h, _)| now.iter().any(|(i, _)| i == h))
                    .copied()
                    .unwrap_or(holders[0]);
                for &sink in present.iter().filter(|i| !now.iter().any(|(h, _)| h == *i)) {
                    self.recreate(dir, e, source, sink).await?;
                }
                tracing::info!(subvolume = %self.name, %dir, name = %String::from_utf8_lossy(&name), gfid = %want, source, "entry split-brain: made a name where it was missing");
                Ok(true)
            }
            .await;
            self.lock_entry(dir, &name, owner, false, &locked).await;
            match settled {
                Ok(true) => {}
                Ok(false) => conflicts += 1,
                // A name waiting for another heal (`link_held_file`): the
                // others go on, as one of them may be what it waits for.
                Err(Errno(libc::EAGAIN)) => waiting += 1,
                Err(e) => return Err(e),
            }
        }
        if conflicts > 0 {
            tracing::warn!(subvolume = %self.name, %dir, conflicts, "entry split-brain merged except names with different gfids (EIO until settled)");
            return Ok(false);
        }
        if waiting > 0 {
            tracing::debug!(subvolume = %self.name, %dir, waiting, "entry split-brain merged except names waiting for another heal");
            return Err(Errno(libc::EAGAIN));
        }
        self.clear_blame(dir, Kind::Entry, &present, &present, &seen).await;
        tracing::info!(subvolume = %self.name, %dir, "entry split-brain merged");
        Ok(true)
    }

    /// Settles a gfid split-brain of `name` in `parent` by `rule` (the
    /// CLI, or a mount's policy), then finishes the directory's merge.
    pub(super) async fn settle_gfid(&self, parent: Gfid, name: &[u8], rule: Rule) -> Result<bool, Errno> {
        let owner = heal_owner();
        let healers = self.lock_healing(parent, owner).await?;
        let present: Vec<usize> = healers.clone();
        let locked = self.lock_entry(parent, name, owner, true, &present).await;
        let settled = self.resolve_gfid_locked(parent, name, &present, rule).await;
        self.lock_entry(parent, name, owner, false, &locked).await;
        let merged = match settled {
            // The name is settled; names of the merge still waiting for
            // another heal are the daemon's to finish.
            Ok(true) => match self.merge_entries_as(parent, owner, None).await {
                Err(Errno(libc::EAGAIN)) => Ok(true),
                other => other.map(|_| true),
            },
            other => other,
        };
        self.unlock_healing(parent, owner, &healers).await;
        merged
    }

    /// Under the entry lock: keeps the copy of `name` that `rule` picks and
    /// replaces the others with it. Ok(false) if the rule picks no single
    /// copy, or a copy is a directory (left to the administrator).
    async fn resolve_gfid_locked(&self, dir: Gfid, name: &[u8], present: &[usize], rule: Rule) -> Result<bool, Errno> {
        let mut found: Vec<(usize, Attr)> = Vec::new();
        for &i in present {
            if let Some(a) = self.lookup_on(i, dir, name).await? {
                found.push((i, a));
            }
        }
        let gfids: HashSet<Gfid> = found.iter().map(|(_, a)| a.gfid).collect();
        if gfids.len() < 2 {
            return Ok(true);
        }
        if found.iter().any(|(_, a)| a.is_dir()) {
            tracing::warn!(subvolume = %self.name, %dir, name = %String::from_utf8_lossy(name), "gfid split-brain of a directory: not settled automatically");
            return Ok(false);
        }
        let chosen = self
            .choose(rule, &found)
            .and_then(|w| found.iter().find(|(i, _)| *i == w).copied());
        let Some((winner, kept)) = chosen else {
            tracing::warn!(subvolume = %self.name, %dir, name = %String::from_utf8_lossy(name), ?rule, "gfid split-brain: no single copy to keep");
            return Ok(false);
        };
        let losers: Vec<(usize, Attr)> = found.iter().copied().filter(|(_, a)| a.gfid != kept.gfid).collect();
        if self.backup.load(Ordering::Relaxed) {
            let mut kept_aside = HashSet::new();
            for (i, a) in losers.iter().filter(|(i, _)| !self.is_arbiter(*i)) {
                if kept_aside.insert(a.gfid) {
                    self.keep_copy(dir, name, a.gfid, *i).await?;
                }
            }
        }
        let entry = DirEntry {
            cookie: 0,
            name: name.to_vec(),
            gfid: kept.gfid,
            kind: kept.mode & libc::S_IFMT,
            attr: None,
            linkto: kept.linkto,
        };
        for (i, _) in &losers {
            self.remove_on(*i, dir, name, false).await?;
            self.recreate(dir, &entry, winner, *i).await?;
        }
        self.readable.lock().expect("readable poisoned").remove(&kept.gfid);
        tracing::warn!(subvolume = %self.name, %dir, name = %String::from_utf8_lossy(name), ?rule, kept = winner, "gfid split-brain resolved");
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Quorum;
    use super::{name_fate, NameFate};

    #[test]
    fn only_a_quorum_with_a_true_majority_decides_names() {
        assert_eq!(Quorum::Auto.majority(3), Some(2));
        assert_eq!(Quorum::Auto.majority(5), Some(3));
        // Half with the first brick is a quorum of an even set: no majority.
        assert_eq!(Quorum::Auto.majority(2), None);
        assert_eq!(Quorum::Auto.majority(4), None);
        assert_eq!(Quorum::Fixed(2).majority(2), Some(2));
        assert_eq!(Quorum::Fixed(1).majority(2), None);
        assert_eq!(Quorum::None.majority(3), None);
    }

    #[test]
    fn a_names_holders_decide_its_fate() {
        use NameFate::*;
        // No majority promise: gluster's conservative merge.
        assert_eq!(name_fate(1, 2, 2, None), Spread);
        // Replica 3, all answering: two keep it, one alone lost it.
        assert_eq!(name_fate(2, 3, 3, Some(2)), Spread);
        assert_eq!(name_fate(1, 3, 3, Some(2)), Remove);
        // One away: two holders are enough; one could be either (the one
        // away may hold it too, or have removed it with the other).
        assert_eq!(name_fate(2, 2, 3, Some(2)), Spread);
        assert_eq!(name_fate(1, 2, 3, Some(2)), Unknown);
        // Replica 5: one holder with two away could still be a majority's;
        // with one away it cannot.
        assert_eq!(name_fate(1, 3, 5, Some(3)), Unknown);
        assert_eq!(name_fate(1, 4, 5, Some(3)), Remove);
        assert_eq!(name_fate(2, 4, 5, Some(3)), Unknown);
        assert_eq!(name_fate(1, 5, 5, Some(3)), Remove);
        assert_eq!(name_fate(2, 5, 5, Some(3)), Remove);
    }
}
