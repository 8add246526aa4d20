//! Heal on access: a lookup that finds a replica behind a clear source
//! starts a background heal of that inode (data and metadata) or directory
//! (its entries), under the same locks writers take. Blames are cleared by
//! subtracting exactly what was seen, so a change that lands during the
//! heal keeps its own blame.

use super::changelog::{Counters, Kind, DIRTY};
use super::data_heal::DataPlan;
use super::Replicate;
use crate::layer::{join_all, Errno, FopResult};
use bytes::Bytes;
use cairn_common::proto::{Attr, Creds, DirEntry, Fop, Reply, SetAttr, TimeSet};
use cairn_common::Gfid;
use std::sync::atomic::Ordering;

/// Names an entry heal makes at once.
const ENTRY_BATCH: usize = 8;

/// Files up to this size that entry heal makes on a replica are filled at
/// once (`fill_new_copy`).
const SMALL_FILE: u64 = 1 << 20;

/// A heal's own lock owner: unlike any writer's (this client's eager hold
/// included) and any other heal's, since locks are re-entrant per owner.
pub(super) fn heal_owner() -> u64 {
    super::rand_owner() ^ 2
}

impl Replicate {
    /// Does this layer heal `kind` of change? A mount as its
    /// `cluster.*-self-heal` option says; the self-heal daemon always.
    pub(super) fn heals(&self, kind: Kind) -> bool {
        let flag = match kind {
            Kind::Data => &self.data_heal,
            Kind::Metadata => &self.metadata_heal,
            Kind::Entry => &self.entry_heal,
        };
        self.daemon.load(Ordering::Relaxed) || flag.load(Ordering::Relaxed)
    }

    pub(super) fn maybe_heal_inode(&self, gfid: Gfid, is_dir: bool) {
        let wanted = self.heals(Kind::Metadata) || (!is_dir && self.heals(Kind::Data));
        self.spawn_heal((gfid, false), wanted, move |me| async move {
            me.heal_inode(gfid, is_dir).await
        });
    }

    pub(super) fn maybe_heal_entry(&self, dir: Gfid) {
        let wanted = self.heals(Kind::Entry);
        self.spawn_heal((dir, true), wanted, move |me| async move { me.heal_entries(dir).await });
    }

    /// Heals one name in the background (see `heal_name`).
    pub(super) fn maybe_heal_name(&self, parent: Gfid, name: &[u8]) {
        if !self.heals(Kind::Entry) || self.daemon.load(Ordering::Relaxed) {
            return;
        }
        let Some(me) = self.me.upgrade() else { return };
        let name = name.to_vec();
        tokio::spawn(async move {
            if let Err(e) = me.heal_name(parent, &name, None).await {
                tracing::debug!(subvolume = %me.name, %parent, errno = e.0, "a name's heal did not finish");
            }
        });
    }

    /// Runs one heal per (inode, entries?) at a time, in the background.
    fn spawn_heal<F, Fut>(&self, key: (Gfid, bool), wanted: bool, work: F)
    where
        F: FnOnce(std::sync::Arc<Replicate>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), Errno>> + Send,
    {
        // The daemon heals what a heal of its own uncovers (files its
        // entry heal made) from the index in its next pass, itself, so its
        // statistics count it and two of its heals never race.
        if !wanted || self.daemon.load(Ordering::Relaxed) || !self.healing.lock().expect("healing poisoned").insert(key)
        {
            return;
        }
        let Some(me) = self.me.upgrade() else { return };
        tokio::spawn(async move {
            let name = me.name.clone();
            match work(me.clone()).await {
                Ok(()) => {}
                // Another healer holds it: that one does the work.
                Err(Errno(libc::EAGAIN)) => {}
                Err(e) => {
                    tracing::warn!(subvolume = %name, gfid = %key.0, errno = e.0, "heal did not finish; a later access retries")
                }
            }
            me.healing.lock().expect("healing poisoned").remove(&key);
            me.readable.lock().expect("readable poisoned").remove(&key.0);
        });
    }

