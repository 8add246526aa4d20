//! Replicate (AFR): one subvolume over a replica set. Every change goes to
//! all live replicas under a lock, wrapped in a changelog transaction
//! (mark dirty, change, then blame whoever failed), so a replica that
//! missed a change is known and never read from; replicas that blame each
//! other are a split-brain and the file answers EIO rather than one side's
//! guess. Client quorum refuses changes (EROFS) when too few replicas are
//! up. A lookup that finds a replica behind a clear source heals it in the
//! background.
//!
//! An arbiter (the last brick of a `replica 3 arbiter 1` set) takes part in
//! locks, names, metadata and the changelog but never holds or serves data.

pub use cairn_common::changelog;
pub mod background_ends;
mod daemon;
mod data_heal;
mod dir_attrs;
mod heal;
mod merge;
mod resolve;

pub use daemon::Healed;
pub use resolve::Rule;
mod txn;
mod whole_files;

use crate::layer::{join_all, Errno, FopFuture, FopResult, Subvolume};
use bytes::Bytes;
use cairn_common::proto::{Attr, Fop, Reply};
use cairn_common::Gfid;
use changelog::{Counters, Kind, Verdict};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// Bound on remembered per-inode verdicts; forgetting costs a re-read.
const STATE_LIMIT: usize = 1 << 18;
/// Eager locking: a hold ends after the file is quiet this long…
const HOLD_IDLE: std::time::Duration = std::time::Duration::from_millis(100);
/// …or after this long in all, so another client's writer gets its turn
/// (it waits on the brick lock meanwhile).
const HOLD_MAX: std::time::Duration = std::time::Duration::from_secs(1);
const HOLD_TICK: std::time::Duration = std::time::Duration::from_millis(20);

/// One file's eager hold: its lock and dirty mark, kept across writes.
struct Hold {
    /// Replicas taking part (locked, marked dirty, not failed since).
    members: Vec<usize>,
    /// Replicas holding the lock.
    locked: Vec<usize>,
    /// Writes in flight under it.
    users: usize,
    since: std::time::Instant,
    last: std::time::Instant,
    /// No new writes join; released when the last one ends.
    closing: bool,
}

/// `cluster.quorum-type` and `cluster.quorum-count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quorum {
    None,
    /// More than half up, or exactly half including the first brick.
    Auto,
    Fixed(usize),
}

impl Quorum {
    fn met(self, up: &[usize], n: usize) -> bool {
        match self {
            Quorum::None => !up.is_empty(),
            Quorum::Auto => up.len() * 2 > n || (up.len() * 2 == n && up.contains(&0)),
            Quorum::Fixed(k) => up.len() >= k.max(1),
        }
    }

    /// How many replicas every acknowledged change reached, when that is
    /// more than half of `n`: then a name on fewer was never acknowledged
    /// or was removed by an acknowledged unlink or rename (which reached as
    /// many), and a name on that many was not removed since. None when
    /// quorum promises no majority (off, an even split's tie-break, or a
    /// fixed count of half or less).
    pub fn majority(self, n: usize) -> Option<usize> {
        let k = match self {
            Quorum::None => return None,
            // An even set's quorum may be exactly half (with the first).
            Quorum::Auto if n % 2 == 0 => return None,
            Quorum::Auto => n / 2 + 1,
            Quorum::Fixed(k) => k,
        };
        (2 * k > n).then_some(k)
    }

    /// gluster's defaults: none for replica 2, auto from 3 (and arbiter).
    pub fn default_for(n: usize, arbiter: bool) -> Quorum {
        if n >= 3 || arbiter {
            Quorum::Auto
        } else {
            Quorum::None
        }
    }
}

/// `cluster.favorite-child-policy`: how a split-brain settles itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    None,
    /// The biggest copy wins.
    Size,
    /// The most recently modified copy wins.
    Mtime,
    /// The most recently changed copy wins.
    Ctime,
    /// A copy whose size and mtime more than half the replicas share.
    Majority,
}

/// An open file: the children's handles (`None` where it is not open).
#[derive(Clone)]
struct Handle {
    gfid: Gfid,
    children: Vec<Option<u64>>,
    /// The open flags, to open it again on a replica that was away.
    flags: i32,
    /// When a replica lacking it was last tried (at most once a second).
    reopen_tried: Option<std::time::Instant>,
}

/// What is known of an inode's replicas: who may be read for data,
/// metadata and entries.
#[derive(Clone, Debug, Default)]
struct Readable {
    data: Vec<usize>,
    metadata: Vec<usize>,
    entry: Vec<usize>,
}

pub struct Replicate {
    name: String,
    children: Vec<Arc<dyn Subvolume>>,
    /// Counter names blaming each child (by brick id).
    blame_names: Vec<String>,
    brick_ids: Vec<Uuid>,
    arbiter: bool,
    /// Lock domain, shared by every client of this replica set.
    domain: String,
    /// This client's lock owner.
    owner: u64,
    quorum: Mutex<Quorum>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    readable: Mutex<HashMap<Gfid, Readable>>,
    /// Inodes in split-brain already logged (logged once each).
    split_logged: Mutex<HashSet<Gfid>>,
    /// Heals running now: (inode, entries?), one of each at a time.
    healing: Arc<Mutex<HashSet<(Gfid, bool)>>>,
    /// This layer, for heals that outlive the request that found the need.
    me: std::sync::Weak<Replicate>,
    /// Eager holds by file, and the per-file serialization of taking and
    /// releasing them.
    holds: Mutex<HashMap<Gfid, Hold>>,
    hold_shards: Vec<tokio::sync::Mutex<()>>,
    /// `cluster.eager-lock`
    eager_lock: AtomicBool,
    /// The bricks understand `TxnCreate` (off after one that did not).
    txn_create: AtomicBool,
    /// The bricks understand `OpenRead` (off after one that did not).
    open_read: AtomicBool,
    /// Small files read whole when opened for reading, by handle.
    whole_files: whole_files::WholeFiles,
    /// `cluster.favorite-child-policy`
    policy: Mutex<Policy>,
    /// `cluster.split-brain-backup`
    backup: AtomicBool,
    data_heal: AtomicBool,
    metadata_heal: AtomicBool,
    entry_heal: AtomicBool,
    /// This is the self-heal daemon's layer: it heals every kind of change.
    daemon: AtomicBool,
    /// File data copied by heals, in bytes.
    healed_bytes: AtomicU64,
    /// `cluster.data-self-heal-algorithm full`: copy every block.
    full_data_heal: AtomicBool,
    /// Directory attributes served from memory within the mount's
    /// attribute timeout (none by default).
    dir_attrs: dir_attrs::DirAttrs,
}

impl Replicate {
    /// `brick_ids` name the children in order; with `arbiter` the last one
    /// is the arbiter.
    pub fn new(
        name: String,
        children: Vec<Arc<dyn Subvolume>>,
        brick_ids: &[Uuid],
        arbiter: bool,
    ) -> anyhow::Result<Arc<Replicate>> {
        if children.len() < 2 || children.len() != brick_ids.len() || children.len() > 8 {
            anyhow::bail!("a replica set has 2 to 8 bricks, got {}", children.len());
        }
        if arbiter && children.len() != 3 {
            anyhow::bail!("an arbiter needs replica 3");
        }
        let n = children.len();
        Ok(Arc::new_cyclic(|me| Replicate {
            me: me.clone(),
            domain: format!("{name}:txn"),
            name,
            children,
            blame_names: brick_ids.iter().map(changelog::pending_name).collect(),
            brick_ids: brick_ids.to_vec(),
            arbiter,
            owner: rand_owner(),
            quorum: Mutex::new(Quorum::default_for(n, arbiter)),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            readable: Mutex::new(HashMap::new()),
            split_logged: Mutex::new(HashSet::new()),
            healing: Arc::new(Mutex::new(HashSet::new())),
            holds: Mutex::new(HashMap::new()),
            hold_shards: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
            eager_lock: AtomicBool::new(true),
            txn_create: AtomicBool::new(true),
            open_read: AtomicBool::new(true),
            whole_files: whole_files::WholeFiles::default(),
            policy: Mutex::new(Policy::None),
            backup: AtomicBool::new(true),
            data_heal: AtomicBool::new(true),
            metadata_heal: AtomicBool::new(true),
            entry_heal: AtomicBool::new(true),
            daemon: AtomicBool::new(false),
            healed_bytes: AtomicU64::new(0),
            full_data_heal: AtomicBool::new(false),
            dir_attrs: dir_attrs::DirAttrs::default(),
        }))
    }

    /// How long directory attributes this set learned may be served
    /// without asking a brick: a mount's attribute timeout (see
    /// `dir_attrs`). Zero, the default, serves none.
    pub fn set_dir_attr_ttl(&self, ttl: std::time::Duration) {
        self.dir_attrs.set_ttl(ttl);
    }

    fn policy(&self) -> Policy {
        *self.policy.lock().expect("policy poisoned")
    }

    fn hold_shard(&self, gfid: &Gfid) -> &tokio::sync::Mutex<()> {
        &self.hold_shards[gfid.0[0] as usize % self.hold_shards.len()]
    }

    fn n(&self) -> usize {
        self.children.len()
    }

    fn is_arbiter(&self, i: usize) -> bool {
        self.arbiter && i == self.n() - 1
    }

    /// May child `i` be a source for `kind`?
    fn may_source(&self, kind: Kind) -> Vec<bool> {
        (0..self.n())
            .map(|i| kind != Kind::Data || !self.is_arbiter(i))
            .collect()
    }

    fn all(&self) -> Vec<usize> {
        (0..self.n()).collect()
    }

    async fn on(&self, i: usize, op: Fop, payload: Bytes) -> FopResult {
        self.children[i].call(op, payload).await
    }

    /// Sends a request to the children `idx` at once; results in order.
    async fn on_each(
        &self,
        idx: &[usize],
        mut make: impl FnMut(usize) -> Option<(Fop, Bytes)>,
    ) -> Vec<(usize, FopResult)> {
        let calls: Vec<_> = idx.iter().filter_map(|&i| make(i).map(|(op, p)| (i, op, p))).collect();
        join_all(
            calls
                .into_iter()
                .map(|(i, op, p)| async move { (i, self.on(i, op, p).await) }),
        )
        .await
    }

    /// Every child's counters on `gfid` (None where it did not answer).
    async fn counters(&self, gfid: Gfid, idx: &[usize]) -> Vec<Option<Counters>> {
        let mut out = vec![None; self.n()];
        for (i, r) in self
            .on_each(idx, |_| {
                Some((
                    Fop::Xattrop {
                        gfid,
                        deltas: Vec::new(),
                    },
                    Bytes::new(),
                ))
            })
            .await
        {
            if let Ok((Reply::Counters(c), _)) = r {
                out[i] = Some(c);
            }
        }
        out
    }

    fn judge(&self, counters: &[Option<Counters>], kind: Kind) -> Verdict {
        changelog::judge(&self.blame_names, counters, kind, &self.may_source(kind))
    }