    /// Takes (or releases) the inode lock writers take, as heal `owner`.
    pub(super) async fn lock_inode(&self, gfid: Gfid, owner: u64, take: bool, idx: &[usize]) -> Vec<usize> {
        let op = Fop::InodeLk {
            gfid,
            domain: self.domain.clone(),
            owner,
            lock: take,
            wait: true,
        };
        self.lock_each(op, idx).await
    }

    /// Takes the self-heal lock of an inode on every child that answers:
    /// held for a whole heal, taken by heals only (gluster's self-heal
    /// domain), so two healers — two mounts, a mount and the daemon, two
    /// daemon threads — never heal one inode at once and each clears
    /// exactly the blame it saw; writers never wait on it. Like gluster's
    /// it is only tried: EAGAIN when another heal holds it (that heal does
    /// the work; the index keeps the entry for a later look).
    pub(super) async fn lock_healing(&self, gfid: Gfid, owner: u64) -> Result<Vec<usize>, Errno> {
        let op = |lock| Fop::InodeLk {
            gfid,
            domain: format!("{}:self-heal", self.name),
            owner,
            lock,
            wait: false,
        };
        let mut held = Vec::new();
        for i in self.all() {
            match self.on(i, op(true), Bytes::new()).await {
                Ok(_) => held.push(i),
                Err(Errno(libc::EAGAIN)) => {
                    self.unlock_healing(gfid, owner, &held).await;
                    return Err(Errno(libc::EAGAIN));
                }
                // Away: it takes no part in this heal.
                Err(_) => {}
            }
        }
        Ok(held)
    }

    pub(super) async fn unlock_healing(&self, gfid: Gfid, owner: u64, held: &[usize]) {
        let op = Fop::InodeLk {
            gfid,
            domain: format!("{}:self-heal", self.name),
            owner,
            lock: false,
            wait: false,
        };
        self.lock_each(op, held).await;
    }

    /// Sends a heal's lock request to each child in order (as transactions
    /// lock); returns those that granted it.
    async fn lock_each(&self, op: Fop, idx: &[usize]) -> Vec<usize> {
        let mut ok = Vec::new();
        for &i in idx {
            if self.on(i, op.clone(), Bytes::new()).await.is_ok() {
                ok.push(i);
            }
        }
        ok
    }

    /// Heals an inode's metadata under its lock, then its data (window by
    /// window, see `data_heal`).
    pub(super) async fn heal_inode(&self, gfid: Gfid, is_dir: bool) -> Result<(), Errno> {
        let owner = heal_owner();
        let healers = self.lock_healing(gfid, owner).await?;
        let result = async {
            let locked = self.lock_inode(gfid, owner, true, &self.all()).await;
            let result = self.heal_inode_locked(gfid, is_dir, &locked).await;
            self.lock_inode(gfid, owner, false, &locked).await;
            match result? {
                Some(plan) => self.heal_data(gfid, plan, owner).await,
                None => Ok(()),
            }
        }
        .await;
        self.unlock_healing(gfid, owner, &healers).await;
        result
    }

    /// Heals metadata; returns what data heal is to do.
    async fn heal_inode_locked(&self, gfid: Gfid, is_dir: bool, locked: &[usize]) -> Result<Option<DataPlan>, Errno> {
        let counters = self.counters(gfid, locked).await;
        let mut kinds = Vec::new();
        if !is_dir && self.heals(Kind::Data) {
            kinds.push(Kind::Data);
        }
        if self.heals(Kind::Metadata) {
            kinds.push(Kind::Metadata);
        }
        let mut data = None;
        for kind in kinds {
            let mut v = self.judge(&counters, kind);
            if v.split_brain {
                continue;
            }
            if v.sinks.is_empty() && v.dirty {
                // Dirty with nobody blamed, under the lock so nothing is in
                // flight: a crash cut a change short. Make every copy the
                // first eligible one's.
                let present: Vec<usize> = (0..self.n()).filter(|i| counters[*i].is_some()).collect();
                let Some(&source) = present.iter().find(|i| self.may_source(kind)[**i]) else {
                    continue;
                };
                v.sources = vec![source];
                v.sinks = present.into_iter().filter(|i| *i != source).collect();
            }
            if v.sources.is_empty() || v.sinks.is_empty() {
                continue;
            }
            if kind == Kind::Data {
                data = Some(DataPlan {
                    sources: v.sources,
                    sinks: v.sinks,
                    seen: counters.clone(),
                });
                continue;
            }
            let source = v.sources[0];
            for &sink in &v.sinks {
                self.copy_metadata(gfid, source, sink).await?;
                tracing::info!(subvolume = %self.name, %gfid, ?kind, from = source, to = sink, "healed");
            }
            self.clear_blame(gfid, kind, &v.sources, &v.sinks, &counters).await;
        }
        Ok(data)
    }