    fn remember(&self, gfid: Gfid, r: Readable) {
        let mut m = self.readable.lock().expect("readable poisoned");
        if m.len() >= STATE_LIMIT {
            m.clear();
        }
        m.insert(gfid, r);
    }

    fn known(&self, gfid: &Gfid) -> Option<Readable> {
        self.readable.lock().expect("readable poisoned").get(gfid).cloned()
    }

    /// After a transaction: children that failed it are no longer readable.
    fn demote(&self, gfid: &Gfid, kind: Kind, failed: &[usize]) {
        if failed.is_empty() {
            return;
        }
        let mut m = self.readable.lock().expect("readable poisoned");
        if let Some(r) = m.get_mut(gfid) {
            let list = match kind {
                Kind::Data => &mut r.data,
                Kind::Metadata => &mut r.metadata,
                Kind::Entry => &mut r.entry,
            };
            list.retain(|i| !failed.contains(i));
        }
    }

    fn split_brain(&self, gfid: Gfid, what: &str) -> Errno {
        if self.split_logged.lock().expect("split log poisoned").insert(gfid) {
            tracing::error!(subvolume = %self.name, %gfid, kind = what, "split-brain: replicas blame each other; refusing to serve it (EIO)");
        }
        Errno(libc::EIO)
    }

    /// Reads need a quorum of answering replicas too (where quorum is on),
    /// as in gluster since 3.13: a copy is known to be behind only through
    /// the blame of the replicas that took what it missed, and those may be
    /// the ones away. A lone survivor restarted before its heal would
    /// otherwise serve what it missed, and names removed meanwhile (the
    /// chaos checker found both). ENOTCONN, not EROFS: nothing is served.
    fn check_read_quorum(&self, up: &[usize]) -> Result<(), Errno> {
        let quorum = *self.quorum.lock().expect("quorum poisoned");
        if quorum.met(up, self.n()) {
            return Ok(());
        }
        tracing::debug!(subvolume = %self.name, ?up, "too few replicas answer to know what is current: not served");
        Err(Errno(libc::ENOTCONN))
    }

    /// Reads counters and decides who is readable; EIO on split-brain,
    /// ENOTCONN without a read quorum among the children that answer —
    /// those in `present` that give counters, and `also_up` (children
    /// known to answer though not asked, e.g. those lacking the name).
    async fn inspect(
        &self,
        gfid: Gfid,
        present: &[usize],
        also_up: &[usize],
        is_dir: bool,
    ) -> Result<(Readable, [Verdict; 3]), Errno> {
        self.inspect_given(gfid, present, also_up, is_dir, None).await
    }

    /// As `inspect`, with the counters of `present` already in hand when
    /// `given` (a lookup's answers), else read now.
    async fn inspect_given(
        &self,
        gfid: Gfid,
        present: &[usize],
        also_up: &[usize],
        is_dir: bool,
        given: Option<Vec<Option<Counters>>>,
    ) -> Result<(Readable, [Verdict; 3]), Errno> {
        let counters = match given {
            Some(mut c) => {
                for (i, slot) in c.iter_mut().enumerate() {
                    if !present.contains(&i) {
                        *slot = None;
                    }
                }
                c
            }
            None => self.counters(gfid, present).await,
        };
        let mut up: Vec<usize> = (0..self.n()).filter(|i| counters[*i].is_some()).collect();
        up.extend(also_up.iter().filter(|i| counters[**i].is_none()));
        self.check_read_quorum(&up)?;
        let data = self.judge(&counters, Kind::Data);
        let metadata = self.judge(&counters, Kind::Metadata);
        let entry = self.judge(&counters, Kind::Entry);
        if metadata.split_brain {
            return Err(self.split_brain(gfid, "metadata"));
        }
        if !is_dir && data.split_brain {
            return Err(self.split_brain(gfid, "data"));
        }
        // A directory in entry split-brain stays readable: its names are
        // merged (nothing removed), and a name with different gfids is
        // refused at its own lookup.
        let entry_readable = if entry.split_brain {
            let _ = self.split_brain(gfid, "entry");
            present.iter().copied().filter(|i| counters[*i].is_some()).collect()
        } else {
            entry.sources.clone()
        };
        let r = Readable {
            data: if is_dir { Vec::new() } else { data.sources.clone() },
            metadata: metadata.sources.clone(),
            entry: if is_dir { entry_readable } else { Vec::new() },
        };
        self.remember(gfid, r.clone());
        Ok((r, [data, metadata, entry]))
    }

    /// The children to read `gfid` from for `kind`, best first: those
    /// nobody blames, spread over files by gfid.
    async fn read_order(&self, gfid: Gfid, kind: Kind, is_dir: bool) -> Result<Vec<usize>, Errno> {
        let r = match self.known(&gfid) {
            Some(r) => r,
            None => self.inspect(gfid, &self.all(), &[], is_dir).await?.0,
        };
        let mut list = match kind {
            Kind::Data => r.data,
            Kind::Metadata => r.metadata,
            Kind::Entry => r.entry,
        };
        if list.is_empty() {
            // Nothing known readable (e.g. every source down): re-read.
            self.readable.lock().expect("readable poisoned").remove(&gfid);
            let r = self.inspect(gfid, &self.all(), &[], is_dir).await?.0;
            list = match kind {
                Kind::Data => r.data,
                Kind::Metadata => r.metadata,
                Kind::Entry => r.entry,
            };
        }
        if list.is_empty() {
            return Err(Errno(libc::ENOTCONN));
        }
        let start = (u32::from_le_bytes(gfid.0[..4].try_into().expect("4 bytes")) as usize) % list.len();
        list.rotate_left(start);
        Ok(list)
    }