    /// After a heal the sinks equal the sources: subtracts (exactly as
    /// seen, so newer changes keep their marks) the sources' blame of the
    /// sinks, the sinks' stale blame of the sources and of each other, and
    /// — for data and metadata, healed under the inode lock so nothing is
    /// in flight — everyone's dirty mark.
    pub(super) async fn clear_blame(
        &self,
        gfid: Gfid,
        kind: Kind,
        sources: &[usize],
        sinks: &[usize],
        seen: &[Option<Counters>],
    ) {
        // Every copy that is not a sink drops its blame of the sinks — the
        // sources, and also an arbiter, which blames like any replica but
        // is never a data source (its blame outlived data heals before).
        let mut keepers: Vec<usize> = sources.to_vec();
        keepers.extend((0..self.n()).filter(|i| seen[*i].is_some() && !sinks.contains(i) && !sources.contains(i)));
        // Each child once, with everyone it may blame: a child that is both
        // a source and a sink (an entry merge, where every replica is both)
        // must not have its blame subtracted twice.
        // Sinks drop their blame of each other too: each now equals the
        // source. Left behind, two sinks blaming each other kept the inode
        // in the heal index for ever, and looked like a split-brain once
        // the source went away (the chaos checker found it).
        let healed: Vec<usize> = keepers.iter().chain(sinks).copied().collect();
        let mut blamed_by: Vec<(usize, Vec<usize>)> = Vec::new();
        for (c, others) in keepers
            .iter()
            .map(|s| (*s, sinks))
            .chain(sinks.iter().map(|s| (*s, &healed[..])))
        {
            match blamed_by.iter_mut().find(|(x, _)| *x == c) {
                Some((_, list)) => {
                    for o in others {
                        if !list.contains(o) {
                            list.push(*o);
                        }
                    }
                }
                None => blamed_by.push((c, others.to_vec())),
            }
        }
        for (c, others) in blamed_by {
            let Some(held) = &seen[c] else { continue };
            let value = |name: &str| {
                held.iter()
                    .find(|(n, _)| n == name)
                    .map_or(0, |(_, v)| v[kind as usize])
            };
            let mut deltas: Vec<(String, [i32; 3])> = others
                .iter()
                .filter(|&&j| j != c)
                .map(|&j| &self.blame_names[j])
                .filter(|name| value(name) != 0)
                .map(|name| (name.clone(), kind.delta(-value(name))))
                .collect();
            if kind != Kind::Entry && value(DIRTY) != 0 {
                deltas.push((DIRTY.to_string(), kind.delta(-value(DIRTY))));
            }
            if !deltas.is_empty() {
                let _ = self.on(c, Fop::Xattrop { gfid, deltas }, Bytes::new()).await;
            }
        }
    }

    pub(super) async fn attr_on(&self, i: usize, gfid: Gfid) -> Result<Attr, Errno> {
        match self.on(i, Fop::GetAttr { gfid }, Bytes::new()).await? {
            (Reply::Attr(a), _) | (Reply::Entry(a), _) => Ok(a),
            _ => Err(Errno(libc::EIO)),
        }
    }