    /// Tries `op` on the readable children in turn.
    async fn read(&self, gfid: Gfid, kind: Kind, is_dir: bool, op: impl Fn(usize) -> Option<Fop>) -> FopResult {
        let order = self.read_order(gfid, kind, is_dir).await?;
        let mut last = Errno(libc::ENOTCONN);
        for i in order {
            let Some(op) = op(i) else { continue };
            match self.on(i, op, Bytes::new()).await {
                Err(e) if is_transport(&e) => last = e,
                other => return other,
            }
        }
        Err(last)
    }

    fn handle(&self, fh: u64) -> Result<Handle, Errno> {
        self.handles
            .lock()
            .expect("handles poisoned")
            .get(&fh)
            .cloned()
            .ok_or(Errno(libc::EBADF))
    }

    fn new_handle(&self, gfid: Gfid, children: Vec<Option<u64>>, flags: i32) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let flags = crate::layer::reopen_flags(flags);
        self.handles.lock().expect("handles poisoned").insert(
            fh,
            Handle {
                gfid,
                children,
                flags,
                reopen_tried: None,
            },
        );
        fh
    }

    /// Opens `fh` on the data replicas it is not open on (they were away
    /// when it was opened, as gluster's fd reopen on child-up), so writes
    /// through a long-open file reach a replica that came back.
    pub(super) async fn reopen_where_missing(&self, fh: u64) {
        let h = {
            let mut handles = self.handles.lock().expect("handles poisoned");
            let Some(h) = handles.get_mut(&fh) else { return };
            let lacking = (0..self.n()).any(|i| h.children[i].is_none() && !self.is_arbiter(i));
            if !lacking
                || h.reopen_tried
                    .is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1))
            {
                return;
            }
            h.reopen_tried = Some(std::time::Instant::now());
            h.clone()
        };
        let targets: Vec<usize> = (0..self.n())
            .filter(|i| h.children[*i].is_none() && !self.is_arbiter(*i))
            .collect();
        let results = self
            .on_each(&targets, |_| {
                Some((
                    Fop::Open {
                        gfid: h.gfid,
                        flags: h.flags,
                    },
                    Bytes::new(),
                ))
            })
            .await;
        for (i, r) in results {
            if let Ok((Reply::Opened { fh: child }, _)) = r {
                let kept = match self.handles.lock().expect("handles poisoned").get_mut(&fh) {
                    Some(h) if h.children[i].is_none() => {
                        h.children[i] = Some(child);
                        true
                    }
                    _ => false,
                };
                if !kept {
                    // Released or reopened meanwhile: give this one back.
                    let _ = self.on(i, Fop::Release { fh: child }, Bytes::new()).await;
                }
            }
        }
    }

    /// Lookup on every child: the entry from a readable copy, EIO for a
    /// split-brain, and a background heal when a replica is behind.
    async fn lookup(&self, parent: Gfid, name: Vec<u8>) -> FopResult {
        let results = self
            .on_each(&self.all(), |_| {
                Some((
                    Fop::LookupCounters {
                        parent,
                        name: name.clone(),
                    },
                    Bytes::new(),
                ))
            })
            .await;
        let mut found: Vec<(usize, Attr)> = Vec::new();
        // Each copy's counters, as its lookup answered them.
        let mut answered_counters: Vec<Option<Counters>> = vec![None; self.n()];
        let mut missing = Vec::new();
        let mut first_err = None;
        for (i, r) in results {
            match r {
                Ok((Reply::EntryCounters { attr, counters }, _)) => {
                    answered_counters[i] = counters;
                    found.push((i, attr));
                }
                Ok((Reply::Entry(a), _)) => found.push((i, a)),
                Err(Errno(libc::ENOENT)) => missing.push(i),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
                Ok(_) => {
                    first_err.get_or_insert(Errno(libc::EIO));
                }
            }
        }
        let answered: Vec<usize> = found.iter().map(|(i, _)| *i).chain(missing.iter().copied()).collect();
        self.check_read_quorum(&answered)?;
        if found.is_empty() {
            return Err(if missing.is_empty() {
                first_err.unwrap_or(Errno(libc::ENOTCONN))
            } else {
                Errno(libc::ENOENT)
            });
        }
        // Copies under one name with different gfids: trust the parent's
        // entry sources, or refuse.
        let gfids: HashSet<Gfid> = found.iter().map(|(_, a)| a.gfid).collect();
        let mut entry_sinks = Vec::new();
        if gfids.len() > 1 || !missing.is_empty() {
            let (_, verdicts) = self.inspect(parent, &self.all(), &[], true).await?;
            let entry = &verdicts[Kind::Entry as usize];
            entry_sinks = entry.sinks.clone();
            if gfids.len() > 1 {
                let trusted: HashSet<Gfid> = found
                    .iter()
                    .filter(|(i, _)| entry.sources.contains(i))
                    .map(|(_, a)| a.gfid)
                    .collect();
                let copies: Vec<Gfid> = found.iter().map(|(_, a)| a.gfid).collect();
                let by_majority = merge::majority_gfid(&copies, self.name_majority());
                if trusted.len() != 1 && by_majority.is_some() {
                    // A majority's copy is the name; the others are heal's.
                    self.maybe_heal_name(parent, &name);
                } else if trusted.len() != 1 {
                    if let Some(rule) = self.policy_rule() {
                        // The administrator chose to settle these by policy.
                        if self.settle_gfid(parent, &name, rule).await? {
                            return Box::pin(self.lookup(parent, name)).await;
                        }
                    }
                    return Err(self.split_brain(parent, "gfid"));
                }
                let Some(gfid) = by_majority
                    .filter(|_| trusted.len() != 1)
                    .or_else(|| trusted.iter().next().copied())
                else {
                    return Err(self.split_brain(parent, "gfid"));
                };
                found.retain(|(_, a)| a.gfid == gfid);
            }
            // The directory's copies blame each other: the name's holders
            // decide, as the merge will (see `merge`).
            if entry.split_brain && gfids.len() == 1 {
                match merge::name_fate(found.len(), answered.len(), self.n(), self.name_majority()) {
                    merge::NameFate::Spread => {}
                    merge::NameFate::Remove => {
                        self.maybe_heal_entry(parent);
                        return Err(Errno(libc::ENOENT));
                    }
                    merge::NameFate::Unknown => return Err(self.split_brain(parent, "entry (a name's fate)")),
                }
            }
            // The name is gone on the entry sources: it was removed while
            // the copies holding it were down.
            if !entry.sources.is_empty() && found.iter().all(|(i, _)| !entry.sources.contains(i)) {
                self.maybe_heal_entry(parent);
                return Err(Errno(libc::ENOENT));
            }
        }
        let present: Vec<usize> = found.iter().map(|(i, _)| *i).collect();
        let is_dir = found[0].1.is_dir();
        let gfid = found[0].1.gfid;
        // The counters came with the lookups (one round trip, not two)
        // unless a copy could not read them.
        let with_lookup = present
            .iter()
            .all(|i| answered_counters[*i].is_some())
            .then_some(answered_counters);
        let (readable, verdicts) = match self.inspect_given(gfid, &present, &missing, is_dir, with_lookup).await {
            Err(Errno(libc::EIO)) if !is_dir && self.policy() != Policy::None => {
                // A split-brain the administrator chose to settle by policy.
                self.resolve(parent, &name, gfid, &present, Rule::Policy(self.policy()))
                    .await?;
                self.inspect(gfid, &present, &missing, is_dir).await?
            }
            other => other?,
        };
        let pick = if is_dir { &readable.metadata } else { &readable.data };
        let attr = found
            .iter()
            .find(|(i, _)| pick.contains(i))
            .or_else(|| found.iter().find(|(i, _)| readable.metadata.contains(i)))
            .map(|(_, a)| *a)
            .ok_or(Errno(libc::EIO))?;
        // Behind a source, or marked dirty with nobody blamed (a change a
        // crash interrupted, or one in flight: the heal waits for its lock
        // and finds nothing to do).
        let healable = |v: &Verdict| (!v.sinks.is_empty() && !v.sources.is_empty()) || (v.dirty && !v.split_brain);
        let [data, metadata, entries] = &verdicts;
        if !missing.is_empty() || !entry_sinks.is_empty() {
            self.maybe_heal_entry(parent);
        }
        if (!is_dir && healable(data)) || healable(metadata) {
            self.maybe_heal_inode(gfid, is_dir);
        }
        if is_dir && (entries.split_brain || !entries.sinks.is_empty() && !entries.sources.is_empty()) {
            self.maybe_heal_entry(gfid);
        }
        Ok((Reply::Entry(attr), Bytes::new()))
    }

    async fn open(&self, gfid: Gfid, flags: i32) -> FopResult {
        if let Some(opened) = self.open_for_reading(gfid, flags).await {
            return opened;
        }
        let targets: Vec<usize> = (0..self.n()).filter(|i| !self.is_arbiter(*i)).collect();
        let results = self
            .on_each(&targets, |_| Some((Fop::Open { gfid, flags }, Bytes::new())))
            .await;
        let mut fhs = vec![None; self.n()];
        let mut first_err = None;
        for (i, r) in results {
            match r {
                Ok((Reply::Opened { fh }, _)) => fhs[i] = Some(fh),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
                Ok(_) => {
                    first_err.get_or_insert(Errno(libc::EIO));
                }
            }
        }
        if fhs.iter().all(Option::is_none) {
            return Err(first_err.unwrap_or(Errno(libc::ENOTCONN)));
        }
        Ok((
            Reply::Opened {
                fh: self.new_handle(gfid, fhs, flags),
            },
            Bytes::new(),
        ))
    }

    /// A read-only open of a file whose readable replicas are known opens
    /// it on the replica reads go to, not on all: a cold read of a small
    /// file then costs one open and one release instead of one per replica.
    /// Anything that needs the others (a change, a lock) opens it there
    /// first (`reopen_where_missing`), and a read whose replica is no longer
    /// readable opens the next (`open_for_read`). None: open everywhere.
    async fn open_for_reading(&self, gfid: Gfid, flags: i32) -> Option<FopResult> {
        if flags & libc::O_ACCMODE != libc::O_RDONLY || self.daemon.load(Ordering::Relaxed) {
            return None;
        }
        self.known(&gfid)?;
        let order = self.read_order(gfid, Kind::Data, false).await.ok()?;
        for i in order {
            // O_DIRECT readers want what the file holds when they read.
            let whole_asked = self.open_read.load(Ordering::Relaxed) && flags & libc::O_DIRECT == 0;
            let open = match whole_asked {
                true => Fop::OpenRead {
                    gfid,
                    flags,
                    max: whole_files::WHOLE_FILE_MAX,
                },
                false => Fop::Open { gfid, flags },
            };
            let (child_fh, whole) = match self.on(i, open, Bytes::new()).await {
                Ok((Reply::Opened { fh }, _)) => (fh, None),
                Ok((Reply::OpenedWhole { fh, .. }, content)) => (fh, Some(content)),
                Err(Errno(libc::EPROTO)) if whole_asked => {
                    // A brick from before `OpenRead` (it could not decode
                    // it): plain opens from now on.
                    self.open_read.store(false, Ordering::Relaxed);
                    match self.on(i, Fop::Open { gfid, flags }, Bytes::new()).await {
                        Ok((Reply::Opened { fh }, _)) => (fh, None),
                        Err(e) if is_transport(&e) => continue,
                        Ok(_) => return Some(Err(Errno(libc::EIO))),
                        Err(e) => return Some(Err(e)),
                    }
                }
                Err(e) if is_transport(&e) => continue,
                Ok(_) => return Some(Err(Errno(libc::EIO))),
                Err(e) => return Some(Err(e)),
            };
            let mut fhs = vec![None; self.n()];
            fhs[i] = Some(child_fh);
            let fh = self.new_handle(gfid, fhs, flags);
            if let Some(content) = whole {
                self.whole_files.keep(fh, gfid, content);
            }
            return Some(Ok((Reply::Opened { fh }, Bytes::new())));
        }
        None
    }

    /// The file `op` changes the data of, if any: what is kept of it
    /// whole (`whole_files`) is then out of date.
    fn data_changed_by(&self, op: &Fop) -> Option<Gfid> {
        match op {
            Fop::Write { fh, .. } | Fop::Fallocate { fh, .. } | Fop::CopyFileRange { fh_out: fh, .. } => {
                self.handle(*fh).ok().map(|h| h.gfid)
            }
            Fop::SetAttr { gfid, set, .. } if set.size.is_some() => Some(*gfid),
            Fop::Open { gfid, flags } if flags & libc::O_TRUNC != 0 => Some(*gfid),
            _ => None,
        }
    }

    /// Empties `gfid`, just opened as `fh`, as a transaction (its
    /// attributes after, if a replica answered them); on failure `fh` is
    /// closed.
    async fn truncate_opened(&self, gfid: Gfid, fh: u64) -> Result<Option<Attr>, Errno> {
        let set = cairn_common::proto::SetAttr {
            size: Some(0),
            ..Default::default()
        };
        match self
            .transact(
                Fop::SetAttr {
                    gfid,
                    fh: Some(fh),
                    set,
                },
                Bytes::new(),
            )
            .await
        {
            Ok((Reply::Attr(attr), _)) => Ok(Some(attr)),
            Ok(_) => Ok(None),
            Err(e) => {
                let _ = self.dispatch_release(fh).await;
                Err(e)
            }
        }
    }

    /// A read through `fh` (`op` for a child's handle), from the replicas
    /// it is open on; one opened for reading on a single replica is opened
    /// on the others when that one is not read from any more, or fails.
    async fn read_through(&self, fh: u64, op: impl Fn(u64) -> Fop) -> FopResult {
        let h = self.open_for_read(fh).await?;
        let r = self.read(h.gfid, Kind::Data, false, |i| h.children[i].map(&op)).await;
        let lacking = (0..self.n()).any(|i| h.children[i].is_none() && !self.is_arbiter(i));
        match r {
            Err(e) if is_transport(&e) && lacking => {
                self.reopen_where_missing(fh).await;
                let h = self.handle(fh)?;
                self.read(h.gfid, Kind::Data, false, |i| h.children[i].map(&op)).await
            }
            r => r,
        }
    }

    /// Before a read through `fh`: opens it on the first replica reads go
    /// to if it is not open there (opened for reading on another replica,
    /// since blamed or gone).
    async fn open_for_read(&self, fh: u64) -> Result<Handle, Errno> {
        let h = self.handle(fh)?;
        let Ok(order) = self.read_order(h.gfid, Kind::Data, false).await else {
            return Ok(h);
        };
        if order.iter().take(1).all(|i| h.children[*i].is_some()) {
            return Ok(h);
        }
        self.reopen_where_missing(fh).await;
        self.handle(fh)
    }

    /// Sends a handle-based request to every child holding the handle
    /// (release, flush, fsync, locks); the first success answers.
    async fn on_handle_holders(&self, h: &Handle, op: &Fop) -> FopResult {
        let idx: Vec<usize> = (0..self.n()).filter(|i| h.children[*i].is_some()).collect();
        let results = self
            .on_each(&idx, |i| {
                let child_fh = h.children[i]?;
                Some((op.clone().map_handles(|_| child_fh), Bytes::new()))
            })
            .await;
        let mut first_err = None;
        let mut ok = None;
        for (_, r) in results {
            match r {
                Ok(v) => {
                    ok.get_or_insert(v);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        ok.ok_or_else(|| first_err.unwrap_or(Errno(libc::ENOTCONN)))
    }

    async fn dispatch_release(&self, fh: u64) -> FopResult {
        let h = self.handle(fh)?;
        self.settle(h.gfid).await;
        self.handles.lock().expect("handles poisoned").remove(&fh);
        self.whole_files.forget(fh);
        self.on_handle_holders(&h, &Fop::Release { fh }).await
    }

    async fn dispatch(&self, op: Fop, payload: Bytes) -> FopResult {
        if let Some(gfid) = self.data_changed_by(&op) {
            self.whole_files.forget_file(gfid);
        }
        // A create without O_EXCL opens a file already there, which
        // O_TRUNC empties: its gfid is only known from the answer.
        let truncating_create = matches!(op, Fop::Create { flags, .. } if flags & libc::O_TRUNC != 0);
        let r = self.dispatch_op(op, payload).await;
        if let (true, Ok((Reply::Created { attr, .. }, _))) = (truncating_create, &r) {
            self.whole_files.forget_file(attr.gfid);
        }
        r
    }

    async fn dispatch_op(&self, op: Fop, payload: Bytes) -> FopResult {
        match op {
            Fop::Lookup { parent, name } => self.lookup(parent, name).await,
            Fop::GetAttr { gfid } => {
                if let Some(a) = self.dir_attrs.get(&gfid) {
                    return Ok((Reply::Attr(a), Bytes::new()));
                }
                let epoch = self.dir_attrs.epoch();
                let is_dir = gfid.is_root()
                    || self
                        .known(&gfid)
                        .is_some_and(|r| r.data.is_empty() && !r.entry.is_empty());
                let r = self
                    .read(gfid, if is_dir { Kind::Metadata } else { Kind::Data }, is_dir, |_| {
                        Some(Fop::GetAttr { gfid })
                    })
                    .await;
                if let Ok((Reply::Attr(a), _)) = &r {
                    self.dir_attrs.put_fetched(a, epoch);
                }
                r
            }
            Fop::Readlink { gfid } => {
                self.read(gfid, Kind::Metadata, false, |_| Some(Fop::Readlink { gfid }))
                    .await
            }
            Fop::GetXattr { gfid, name } => {
                self.read(gfid, Kind::Metadata, false, |_| {
                    Some(Fop::GetXattr {
                        gfid,
                        name: name.clone(),
                    })
                })
                .await
            }
            Fop::ListXattr { gfid } => {
                self.read(gfid, Kind::Metadata, false, |_| Some(Fop::ListXattr { gfid }))
                    .await
            }
            Fop::LayoutGet { gfid } => {
                self.read(gfid, Kind::Metadata, true, |_| Some(Fop::LayoutGet { gfid }))
                    .await
            }
            Fop::Readdir {
                gfid,
                cookie,
                plus,
                max_entries,
            } => {
                // A listing's start re-reads the directory's changelog: the
                // root is never looked up, so this is where its entries heal.
                if cookie == 0 {
                    self.readable.lock().expect("readable poisoned").remove(&gfid);
                    if let Ok((_, [_, _, entries])) = self.inspect(gfid, &self.all(), &[], true).await {
                        if !entries.sinks.is_empty() && !entries.sources.is_empty() {
                            self.maybe_heal_entry(gfid);
                        }
                        if entries.split_brain && self.heals(Kind::Entry) && !self.daemon.load(Ordering::Relaxed) {
                            // One child's listing of a split directory may
                            // show names the others removed: merge first
                            // (a merge another healer runs answers EAGAIN).
                            let _ = self.heal_entries(gfid).await;
                            self.readable.lock().expect("readable poisoned").remove(&gfid);
                        }
                    }
                }
                // One listing must come from one child (cookies are its
                // own): always the first entry-readable one.
                let order = self.read_order(gfid, Kind::Entry, true).await?;
                let mut sorted = order.clone();
                sorted.sort_unstable();
                let mut last = Errno(libc::ENOTCONN);
                for i in sorted {
                    match self
                        .on(
                            i,
                            Fop::Readdir {
                                gfid,
                                cookie,
                                plus,
                                max_entries,
                            },
                            Bytes::new(),
                        )
                        .await
                    {
                        Err(e) if is_transport(&e) => last = e,
                        other => return other,
                    }
                }
                Err(last)
            }
            Fop::Statfs => {
                let mut last = Errno(libc::ENOTCONN);
                for i in (0..self.n()).filter(|i| !self.is_arbiter(*i)) {
                    match self.on(i, Fop::Statfs, Bytes::new()).await {
                        Ok(r) => return Ok(r),
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
            Fop::Open { gfid, flags } => {
                // A truncating open is a data change: open, then truncate
                // as a transaction (the kernel normally sends it so).
                let opened = self.open(gfid, flags & !libc::O_TRUNC).await?;
                if flags & libc::O_TRUNC != 0 {
                    if let (Reply::Opened { fh }, _) = &opened {
                        self.truncate_opened(gfid, *fh).await?;
                    }
                }
                Ok(opened)
            }
            Fop::Create {
                parent,
                name,
                gfid,
                mode,
                umask,
                flags,
                creds,
            } if flags & libc::O_TRUNC != 0 => {
                // Without O_EXCL a create that meets the name made meanwhile
                // (another client's create won the race) opens that file,
                // and O_TRUNC empties it: a data change, so it is a
                // truncate transaction of its own, which blames a replica
                // that misses it for the file's data. Left to the bricks,
                // it happened inside the entry transaction, whose marks
                // are the directory's: a replica away kept the old data,
                // blamed by nobody.
                let create = Fop::Create {
                    parent,
                    name,
                    gfid,
                    mode,
                    umask,
                    flags: flags & !libc::O_TRUNC,
                    creds,
                };
                match self.transact(create, payload).await? {
                    (Reply::Created { attr, fh }, _) if attr.gfid != gfid => {
                        let attr = self
                            .truncate_opened(attr.gfid, fh)
                            .await?
                            .unwrap_or(Attr { size: 0, ..attr });
                        Ok((Reply::Created { attr, fh }, Bytes::new()))
                    }
                    made => Ok(made),
                }
            }
            Fop::Read { fh, offset, size } => match self.whole_files.read(fh, offset, size) {
                Some(data) => Ok((Reply::Data { len: data.len() as u32 }, data)),
                None => self.read_through(fh, |c| Fop::Read { fh: c, offset, size }).await,
            },
            Fop::Lseek { fh, offset, whence } => self.read_through(fh, |c| Fop::Lseek { fh: c, offset, whence }).await,
            Fop::Release { fh } => self.dispatch_release(fh).await,
            op @ (Fop::Flush { .. } | Fop::Fsync { .. } | Fop::SetLk { .. }) => {
                if matches!(op, Fop::SetLk { .. }) {
                    // A lock holds on every replica, whoever reads where.
                    self.reopen_where_missing(op.handles()[0]).await;
                }
                let h = self.handle(op.handles()[0])?;
                if !matches!(op, Fop::SetLk { .. }) {
                    self.settle(h.gfid).await;
                }
                self.on_handle_holders(&h, &op).await
            }
            Fop::GetLk { fh, lock } => self.read_through(fh, |c| Fop::GetLk { fh: c, lock }).await,
            Fop::Fsyncdir { gfid, datasync } => {
                let results = self
                    .on_each(&self.all(), |_| Some((Fop::Fsyncdir { gfid, datasync }, Bytes::new())))
                    .await;
                first_success(results)
            }
            Fop::Checksum { fh, offset, len } => self.read_through(fh, |c| Fop::Checksum { fh: c, offset, len }).await,
            Fop::MigrateFreeze { gfid, freeze } => self.migrate_freeze(gfid, freeze).await,
            op @ Fop::MigrateDone { .. } => {
                // Every replica must refuse the old copy from now on.
                let results = self.on_each(&self.all(), |_| Some((op.clone(), Bytes::new()))).await;
                match results.into_iter().find_map(|(_, r)| r.err()) {
                    Some(e) => Err(e),
                    None => Ok((Reply::Empty, Bytes::new())),
                }
            }
            Fop::Xattrop { .. } | Fop::InodeLk { .. } | Fop::EntryLk { .. } => Err(Errno(libc::EINVAL)),
            op => self.transact(op, payload).await,
        }
    }
}

impl Replicate {
    /// Freezes (or thaws) a file being migrated away on every replica: a
    /// change that reached one replica must not slip past the freeze on
    /// another, so a replica that cannot freeze fails the whole freeze.
    async fn migrate_freeze(&self, gfid: Gfid, freeze: bool) -> FopResult {
        let results = self
            .on_each(&self.all(), |_| {
                Some((Fop::MigrateFreeze { gfid, freeze }, Bytes::new()))
            })
            .await;
        let failed = results.iter().find_map(|(_, r)| r.as_ref().err().cloned());
        match failed {
            Some(e) if freeze => {
                let held: Vec<usize> = results.iter().filter(|(_, r)| r.is_ok()).map(|(i, _)| *i).collect();
                self.on_each(&held, |_| {
                    Some((Fop::MigrateFreeze { gfid, freeze: false }, Bytes::new()))
                })
                .await;
                Err(e)
            }
            _ => Ok((Reply::Empty, Bytes::new())),
        }
    }
}

pub(super) fn rand_owner() -> u64 {
    let u = Uuid::new_v4();
    u64::from_le_bytes(u.as_bytes()[..8].try_into().expect("8 bytes")) | 1
}

/// A failure that says the child is unreachable rather than the request
/// being wrong.
fn is_transport(e: &Errno) -> bool {
    matches!(e.0, libc::ENOTCONN | libc::ECONNRESET | libc::ETIMEDOUT | libc::EPROTO) || e.0 == libc::EIO
}

fn first_success(results: Vec<(usize, FopResult)>) -> FopResult {
    let mut first_err = None;
    for (_, r) in results {
        match r {
            Ok(v) => return Ok(v),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err.unwrap_or(Errno(libc::ENOTCONN)))
}

impl Subvolume for Replicate {
    fn call(&self, op: Fop, payload: Bytes) -> FopFuture<'_> {
        Box::pin(self.dispatch(op, payload))
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    fn reconfigure(&self, options: &BTreeMap<String, String>) {
        use cairn_common::options::effective;
        let quorum = match effective(options, "cluster.quorum-type") {
            "none" => Quorum::None,
            "fixed" => Quorum::Fixed(effective(options, "cluster.quorum-count").parse().unwrap_or(1)),
            "auto" => Quorum::Auto,
            _ => Quorum::default_for(self.n(), self.arbiter),
        };
        *self.quorum.lock().expect("quorum poisoned") = quorum;
        let on = |k: &str| effective(options, k) == "on";
        self.data_heal.store(on("cluster.data-self-heal"), Ordering::Relaxed);
        self.metadata_heal
            .store(on("cluster.metadata-self-heal"), Ordering::Relaxed);
        self.entry_heal.store(on("cluster.entry-self-heal"), Ordering::Relaxed);
        self.eager_lock.store(on("cluster.eager-lock"), Ordering::Relaxed);
        self.full_data_heal.store(
            effective(options, "cluster.data-self-heal-algorithm") == "full",
            Ordering::Relaxed,
        );
        self.backup.store(on("cluster.split-brain-backup"), Ordering::Relaxed);
        *self.policy.lock().expect("policy poisoned") = match effective(options, "cluster.favorite-child-policy") {
            "size" => Policy::Size,
            "mtime" => Policy::Mtime,
            "ctime" => Policy::Ctime,
            "majority" => Policy::Majority,
            _ => Policy::None,
        };
        for c in &self.children {
            c.reconfigure(options);
        }
    }
}