    pub(super) async fn open_on(&self, i: usize, gfid: Gfid, flags: i32) -> Result<u64, Errno> {
        match self.on(i, Fop::Open { gfid, flags }, Bytes::new()).await? {
            (Reply::Opened { fh }, _) => Ok(fh),
            _ => Err(Errno(libc::EIO)),
        }
    }

    async fn set_on(&self, i: usize, gfid: Gfid, set: SetAttr) -> Result<(), Errno> {
        self.on(i, Fop::SetAttr { gfid, fh: None, set }, Bytes::new())
            .await
            .map(|_| ())
    }

    /// Mode, owner, times and user-visible xattrs from source to sink.
    pub(super) async fn copy_metadata(&self, gfid: Gfid, source: usize, sink: usize) -> Result<(), Errno> {
        let a = self.attr_on(source, gfid).await?;
        self.set_on(
            sink,
            gfid,
            SetAttr {
                mode: Some(a.mode & 0o7777),
                uid: Some(a.uid),
                gid: Some(a.gid),
                size: None,
                atime: Some(TimeSet::At(a.atime)),
                mtime: Some(TimeSet::At(a.mtime)),
            },
        )
        .await?;
        let names = |r: FopResult| match r {
            Ok((Reply::XattrNames(n), _)) => Ok(n),
            Ok(_) => Err(Errno(libc::EIO)),
            Err(e) => Err(e),
        };
        let want = names(self.on(source, Fop::ListXattr { gfid }, Bytes::new()).await)?;
        let have = names(self.on(sink, Fop::ListXattr { gfid }, Bytes::new()).await)?;
        for name in &have {
            if !want.contains(name) {
                let _ = self
                    .on(
                        sink,
                        Fop::RemoveXattr {
                            gfid,
                            name: name.clone(),
                        },
                        Bytes::new(),
                    )
                    .await;
            }
        }
        for name in want {
            if let Ok((Reply::Xattr(value), _)) = self
                .on(
                    source,
                    Fop::GetXattr {
                        gfid,
                        name: name.clone(),
                    },
                    Bytes::new(),
                )
                .await
            {
                self.on(
                    sink,
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
        }
        Ok(())
    }

    pub(super) async fn lock_entry(&self, dir: Gfid, name: &[u8], owner: u64, take: bool, idx: &[usize]) -> Vec<usize> {
        let op = Fop::EntryLk {
            parent: dir,
            name: name.to_vec(),
            domain: self.domain.clone(),
            owner,
            lock: take,
            wait: true,
        };
        self.lock_each(op, idx).await
    }

    /// Fills a small file just made on `sink` from `source` at once, under
    /// the inode lock — data, then metadata — instead of leaving it blamed
    /// for a later heal: a brick that missed thousands of small files is
    /// caught up in one pass. False (nothing cleared, the caller blames)
    /// if `source` is not a clean copy or a step fails.
    async fn fill_new_copy(&self, gfid: Gfid, source: usize, sink: usize) -> bool {
        let owner = heal_owner();
        let Ok(healers) = self.lock_healing(gfid, owner).await else {
            return false;
        };
        let pair = [source.min(sink), source.max(sink)];
        let locked = self.lock_inode(gfid, owner, true, &self.all()).await;
        let filled = async {
            if !pair.iter().all(|i| locked.contains(i)) {
                return Err(Errno(libc::ENOTCONN));
            }
            let counters = self.counters(gfid, &locked).await;
            let clean = !self.is_arbiter(source)
                && [Kind::Data, Kind::Metadata]
                    .iter()
                    .all(|k| self.judge(&counters, *k).sources.contains(&source));
            if !clean {
                return Err(Errno(libc::EAGAIN));
            }
            if !self.is_arbiter(sink) {
                self.copy_data(gfid, source, sink).await?;
            }
            self.copy_metadata(gfid, source, sink).await?;
            // The writes the sink missed are in it now: their blame goes,
            // exactly as seen (under both locks nothing else moves it).
            for kind in [Kind::Data, Kind::Metadata] {
                self.clear_blame(gfid, kind, &[source], &[sink], &counters).await;
            }
            Ok(())
        }
        .await;
        self.lock_inode(gfid, owner, false, &locked).await;
        self.unlock_healing(gfid, owner, &healers).await;
        filled.is_ok()
    }

    /// Removes a stale name from one child (a directory with what is in it:
    /// the source no longer has any of it).
    pub(super) async fn remove_on(&self, i: usize, dir: Gfid, name: &[u8], is_dir: bool) -> Result<(), Errno> {
        if is_dir {
            if let Some(a) = self.lookup_on(i, dir, name).await? {
                for e in self.list_all(i, a.gfid).await? {
                    Box::pin(self.remove_on(i, a.gfid, &e.name, e.kind == libc::S_IFDIR)).await?;
                }
            }
        }
        let op = if is_dir {
            Fop::Rmdir {
                parent: dir,
                name: name.to_vec(),
            }
        } else {
            Fop::Unlink {
                parent: dir,
                name: name.to_vec(),
            }
        };
        self.on(i, op, Bytes::new()).await.map(|_| ())
    }

    /// The entry `name` in `dir` on child `i`, if there is one.
    pub(super) async fn lookup_on(&self, i: usize, dir: Gfid, name: &[u8]) -> Result<Option<Attr>, Errno> {
        match self
            .on(
                i,
                Fop::Lookup {
                    parent: dir,
                    name: name.to_vec(),
                },
                Bytes::new(),
            )
            .await
        {
            Ok((Reply::Entry(a), _)) => Ok(Some(a)),
            Ok(_) => Err(Errno(libc::EIO)),
            Err(Errno(libc::ENOENT)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn list_all(&self, i: usize, dir: Gfid) -> Result<Vec<DirEntry>, Errno> {
        let mut out = Vec::new();
        let mut cookie = 0;
        loop {
            match self
                .on(
                    i,
                    Fop::Readdir {
                        gfid: dir,
                        cookie,
                        plus: false,
                        max_entries: 1024,
                    },
                    Bytes::new(),
                )
                .await?
            {
                (Reply::Dir { entries, eof }, _) => {
                    if let Some(last) = entries.last() {
                        cookie = last.cookie;
                    }
                    let empty = entries.is_empty();
                    out.extend(entries.into_iter().filter(|e| e.name != b"." && e.name != b".."));
                    if eof || empty {
                        return Ok(out);
                    }
                }
                _ => return Err(Errno(libc::EIO)),
            }
        }
    }

    /// An entry change cut short (its client, or a brick, went away between
    /// pre-op and post-op) leaves `dirty` on the directory with nobody
    /// blamed; no heal cleared it, so the directory stayed in the heal index
    /// for ever (the chaos checker found it). Under a whole-directory entry
    /// lock on every child that answers no entry change is in flight, so a
    /// dirty mark still there is stale: the names are merged as gluster's
    /// conservative merge does (made where missing, nothing removed), then
    /// the marks are dropped exactly as seen. EAGAIN while someone holds a
    /// name of the directory (the index keeps it for a later pass).
    async fn settle_stale_entry_dirty(&self, dir: Gfid, owner: u64) -> Result<(), Errno> {
        let locked = self.lock_whole_dir(dir, owner).await?;
        let settled = async {
            let seen = self.counters(dir, &locked).await;
            let v = self.judge(&seen, Kind::Entry);
            if !v.dirty || !v.sinks.is_empty() || v.split_brain {
                return Ok(());
            }
            if !self.merge_entries_as(dir, owner, None).await? {
                return Ok(());
            }
            for &c in &locked {
                let stale = seen[c]
                    .as_ref()
                    .and_then(|held| held.iter().find(|(n, _)| n == DIRTY))
                    .map_or(0, |(_, v)| v[Kind::Entry as usize]);
                if stale != 0 {
                    let deltas = vec![(DIRTY.to_string(), Kind::Entry.delta(-stale))];
                    let _ = self.on(c, Fop::Xattrop { gfid: dir, deltas }, Bytes::new()).await;
                }
            }
            tracing::info!(subvolume = %self.name, %dir, "stale entry dirty mark settled");
            Ok(())
        }
        .await;
        self.unlock_whole_dir(dir, owner, &locked).await;
        settled
    }

    /// Tries the whole-directory entry lock (an empty name) on each child
    /// in order; the children that granted it, or EAGAIN (nothing held)
    /// if a name of the directory is held by someone.
    async fn lock_whole_dir(&self, dir: Gfid, owner: u64) -> Result<Vec<usize>, Errno> {
        let op = Fop::EntryLk {
            parent: dir,
            name: Vec::new(),
            domain: self.domain.clone(),
            owner,
            lock: true,
            wait: false,
        };
        let mut held = Vec::new();
        for i in self.all() {
            match self.on(i, op.clone(), Bytes::new()).await {
                Ok(_) => held.push(i),
                Err(Errno(libc::EAGAIN)) => {
                    self.unlock_whole_dir(dir, owner, &held).await;
                    return Err(Errno(libc::EAGAIN));
                }
                Err(_) => {}
            }
        }
        Ok(held)
    }

    async fn unlock_whole_dir(&self, dir: Gfid, owner: u64, held: &[usize]) {
        self.lock_entry(dir, &[], owner, false, held).await;
    }

    /// Makes each sink's entries in `dir` the source's: creates what it
    /// lacks (same gfid; files empty and blamed, so data heal follows) and
    /// removes what the source no longer has.
    pub(super) async fn heal_entries(&self, dir: Gfid) -> Result<(), Errno> {
        let owner = heal_owner();
        let healers = self.lock_healing(dir, owner).await?;
        let result = self.heal_entries_as(dir, owner).await;
        self.unlock_healing(dir, owner, &healers).await;
        result
    }

    async fn heal_entries_as(&self, dir: Gfid, owner: u64) -> Result<(), Errno> {
        let counters = self.counters(dir, &self.all()).await;
        let v = self.judge(&counters, Kind::Entry);
        if v.split_brain {
            return self.merge_entries_as(dir, owner, self.policy_rule()).await.map(|_| ());
        }
        if v.sinks.is_empty() && v.dirty {
            return self.settle_stale_entry_dirty(dir, owner).await;
        }
        if v.sources.is_empty() || v.sinks.is_empty() {
            return Ok(());
        }
        let source = v.sources[0];
        let wanted = self.list_all(source, dir).await?;
        // Names that must wait for another heal (see `link_held_file`);
        // the removals still run, since they may be what frees them.
        let mut waiting = 0;
        for &sink in &v.sinks {
            let waiting_before = waiting;
            let have = self.list_all(sink, dir).await?;
            // Each name is fixed under its entry lock and re-checked there:
            // a client creating or removing it meanwhile goes first or
            // waits, so the heal never brings back a stale copy.
            let pair = [source.min(sink), source.max(sink)];
            // Missing on the sink, or there under another gfid (the name
            // was removed and made again while the sink was away).
            let missing: Vec<&DirEntry> = wanted
                .iter()
                .filter(|e| !have.iter().any(|h| h.name == e.name && h.gfid == e.gfid))
                .collect();
            // Names are independent (each under its own lock): a batch at a
            // time, so a wide directory does not heal one round trip at a
            // time.
            for batch in missing.chunks(ENTRY_BATCH) {
                let results = join_all(batch.iter().map(|e| async move {
                    let locked = self.lock_entry(dir, &e.name, owner, true, &pair).await;
                    let result = async {
                        self.still_entry_source(dir, source).await?;
                        let Some(want) = self.lookup_on(source, dir, &e.name).await? else {
                            return Ok(());
                        };
                        match self.lookup_on(sink, dir, &e.name).await? {
                            Some(stale) if stale.gfid != want.gfid => {
                                self.remove_on(sink, dir, &e.name, stale.is_dir()).await?;
                                self.recreate(dir, e, source, sink).await?;
                            }
                            Some(_) => {}
                            None => self.recreate(dir, e, source, sink).await?,
                        }
                        Ok::<(), Errno>(())
                    }
                    .await;
                    self.lock_entry(dir, &e.name, owner, false, &locked).await;
                    result
                }))
                .await;
                for result in results {
                    match result {
                        Ok(()) => {}
                        Err(Errno(libc::EAGAIN)) => waiting += 1,
                        Err(e) => return Err(e),
                    }
                }
            }
            for h in have.iter().filter(|h| !wanted.iter().any(|e| e.name == h.name)) {
                let locked = self.lock_entry(dir, &h.name, owner, true, &pair).await;
                let result = async {
                    self.still_entry_source(dir, source).await?;
                    if self.lookup_on(source, dir, &h.name).await?.is_some() {
                        return Ok(());
                    }
                    self.remove_on(sink, dir, &h.name, h.kind == libc::S_IFDIR).await
                }
                .await;
                self.lock_entry(dir, &h.name, owner, false, &locked).await;
                if let Err(e) = result {
                    tracing::warn!(subvolume = %self.name, name = %String::from_utf8_lossy(&h.name), errno = e.0, "could not remove a stale entry from a replica");
                    return Err(e);
                }
            }
            if waiting == waiting_before {
                tracing::info!(subvolume = %self.name, %dir, from = source, to = sink, "healed directory entries");
            }
        }
        if waiting > 0 {
            tracing::debug!(subvolume = %self.name, %dir, source, waiting, "directory entries healed except names waiting for another heal");
            return Err(Errno(libc::EAGAIN));
        }
        self.clear_blame(dir, Kind::Entry, &v.sources, &v.sinks, &counters)
            .await;
        Ok(())
    }

    /// Under a name's entry lock: is `source` still a source of `dir`'s
    /// entries? A change that finished before the lock was granted, made
    /// while the source was not reachable to its client, blames it now;
    /// healing from it then would remove the name just made (the chaos
    /// checker saw an acknowledged create vanish from a listing that way)
    /// or bring back one just removed. EAGAIN: a later pass judges again.
    async fn still_entry_source(&self, dir: Gfid, source: usize) -> Result<(), Errno> {
        let counters = self.counters(dir, &self.all()).await;
        if self.judge(&counters, Kind::Entry).sources.contains(&source) {
            return Ok(());
        }
        tracing::debug!(subvolume = %self.name, %dir, source, "the entry heal's source fell behind meanwhile");
        Err(Errno(libc::EAGAIN))
    }

    /// Makes `e`'s name on the sink a link to the file the sink already
    /// holds under another name (its gfid exists there). Right when the
    /// source has at least as many names for it: a hard link the sink
    /// lacks. With fewer there, the sink's other name is stale — a rename
    /// it missed — and a link would make one file of two paths on it;
    /// a later heal or merge could spread the pair to every replica (the
    /// 1500 s soak read a new file with another path's contents on all
    /// bricks). So the name waits (EAGAIN): the stale name's own
    /// directory heal removes it, the file's handle goes with its last
    /// name, and a later pass makes a fresh copy. A directory has a single
    /// name, so its old one always goes first.
    async fn link_held_file(&self, dir: Gfid, e: &DirEntry, a: &Attr, source: usize, sink: usize) -> Result<(), Errno> {
        let name = String::from_utf8_lossy(&e.name);
        let held = self.attr_on(sink, a.gfid).await?;
        if a.is_dir() || held.nlink + 1 > a.nlink {
            tracing::debug!(subvolume = %self.name, %dir, %name, gfid = %a.gfid, source, sink, source_nlink = a.nlink, sink_nlink = held.nlink, "entry heal waits: the replica holds this file under a name the source does not have");
            return Err(Errno(libc::EAGAIN));
        }
        tracing::debug!(subvolume = %self.name, %dir, %name, gfid = %a.gfid, source, sink, source_nlink = a.nlink, sink_nlink = held.nlink, "entry heal links a name to a file the replica already has");
        self.on(
            sink,
            Fop::Link {
                gfid: a.gfid,
                new_parent: dir,
                new_name: e.name.clone(),
            },
            Bytes::new(),
        )
        .await
        .map(drop)
    }

    pub(super) async fn recreate(&self, dir: Gfid, e: &DirEntry, source: usize, sink: usize) -> Result<(), Errno> {
        let a = match self
            .on(
                source,
                Fop::Lookup {
                    parent: dir,
                    name: e.name.clone(),
                },
                Bytes::new(),
            )
            .await?
        {
            (Reply::Entry(a), _) => a,
            _ => return Err(Errno(libc::EIO)),
        };
        let creds = Creds { uid: a.uid, gid: a.gid };
        let op = if let Some(target) = e.linkto {
            Fop::MakeLink {
                parent: dir,
                name: e.name.clone(),
                gfid: a.gfid,
                target,
            }
        } else {
            match a.mode & libc::S_IFMT {
                libc::S_IFDIR => Fop::Mkdir {
                    parent: dir,
                    name: e.name.clone(),
                    gfid: a.gfid,
                    mode: a.mode & 0o7777,
                    umask: 0,
                    creds,
                },
                libc::S_IFLNK => {
                    let target = match self.on(source, Fop::Readlink { gfid: a.gfid }, Bytes::new()).await? {
                        (Reply::Link(t), _) => t,
                        _ => return Err(Errno(libc::EIO)),
                    };
                    Fop::Symlink {
                        parent: dir,
                        name: e.name.clone(),
                        gfid: a.gfid,
                        target,
                        creds,
                    }
                }
                _ => Fop::Mknod {
                    parent: dir,
                    name: e.name.clone(),
                    gfid: a.gfid,
                    mode: a.mode,
                    umask: 0,
                    rdev: a.rdev,
                    creds,
                },
            }
        };
        // The new copy is born blamed: every other copy blames it before it
        // exists, so no reader ever takes its emptiness for the file. Blamed
        // afterwards by the source alone, an empty copy whose source then
        // went away (or a heal killed between the two steps) was unblamed
        // in the others' eyes and served as the file (the chaos checker
        // found a file's contents replaced by zeros that way).
        let kind = a.mode & libc::S_IFMT;
        let mut birth_blame = [0, 1, 0];
        if kind == libc::S_IFREG && a.size > 0 {
            birth_blame[0] = 1;
        }
        if kind == libc::S_IFDIR {
            birth_blame[2] = 1;
        }
        let blamed = kind == libc::S_IFREG || kind == libc::S_IFDIR;
        if blamed {
            let others: Vec<usize> = self.all().into_iter().filter(|i| *i != sink).collect();
            let marked = self
                .on_each(&others, |_| {
                    Some((
                        Fop::Xattrop {
                            gfid: a.gfid,
                            deltas: vec![(self.blame_names[sink].clone(), birth_blame)],
                        },
                        Bytes::new(),
                    ))
                })
                .await;
            // The source must hold the blame; others lacking the inode or
            // away cannot.
            if let Some((_, Err(e))) = marked.iter().find(|(i, _)| *i == source) {
                return Err(e.clone());
            }
        }
        let made = match self.on(sink, op, Bytes::new()).await {
            Ok(_) => true,
            // The sink holds this file already, under another name.
            Err(Errno(libc::EEXIST)) => {
                self.link_held_file(dir, e, &a, source, sink).await?;
                false
            }
            Err(err) => return Err(err),
        };
        let small_file = kind == libc::S_IFREG && e.linkto.is_none() && a.size <= SMALL_FILE;
        if made && small_file && self.fill_new_copy(a.gfid, source, sink).await {
            return Ok(());
        }
        // The new copy is empty and blamed: the inode heal fills it in (a
        // directory's contents too).
        if blamed {
            let is_dir = kind == libc::S_IFDIR;
            self.maybe_heal_inode(a.gfid, is_dir);
            if is_dir {
                self.maybe_heal_entry(a.gfid);
            }
        }
        Ok(())
    }
}
