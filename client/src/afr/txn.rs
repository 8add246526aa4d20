//! Changes as transactions over the replica set:
//! lock (in child order, so two clients never deadlock) → quorum check →
//! pre-op (`dirty += 1` where the change lands) → the change on every
//! locked replica → post-op (on each replica that made the change:
//! `dirty -= 1` and blame every replica that did not) → unlock.
//! A crash between pre-op and post-op leaves `dirty` set, which heal reads
//! as "look at this one".

use super::changelog::{Kind, DIRTY};
use super::{is_transport, Handle, Replicate};
use crate::layer::{Errno, FopResult};
use bytes::Bytes;
use cairn_common::proto::{Fop, Reply, SetAttr, TxnLock, TxnMark};
use cairn_common::Gfid;

/// What a lock covers (the wire's name for it).
type Lock = TxnLock;

/// A transaction under way: who holds its locks, who also took its pre-op,
/// and who is not taking part (blamed by the pre-op, or — `unblamed` —
/// still to be blamed by the post-op).
struct Begun {
    locked: Vec<usize>,
    prepared: Vec<usize>,
    absent: Vec<usize>,
    unblamed: Vec<usize>,
}

/// Who made a change and who did not.
#[derive(Default)]
struct Outcome {
    done: Vec<(usize, (Reply, Bytes))>,
    /// The arbiter in a data change.
    bystanders: Vec<usize>,
    failed: Vec<(usize, Errno)>,
}

impl Outcome {
    fn succeeded(&self) -> Vec<usize> {
        self.done
            .iter()
            .map(|(i, _)| *i)
            .chain(self.bystanders.iter().copied())
            .collect()
    }

    /// A replica said the file was migrated to another subvolume: the
    /// change must go there instead, and nobody missed anything here.
    fn moved(&self) -> bool {
        self.failed.iter().any(|(_, e)| e.0 == libc::EREMCHG)
    }

    /// The caller's error when every replica failed: the request's own
    /// refusal if one said so, else EIO.
    fn first_error(&self) -> Errno {
        self.failed
            .iter()
            .map(|(_, e)| e.clone())
            .find(|e| !is_transport(e))
            .unwrap_or(Errno(libc::EIO))
    }
}

/// What `TxnEnd` gave back.
#[derive(Default)]
struct Ended {
    /// The children whose counters all took the post-op.
    settled: Vec<usize>,
    /// Each child's attributes of the marked inodes after the change.
    attrs: Vec<(usize, Vec<cairn_common::proto::Attr>)>,
}

/// A child's part in a change.
enum Part {
    Send(Fop),
    /// The arbiter in a data change: it keeps only the changelog.
    Bystander,
    /// The file is not open there (it was down at open): it misses this.
    NotOpen,
}

/// How a change is carried out.
struct Plan {
    kind: Kind,
    locks: Vec<Lock>,
    /// Inodes whose counters record the change.
    marks: Vec<Gfid>,
    /// The handle a data change goes through, if any.
    handle: Option<Handle>,
    /// A second handle (copy_file_range's source).
    source: Option<Handle>,
    /// A create opened for writing: the new file, whose inode lock is
    /// taken with the entry lock and, when the create succeeds
    /// everywhere it can, kept with a dirty mark as the eager hold its
    /// first write joins (see `carry_hold`).
    carry: Option<Gfid>,
}

impl Replicate {
    fn plan(&self, op: &Fop) -> Result<Plan, Errno> {
        let inode = |kind, gfid: Gfid, handle: Option<Handle>| Plan {
            kind,
            locks: vec![Lock::Inode(gfid)],
            marks: vec![gfid],
            handle,
            source: None,
            carry: None,
        };
        let entry = |parent: Gfid, name: &[u8]| Plan {
            kind: Kind::Entry,
            locks: vec![Lock::Entry(parent, name.to_vec())],
            marks: vec![parent],
            handle: None,
            source: None,
            carry: None,
        };
        Ok(match op {
            Fop::Write { fh, .. } | Fop::Fallocate { fh, .. } => {
                let h = self.handle(*fh)?;
                inode(Kind::Data, h.gfid, Some(h))
            }
            Fop::CopyFileRange { fh_in, fh_out, .. } => {
                let out = self.handle(*fh_out)?;
                let mut p = inode(Kind::Data, out.gfid, Some(out));
                p.source = Some(self.handle(*fh_in)?);
                p
            }
            Fop::SetAttr { gfid, fh, set } => {
                let h = match fh {
                    Some(fh) => Some(self.handle(*fh)?),
                    None => None,
                };
                inode(if set.size.is_some() { Kind::Data } else { Kind::Metadata }, *gfid, h)
            }
            Fop::SetXattr { gfid, .. }
            | Fop::RemoveXattr { gfid, .. }
            | Fop::LayoutSet { gfid, .. }
            | Fop::SetLinkto { gfid, .. } => inode(Kind::Metadata, *gfid, None),
            Fop::Mknod { parent, name, .. }
            | Fop::Mkdir { parent, name, .. }
            | Fop::Symlink { parent, name, .. }
            | Fop::Unlink { parent, name }
            | Fop::Rmdir { parent, name }
            | Fop::MakeLink { parent, name, .. } => entry(*parent, name),
            Fop::Create {
                parent,
                name,
                gfid,
                flags,
                ..
            } => {
                let mut p = entry(*parent, name);
                let writes = flags & libc::O_ACCMODE != libc::O_RDONLY;
                if writes && self.eager_lock.load(std::sync::atomic::Ordering::Relaxed) {
                    // Nobody else knows this gfid yet: the lock is never
                    // contended, and taking it now spares the first write
                    // a round trip to every replica.
                    p.locks.push(Lock::Inode(*gfid));
                    p.carry = Some(*gfid);
                }
                p
            }
            Fop::Link {
                new_parent, new_name, ..
            } => entry(*new_parent, new_name),
            Fop::Rename {
                parent,
                name,
                new_parent,
                new_name,
                ..
            } => {
                let mut locks = vec![
                    Lock::Entry(*parent, name.clone()),
                    Lock::Entry(*new_parent, new_name.clone()),
                ];
                locks.sort();
                locks.dedup();
                let mut marks = vec![*parent, *new_parent];
                marks.dedup();
                Plan {
                    kind: Kind::Entry,
                    locks,
                    marks,
                    handle: None,
                    source: None,
                    carry: None,
                }
            }
            _ => return Err(Errno(libc::EINVAL)),
        })
    }

    fn lock_op(&self, lock: &Lock, take: bool) -> Fop {
        match lock {
            Lock::Inode(gfid) => Fop::InodeLk {
                gfid: *gfid,
                domain: self.domain.clone(),
                owner: self.owner,
                lock: take,
                wait: true,
            },
            Lock::Entry(parent, name) => Fop::EntryLk {
                parent: *parent,
                name: name.clone(),
                domain: self.domain.clone(),
                owner: self.owner,
                lock: take,
                wait: true,
            },
        }
    }

    /// Takes every lock of the plan on each child, child by child in order;
    /// returns the children that hold them all.
    async fn lock_all(&self, plan: &Plan) -> Result<Vec<usize>, Errno> {
        let mut locked = Vec::new();
        let mut first_err = None;
        for i in 0..self.n() {
            let mut held = 0;
            for l in &plan.locks {
                match self.on(i, self.lock_op(l, true), Bytes::new()).await {
                    Ok(_) => held += 1,
                    Err(e) => {
                        first_err.get_or_insert(e);
                        break;
                    }
                }
            }
            if held == plan.locks.len() {
                locked.push(i);
            } else {
                for l in &plan.locks[..held] {
                    let _ = self.on(i, self.lock_op(l, false), Bytes::new()).await;
                }
            }
        }
        if locked.is_empty() {
            return Err(first_err.unwrap_or(Errno(libc::ENOTCONN)));
        }
        Ok(locked)
    }

    async fn unlock_all(&self, plan: &Plan, locked: &[usize]) {
        for l in plan.locks.iter().rev() {
            let _ = self
                .on_each(locked, |_| Some((self.lock_op(l, false), Bytes::new())))
                .await;
        }
    }

    /// Locks, quorum check and pre-op. When no one else holds the locks
    /// this is one round trip to every child at once (`TxnBegin`, instead
    /// of a lock round trip per child in turn and then the pre-op); when a
    /// lock is contended (or a child refuses for a reason other than being
    /// unreachable) what was taken is given back and the locks are taken
    /// child by child in order, waiting, so two clients never deadlock.
    async fn begin(&self, plan: &Plan) -> Result<Begun, Errno> {
        let n = self.n();
        let begin = Fop::TxnBegin {
            domain: self.domain.clone(),
            owner: self.owner,
            locks: plan.locks.clone(),
            marks: self.marks_of(plan, &self.pre_op(plan.kind, &[], 1)),
        };
        let results = self.on_each(&self.all(), |_| Some((begin.clone(), Bytes::new()))).await;
        let locked: Vec<usize> = results.iter().filter(|(_, r)| r.is_ok()).map(|(i, _)| *i).collect();
        let refused = results.iter().any(|(_, r)| matches!(r, Err(e) if !is_transport(e)));
        let undo = self.pre_op(plan.kind, &[], -1);
        if refused {
            self.end(plan, &locked, |_| undo.clone()).await;
            return self.begin_in_order(plan).await;
        }
        let quorum = *self.quorum.lock().expect("quorum poisoned");
        if !quorum.met(&locked, n) {
            self.end(plan, &locked, |_| undo.clone()).await;
            let unreachable = results.into_iter().find_map(|(_, r)| r.err());
            return Err(match (locked.is_empty(), unreachable) {
                (true, Some(e)) => e,
                _ => Errno(libc::EROFS),
            });
        }
        let absent: Vec<usize> = (0..n).filter(|i| !locked.contains(i)).collect();
        let prepared = if absent.is_empty() {
            locked.clone()
        } else {
            // Unreachable children miss this change: blame them before it
            // is made, as the pre-op of the careful path does.
            let blame: Vec<(String, [i32; 3])> = absent
                .iter()
                .map(|j| (self.blame_names[*j].clone(), plan.kind.delta(1)))
                .collect();
            self.mark(plan, &locked, &blame).await
        };
        Ok(Begun {
            locked,
            prepared,
            absent,
            unblamed: Vec::new(),
        })
    }

    /// The careful way: locks child by child in order, then the pre-op.
    async fn begin_in_order(&self, plan: &Plan) -> Result<Begun, Errno> {
        let n = self.n();
        let locked = self.lock_all(plan).await?;
        let quorum = *self.quorum.lock().expect("quorum poisoned");
        if !quorum.met(&locked, n) {
            self.unlock_all(plan, &locked).await;
            return Err(Errno(libc::EROFS));
        }
        let absent: Vec<usize> = (0..n).filter(|i| !locked.contains(i)).collect();
        let prepared = self.mark(plan, &locked, &self.pre_op(plan.kind, &absent, 1)).await;
        Ok(Begun {
            locked,
            prepared,
            absent,
            unblamed: Vec::new(),
        })
    }

    /// A create's transaction start and the create itself in one round
    /// trip to every child at once (`TxnCreate`): each child marks the
    /// change's start before making it, so a crash leaves every copy
    /// that changed marked, as the pre-op would. Children out of reach are
    /// blamed by the post-op instead of before the change. `None` when the
    /// careful way must be taken instead — a lock is contended, or a child
    /// refused the start for another reason — after what was made and
    /// taken here was given back.
    async fn begin_with_create(&self, plan: &Plan, op: &Fop) -> Result<Option<(Begun, Outcome)>, Errno> {
        if !self.txn_create.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(None);
        }
        let begin = Fop::TxnBegin {
            domain: self.domain.clone(),
            owner: self.owner,
            locks: plan.locks.clone(),
            marks: self.marks_of(plan, &self.pre_op(plan.kind, &[], 1)),
        };
        let Some(txn) = Fop::join_txn_create(begin, op.clone()) else {
            return Ok(None);
        };
        let n = self.n();
        let results = self.on_each(&self.all(), |_| Some((txn.clone(), Bytes::new()))).await;
        let mut out = Outcome::default();
        let mut locked = Vec::new();
        let mut refused = false;
        let mut unreachable = None;
        for (i, r) in results {
            match r {
                Ok((Reply::TxnCreated(Ok((attr, fh))), payload)) => {
                    locked.push(i);
                    out.done.push((i, (Reply::Created { attr, fh }, payload)));
                }
                Ok((Reply::TxnCreated(Err(e)), _)) => {
                    locked.push(i);
                    out.failed.push((i, Errno(e.errno)));
                }
                Err(Errno(libc::EPROTO)) => {
                    // A brick from before `TxnCreate` (it could not decode
                    // it): the careful way from now on.
                    self.txn_create.store(false, std::sync::atomic::Ordering::Relaxed);
                    refused = true;
                }
                Err(e) if is_transport(&e) => {
                    unreachable.get_or_insert(e);
                }
                Err(_) => refused = true,
                Ok(_) => refused = true,
            }
        }
        locked.sort_unstable();
        let quorum = *self.quorum.lock().expect("quorum poisoned");
        if refused || !quorum.met(&locked, n) {
            // Nothing half made stays: the names made here are taken back
            // under the locks still held, then the start is undone (left
            // marked where a name could not be taken back, for heal).
            let taken_back = out.done.is_empty() || self.unmake_name(op, &out).await;
            let undo = if taken_back {
                self.pre_op(plan.kind, &[], -1)
            } else {
                Vec::new()
            };
            self.end(plan, &locked, |_| undo.clone()).await;
            if refused {
                return Ok(None);
            }
            return Err(match (locked.is_empty(), unreachable) {
                (true, Some(e)) => e,
                _ => Errno(libc::EROFS),
            });
        }
        let absent: Vec<usize> = (0..n).filter(|i| !locked.contains(i)).collect();
        out.done.sort_by_key(|(i, _)| *i);
        let begun = Begun {
            prepared: locked.clone(),
            locked,
            absent: Vec::new(),
            unblamed: absent,
        };
        Ok(Some((begun, out)))
    }

    /// Ends a transaction that changed nothing: the pre-op undone where it
    /// was made, every lock given back.
    async fn abort(&self, plan: &Plan, begun: &Begun) {
        let undo = self.pre_op(plan.kind, &begun.absent, -1);
        self.end(plan, &begun.locked, |i| {
            if begun.prepared.contains(&i) {
                undo.clone()
            } else {
                Vec::new()
            }
        })
        .await;
    }

    /// Post-op and unlock in one round trip per child (`TxnEnd`), all at
    /// once: `deltas_for(child)` are its counter changes (none: unlock
    /// only). Returns the children whose counters all took the change,
    /// with the marked inodes' attributes each sent back. What was
    /// remembered of those inodes is forgotten: the change moved it.
    async fn end(&self, plan: &Plan, locked: &[usize], deltas_for: impl Fn(usize) -> Vec<(String, [i32; 3])>) -> Ended {
        self.end_each(plan, locked, |i| {
            let deltas = deltas_for(i);
            let marks = if deltas.is_empty() {
                Vec::new()
            } else {
                self.marks_of(plan, &deltas)
            };
            (plan.locks.clone(), marks)
        })
        .await
    }

    /// The end of an entry change every replica made: nobody to blame, so
    /// its post-op only settles the dirty marks and gives back the locks,
    /// and the caller has its answer without waiting for that round trip
    /// (an unlink, mkdir, rename… costs three sequential round trips, not
    /// four). Safe because nothing depends on it: should it never land
    /// (this client dies, a brick goes away), every replica holds the
    /// change and only `dirty` is left, which heal settles finding nothing
    /// to do; and this client's next change of the same name takes the
    /// same locks again (they are re-entrant per holder). The directory's
    /// remembered attributes are forgotten now; the post-op's answer
    /// replaces them only if no change was seen meanwhile.
    fn end_later(&self, plan: &Plan, locked: Vec<usize>) {
        for gfid in &plan.marks {
            self.dir_attrs.forget(gfid);
        }
        let epoch = self.dir_attrs.epoch();
        let Some(me) = self.me.upgrade() else { return };
        let plan = Plan {
            kind: plan.kind,
            locks: plan.locks.clone(),
            marks: plan.marks.clone(),
            handle: None,
            source: None,
            carry: None,
        };
        let pending = super::background_ends::started();
        tokio::spawn(async move {
            let marks = me.marks_of(&plan, &[(DIRTY.to_string(), plan.kind.delta(-1))]);
            let ended = me.send_ends(&locked, |_| (plan.locks.clone(), marks.clone())).await;
            if let Some((_, attrs)) = ended.attrs.first() {
                for a in attrs {
                    me.dir_attrs.put_fetched(a, epoch);
                }
            }
            if ended.settled.len() < locked.len() {
                tracing::warn!(subvolume = %me.name, "could not settle a change's marks on every replica; heal will look at it");
            }
            drop(pending);
        });
    }

    /// `end` with each child's own locks to give back and marks to make.
    async fn end_each(
        &self,
        plan: &Plan,
        locked: &[usize],
        end_for: impl Fn(usize) -> (Vec<Lock>, Vec<TxnMark>),
    ) -> Ended {
        for gfid in &plan.marks {
            self.dir_attrs.forget(gfid);
        }
        self.send_ends(locked, end_for).await
    }

    /// The `TxnEnd`s of `end_each`, leaving remembered attributes alone.
    async fn send_ends(&self, locked: &[usize], end_for: impl Fn(usize) -> (Vec<Lock>, Vec<TxnMark>)) -> Ended {
        let results = self
            .on_each(locked, |i| {
                let (locks, marks) = end_for(i);
                let end = Fop::TxnEnd {
                    domain: self.domain.clone(),
                    owner: self.owner,
                    locks,
                    marks,
                };
                Some((end, Bytes::new()))
            })
            .await;
        let mut ended = Ended::default();
        for (i, r) in results {
            match r {
                Ok((Reply::MarkedAttrs(attrs), _)) => {
                    ended.settled.push(i);
                    ended.attrs.push((i, attrs));
                }
                Ok(_) => ended.settled.push(i),
                Err(_) => {}
            }
        }
        ended
    }

    fn marks_of(&self, plan: &Plan, deltas: &[(String, [i32; 3])]) -> Vec<TxnMark> {
        plan.marks
            .iter()
            .map(|gfid| TxnMark {
                gfid: *gfid,
                deltas: deltas.to_vec(),
            })
            .collect()
    }

    /// Adds `deltas` to the counters of every marked inode on `idx`;
    /// returns the children where every add succeeded.
    async fn mark(&self, plan: &Plan, idx: &[usize], deltas: &[(String, [i32; 3])]) -> Vec<usize> {
        let mut ok: Vec<usize> = idx.to_vec();
        for gfid in &plan.marks {
            let results = self
                .on_each(&ok, |_| {
                    Some((
                        Fop::Xattrop {
                            gfid: *gfid,
                            deltas: deltas.to_vec(),
                        },
                        Bytes::new(),
                    ))
                })
                .await;
            ok = results.into_iter().filter(|(_, r)| r.is_ok()).map(|(i, _)| i).collect();
        }
        ok
    }

    /// The request as child `i` receives it.
    fn child_op(&self, i: usize, op: &Fop, plan: &Plan) -> Part {
        if self.is_arbiter(i) && plan.kind == Kind::Data {
            // The arbiter keeps no data, but a truncate may carry other
            // attributes it must apply.
            if let Fop::SetAttr { gfid, set, .. } = op {
                let rest = SetAttr { size: None, ..*set };
                if rest != SetAttr::default() {
                    return Part::Send(Fop::SetAttr {
                        gfid: *gfid,
                        fh: None,
                        set: rest,
                    });
                }
            }
            return Part::Bystander;
        }
        let source_fh = match op {
            Fop::CopyFileRange { fh_in, .. } => Some(*fh_in),
            _ => None,
        };
        let mut missing = false;
        let mapped = op.clone().map_handles(|fh| {
            let h = if Some(fh) == source_fh {
                plan.source.as_ref()
            } else {
                plan.handle.as_ref()
            };
            h.and_then(|h| h.children[i]).unwrap_or_else(|| {
                missing = true;
                fh
            })
        });
        if missing {
            Part::NotOpen
        } else {
            Part::Send(mapped)
        }
    }

    /// Pre-op counters: `dirty` for the change in flight, and — at once,
    /// so a client crash cannot hide it — a blame on every child that is
    /// not taking part.
    fn pre_op(&self, kind: Kind, absent: &[usize], sign: i32) -> Vec<(String, [i32; 3])> {
        let mut d = vec![(DIRTY.to_string(), kind.delta(sign))];
        d.extend(absent.iter().map(|j| (self.blame_names[*j].clone(), kind.delta(sign))));
        d
    }

    /// The children among `idx` a change can reach: not those lacking its
    /// open file.
    fn reachable_for(&self, op: &Fop, plan: &Plan, idx: &[usize]) -> Vec<usize> {
        idx.iter()
            .copied()
            .filter(|&i| !matches!(self.child_op(i, op, plan), Part::NotOpen))
            .collect()
    }

    /// Sends the change to the `prepared` children; sorts out who made it.
    async fn apply_change(&self, op: &Fop, payload: &Bytes, plan: &Plan, prepared: &[usize]) -> Outcome {
        let mut out = Outcome::default();
        let mut parts = std::collections::HashMap::new();
        for &i in prepared {
            match self.child_op(i, op, plan) {
                Part::Send(child_op) => {
                    parts.insert(i, child_op);
                }
                Part::Bystander => out.bystanders.push(i),
                Part::NotOpen => out.failed.push((i, Errno(libc::EBADF))),
            }
        }
        let sent: Vec<usize> = prepared.iter().copied().filter(|i| parts.contains_key(i)).collect();
        for (i, r) in self
            .on_each(&sent, |i| parts.remove(&i).map(|o| (o, payload.clone())))
            .await
        {
            match r {
                Ok(v) => out.done.push((i, v)),
                Err(e) => out.failed.push((i, e)),
            }
        }
        out
    }

    /// A request making a name met names already there on some replicas:
    /// EEXIST, or — a create without O_EXCL — the file there opened in
    /// place of the new one. Decided under the entry lock this transaction
    /// holds:
    /// - fewer replicas hold another name than made ours, or the parent's
    ///   changelog blames every one of them (`holders_are_behind`): theirs
    ///   are stale (removed, or renamed away, while they were away, not
    ///   healed yet).
    ///   They go and the change is made there too, rather than leaving
    ///   those replicas behind, or — a create — answering with one file's
    ///   handle on some replicas and another's on the rest: the chaos
    ///   checker found an acknowledged create's data on one replica only,
    ///   the other's copy empty and blamed by nobody, after a thawed
    ///   replica's stale name was opened and written through.
    /// - at least as many hold the other name: it is the file (our lookup
    ///   raced a create elsewhere, or a replica is behind), so ours is
    ///   taken back and the request answers as though it had met the name
    ///   everywhere: EEXIST, or the existing file opened. Removing the
    ///   majority's name — a directory with all in it — would lose data.
    async fn settle_existing_names(&self, op: &Fop, plan: &Plan, payload: &Bytes, out: &mut Outcome) {
        let Some((parent, name, want, is_dir)) = name_made_by(op) else {
            return;
        };
        let gfid_in = |r: &Reply| match r {
            Reply::Entry(a) | Reply::Created { attr: a, .. } => Some(a.gfid),
            _ => None,
        };
        let made: Vec<usize> = out
            .done
            .iter()
            .filter(|(_, (r, _))| gfid_in(r) == Some(want))
            .map(|(i, _)| *i)
            .collect();
        let opened: Vec<(usize, Reply)> = out
            .done
            .iter()
            .filter(|(_, (r, _))| gfid_in(r).is_some_and(|g| g != want))
            .map(|(i, (r, _))| (*i, r.clone()))
            .collect();
        let refused: Vec<usize> = out
            .failed
            .iter()
            .filter(|(_, e)| e.0 == libc::EEXIST)
            .map(|(i, _)| *i)
            .collect();
        if made.is_empty() || opened.is_empty() && refused.is_empty() {
            return;
        }
        let holders: Vec<usize> = opened.iter().map(|(i, _)| *i).chain(refused.iter().copied()).collect();
        let behind = self.holders_are_behind(parent, &made, &holders).await;
        if !behind && opened.len() + refused.len() >= made.len() {
            tracing::info!(subvolume = %self.name, ?made, existing = opened.len() + refused.len(), "a name being made exists on as many replicas: the new one is taken back");
            for &i in &made {
                self.take_back_on(i, out, parent, name, is_dir).await;
                out.done.retain(|(j, _)| *j != i);
                out.failed.push((i, Errno(libc::EEXIST)));
            }
            return;
        }
        for (i, reply) in &opened {
            if let Reply::Created { fh, .. } = reply {
                let _ = self.on(*i, Fop::Release { fh: *fh }, Bytes::new()).await;
            }
            out.done.retain(|(j, _)| j != i);
            out.failed.push((*i, Errno(libc::EEXIST)));
        }
        for i in holders {
            let stale_is_dir = match self.lookup_on(i, parent, name).await {
                Ok(Some(a)) if a.gfid != want => a.is_dir(),
                _ => continue,
            };
            if self.remove_on(i, parent, name, stale_is_dir).await.is_err() {
                continue;
            }
            let Part::Send(child_op) = self.child_op(i, op, plan) else {
                continue;
            };
            if let Ok(v) = self.on(i, child_op, payload.clone()).await {
                tracing::info!(subvolume = %self.name, child = i, "replaced a stale entry while making a name");
                out.failed.retain(|(j, _)| *j != i);
                out.done.push((i, v));
            }
        }
    }

    /// Does the parent's entry changelog say the replicas holding another
    /// name are behind: every one blamed, and a replica that made ours
    /// blamed by no one? A replica nobody blames has every name that was
    /// acknowledged (a create that missed it blames it before releasing
    /// the entry lock this transaction now holds), so the others' name is
    /// one they kept through a removal or rename they missed. Counting
    /// alone took it for the file when as many replicas held it as made
    /// ours (one of three away), and the create opened the stale file.
    async fn holders_are_behind(&self, parent: Gfid, made: &[usize], holders: &[usize]) -> bool {
        // Only those that just answered: a frozen replica would hold the
        // create up for a whole call timeout.
        let asked: Vec<usize> = made.iter().chain(holders).copied().collect();
        let counters = self.counters(parent, &asked).await;
        let v = self.judge(&counters, Kind::Entry);
        !v.split_brain && holders.iter().all(|i| v.sinks.contains(i)) && made.iter().any(|i| v.sources.contains(i))
    }

    /// Takes back the name made on child `i` (closing what a create opened
    /// there); false if it could not.
    async fn take_back_on(&self, i: usize, out: &Outcome, parent: Gfid, name: &[u8], is_dir: bool) -> bool {
        let Some((_, (reply, _))) = out.done.iter().find(|(j, _)| *j == i) else {
            return true;
        };
        if let Reply::Created { fh, .. } = reply {
            let _ = self.on(i, Fop::Release { fh: *fh }, Bytes::new()).await;
        }
        match self.remove_on(i, parent, name, is_dir).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(subvolume = %self.name, child = i, errno = e.0, "could not take back a name just made; heal will look at it");
                false
            }
        }
    }

    /// Takes back a name `op` made on the replicas in `out.done` (closing
    /// what a create opened); false if `op` makes no name or a replica
    /// could not take it back. A create that opened a file already there
    /// only closes it: that name is not this request's to remove.
    async fn unmake_name(&self, op: &Fop, out: &Outcome) -> bool {
        let Some((parent, name, want, is_dir)) = name_made_by(op) else {
            return false;
        };
        let mut all = true;
        for (i, (reply, _)) in &out.done {
            match reply {
                Reply::Created { attr, fh } if attr.gfid != want => {
                    let _ = self.on(*i, Fop::Release { fh: *fh }, Bytes::new()).await;
                }
                _ => all &= self.take_back_on(*i, out, parent, name, is_dir).await,
            }
        }
        all
    }

    pub(super) async fn transact(&self, op: Fop, payload: Bytes) -> FopResult {
        for fh in op.handles() {
            self.reopen_where_missing(fh).await;
        }
        let plan = self.plan(&op)?;
        if plan.kind == Kind::Data
            && plan.handle.is_some()
            && self.eager_lock.load(std::sync::atomic::Ordering::Relaxed)
        {
            return self.eager_change(op, payload, plan).await;
        }
        let n = self.n();
        let (begun, mut out) = match self.begin_with_create(&plan, &op).await? {
            Some(begun_and_made) => begun_and_made,
            None => {
                let begun = self.begin(&plan).await?;
                if begun.prepared.is_empty() {
                    self.end(&plan, &begun.locked, |_| Vec::new()).await;
                    return Err(Errno(libc::EIO));
                }
                let reachable = self.reachable_for(&op, &plan, &begun.prepared);
                if !self.quorum.lock().expect("quorum poisoned").met(&reachable, n) {
                    // As in `eager_change`: not made where it could not be
                    // acknowledged.
                    self.abort(&plan, &begun).await;
                    return Err(Errno(libc::EROFS));
                }
                let out = self.apply_change(&op, &payload, &plan, &begun.prepared).await;
                (begun, out)
            }
        };
        if !out.done.is_empty() {
            self.settle_existing_names(&op, &plan, &payload, &mut out).await;
        }
        let quorum = *self.quorum.lock().expect("quorum poisoned");
        if !out.done.is_empty() && !quorum.met(&out.succeeded(), n) && self.unmake_name(&op, &out).await {
            // A name made on too few replicas to acknowledge: taken back
            // under the entry lock still held, so the refusal leaves
            // nothing behind (it used to stay on one brick, with nobody
            // blamed on its directory, and its heal waited for ever).
            self.abort(&plan, &begun).await;
            return Err(Errno(libc::EROFS));
        }
        if out.done.is_empty() || out.moved() {
            // Failed everywhere: the request was refused (EEXIST, ENOTEMPTY,
            // ENOSPC…) or every replica is unreachable. Nobody is behind.
            // Or the file moved away (rebalance) while some replicas still
            // took the change: distribute sends it to the new copy, and
            // the old one is on its way out.
            self.abort(&plan, &begun).await;
            return Err(if out.moved() {
                Errno(libc::EREMCHG)
            } else {
                out.first_error()
            });
        }
        let Begun { locked, unblamed, .. } = begun;
        let succeeded = out.succeeded();
        // Locked but failed (the pre-op or the change), or out of reach
        // and not blamed yet: blame them now.
        let missed: Vec<usize> = locked
            .iter()
            .copied()
            .filter(|i| !succeeded.contains(i))
            .chain(unblamed.iter().copied())
            .collect();
        let mut post = vec![(DIRTY.to_string(), plan.kind.delta(-1))];
        post.extend(
            missed
                .iter()
                .map(|j| (self.blame_names[*j].clone(), plan.kind.delta(1))),
        );
        // Failed replicas that are still reachable: their own dirty mark
        // is done with (the blame lives on the others).
        let failed: Vec<usize> = out.failed.iter().map(|(i, _)| *i).collect();
        let behind: Vec<usize> = (0..n).filter(|i| !succeeded.contains(i)).collect();
        let carried = carried_file(&plan, &out).filter(|_| quorum.met(&succeeded, n));
        if plan.kind == Kind::Entry && carried.is_none() && behind.is_empty() && missed.is_empty() {
            self.end_later(&plan, locked);
            return self.reply_of(&op, out.done, &behind);
        }
        let hold_pre_op = self.pre_op(Kind::Data, &behind, 1);
        let settled = self
            .end_each(&plan, &locked, |i| {
                let deltas = if succeeded.contains(&i) {
                    post.clone()
                } else if failed.contains(&i) {
                    vec![(DIRTY.to_string(), plan.kind.delta(-1))]
                } else {
                    Vec::new()
                };
                let mut marks = if deltas.is_empty() {
                    Vec::new()
                } else {
                    self.marks_of(&plan, &deltas)
                };
                match carried {
                    Some(file) if succeeded.contains(&i) => {
                        // The first write's pre-op, made now: the new
                        // file's lock stays held and it is marked dirty,
                        // blaming whoever missed the create.
                        marks.push(TxnMark {
                            gfid: file,
                            deltas: hold_pre_op.clone(),
                        });
                        let locks = plan
                            .locks
                            .iter()
                            .filter(|l| **l != Lock::Inode(file))
                            .cloned()
                            .collect();
                        (locks, marks)
                    }
                    _ => (plan.locks.clone(), marks),
                }
            })
            .await;
        // The directory's new attributes, as a replica that made the
        // change has them (see `DirAttrs`).
        if let Some((_, attrs)) = settled.attrs.iter().find(|(i, _)| succeeded.contains(i)) {
            for a in attrs {
                self.dir_attrs.put(a);
            }
        }
        let settled = settled.settled;
        if succeeded.iter().any(|i| !settled.contains(i)) {
            tracing::warn!(subvolume = %self.name, "could not record a change's outcome on every replica; heal will look at it");
        }
        if let Some(file) = carried {
            self.carry_hold(file, &succeeded, &settled).await;
        }
        for gfid in &plan.marks {
            self.demote(gfid, plan.kind, &behind);
        }
        if !quorum.met(&succeeded, n) {
            return Err(Errno(libc::EROFS));
        }
        self.reply_of(&op, out.done, &behind)
    }

    /// A data change under an eager lock: the first write on a file takes
    /// the lock and marks dirty; later writes from this client reuse both;
    /// the post-op and unlock come when the file goes quiet (or at flush,
    /// fsync, close), so a single writer pays no lock round trip per write.
    async fn eager_change(&self, op: Fop, payload: Bytes, plan: Plan) -> FopResult {
        let gfid = plan.marks[0];
        let n = self.n();
        let members = self.join_hold(gfid, &plan).await?;
        let reachable = self.reachable_for(&op, &plan, &members);
        if !self.quorum.lock().expect("quorum poisoned").met(&reachable, n) {
            // The hold lost members (or quorum was raised) since it began,
            // or a member lacks the open file (its brick restarted, the
            // reopen not due yet): a write it could not acknowledge is not
            // made at all. Made on the one replica that could take it, it
            // made that copy the only source of a write refused EROFS (a
            // chaos finding).
            self.leave_hold(gfid, &[]);
            return Err(Errno(libc::EROFS));
        }
        let out = self.apply_change(&op, &payload, &plan, &members).await;
        if out.moved() {
            // Migrated away (see `transact`): nobody is to blame.
            self.leave_hold(gfid, &[]);
            return Err(Errno(libc::EREMCHG));
        }
        let succeeded = out.succeeded();
        let failed: Vec<usize> = out.failed.iter().map(|(i, _)| *i).collect();
        if !out.done.is_empty() && !failed.is_empty() {
            // Blame the replicas that missed this write at once, and leave
            // them out of the rest of the hold.
            let blame: Vec<(String, [i32; 3])> = failed
                .iter()
                .map(|j| (self.blame_names[*j].clone(), Kind::Data.delta(1)))
                .collect();
            self.mark(&plan, &succeeded, &blame).await;
            self.demote(&gfid, Kind::Data, &failed);
        }
        let quorum = *self.quorum.lock().expect("quorum poisoned");
        self.leave_hold(gfid, if out.done.is_empty() { &[] } else { &failed });
        if out.done.is_empty() {
            return Err(out.first_error());
        }
        if !quorum.met(&succeeded, n) {
            tracing::debug!(subvolume = %self.name, %gfid, ?members, ?succeeded, failed = ?out.failed, "a write short of quorum");
            return Err(Errno(libc::EROFS));
        }
        let behind: Vec<usize> = (0..n).filter(|i| !succeeded.contains(i)).collect();
        self.reply_of(&op, out.done, &behind)
    }

    /// Joins the file's eager hold, taking the lock and the pre-op first if
    /// there is none; returns the replicas taking part.
    async fn join_hold(&self, gfid: Gfid, plan: &Plan) -> Result<Vec<usize>, Errno> {
        // Held until the new hold is in place, so two writes never both
        // take the lock and the pre-op.
        let _serial = loop {
            let serial = self.hold_shard(&gfid).lock().await;
            match self.holds.lock().expect("holds poisoned").get_mut(&gfid) {
                Some(h) if !h.closing => {
                    h.users += 1;
                    return Ok(h.members.clone());
                }
                None => break serial,
                // Closing: wait for its release, then take a new one.
                Some(_) => {}
            }
            drop(serial);
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        };
        let Begun {
            locked,
            prepared: mut members,
            ..
        } = self.begin(plan).await?;
        if members.len() < locked.len() {
            tracing::debug!(subvolume = %self.name, %gfid, ?locked, ?members, "pre-op failed on some replicas");
            members = self.blame_left_out(plan, gfid, &locked, members).await;
        }
        if members.is_empty() {
            self.end(plan, &locked, |_| Vec::new()).await;
            return Err(Errno(libc::EIO));
        }
        let now = std::time::Instant::now();
        self.holds.lock().expect("holds poisoned").insert(
            gfid,
            super::Hold {
                members: members.clone(),
                locked,
                users: 1,
                since: now,
                last: now,
                closing: false,
            },
        );
        self.watch_hold(gfid);
        Ok(members)
    }

    /// A replica that took the lock but failed the pre-op takes no part
    /// in the hold's writes: it is blamed at once on the members, like
    /// one that was never locked. Unblamed, it missed every write of the
    /// hold with nobody the wiser and served them stale to readers (the
    /// chaos checker found it after a restarted brick). Returns the members
    /// that recorded the blame; if one could not, nobody takes part (its
    /// dirty mark sends heal to look).
    async fn blame_left_out(&self, plan: &Plan, gfid: Gfid, locked: &[usize], members: Vec<usize>) -> Vec<usize> {
        let left_out: Vec<usize> = locked.iter().copied().filter(|i| !members.contains(i)).collect();
        let blame: Vec<(String, [i32; 3])> = left_out
            .iter()
            .map(|j| (self.blame_names[*j].clone(), Kind::Data.delta(1)))
            .collect();
        self.demote(&gfid, Kind::Data, &left_out);
        let blamed = self.mark(plan, &members, &blame).await;
        if blamed.len() < members.len() {
            return Vec::new();
        }
        blamed
    }

    /// A new file's eager hold, begun by its create: `holders` made the
    /// file and kept its lock; those that `settled` the create's end also
    /// took the hold's dirty mark. If one of them could not, the hold is
    /// given back at once and the first write begins its own.
    async fn carry_hold(&self, file: Gfid, holders: &[usize], settled: &[usize]) {
        let members: Vec<usize> = holders.iter().copied().filter(|i| settled.contains(i)).collect();
        let whole = members.len() == holders.len();
        let now = std::time::Instant::now();
        self.holds.lock().expect("holds poisoned").insert(
            file,
            super::Hold {
                members,
                locked: holders.to_vec(),
                users: 0,
                since: now,
                last: now,
                closing: !whole,
            },
        );
        if whole {
            self.watch_hold(file);
        } else {
            self.release_hold(file).await;
        }
    }

    fn leave_hold(&self, gfid: Gfid, failed: &[usize]) {
        if let Some(h) = self.holds.lock().expect("holds poisoned").get_mut(&gfid) {
            h.users -= 1;
            h.last = std::time::Instant::now();
            h.members.retain(|i| !failed.contains(i));
        }
    }

    /// Releases the hold when the file is quiet, or has been held long
    /// enough that another client's writer deserves its turn.
    fn watch_hold(&self, gfid: Gfid) {
        let Some(me) = self.me.upgrade() else { return };
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(super::HOLD_TICK).await;
                let due = {
                    let mut holds = me.holds.lock().expect("holds poisoned");
                    let Some(h) = holds.get_mut(&gfid) else { return };
                    if h.since.elapsed() >= super::HOLD_MAX {
                        h.closing = true;
                    }
                    h.users == 0 && (h.closing || h.last.elapsed() >= super::HOLD_IDLE)
                };
                if due {
                    me.release_hold(gfid).await;
                    return;
                }
            }
        });
    }

    /// Ends the file's eager hold (if any) once its writes are done: the
    /// delayed post-op, then unlock. Flush, fsync and close call it, so
    /// the changelog is settled when they return.
    pub(super) async fn settle(&self, gfid: Gfid) {
        loop {
            {
                let mut holds = self.holds.lock().expect("holds poisoned");
                match holds.get_mut(&gfid) {
                    None => return,
                    Some(h) => {
                        h.closing = true;
                        if h.users == 0 {
                            break;
                        }
                    }
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        self.release_hold(gfid).await;
    }

    async fn release_hold(&self, gfid: Gfid) {
        let shard = self.hold_shard(&gfid);
        let _serial = shard.lock().await;
        let Some(h) = self.holds.lock().expect("holds poisoned").remove(&gfid) else {
            return;
        };
        let plan = Plan {
            kind: Kind::Data,
            locks: vec![Lock::Inode(gfid)],
            marks: vec![gfid],
            handle: None,
            source: None,
            carry: None,
        };
        self.end(&plan, &h.locked, |i| {
            if h.members.contains(&i) {
                vec![(DIRTY.to_string(), Kind::Data.delta(-1))]
            } else {
                Vec::new()
            }
        })
        .await;
    }

    /// The answer to the caller, from the replicas that made the change.
    fn reply_of(&self, op: &Fop, done: Vec<(usize, (Reply, Bytes))>, behind: &[usize]) -> FopResult {
        if let Fop::Create { flags, .. } = op {
            let mut fhs = vec![None; self.n()];
            let mut attr = None;
            for (i, (r, _)) in &done {
                if let Reply::Created { attr: a, fh } = r {
                    fhs[*i] = Some(*fh);
                    if !self.is_arbiter(*i) || attr.is_none() {
                        attr = Some(*a);
                    }
                }
            }
            let attr = attr.ok_or(Errno(libc::EIO))?;
            let readable: Vec<usize> = (0..self.n()).filter(|i| !behind.contains(i)).collect();
            self.remember(
                attr.gfid,
                super::Readable {
                    data: readable.iter().copied().filter(|i| !self.is_arbiter(*i)).collect(),
                    metadata: readable.clone(),
                    entry: Vec::new(),
                },
            );
            let fh = self.new_handle(attr.gfid, fhs, *flags);
            return Ok((Reply::Created { attr, fh }, Bytes::new()));
        }
        // Prefer a data replica's answer (the arbiter's sizes are zero).
        let pick = done.iter().position(|(i, _)| !self.is_arbiter(*i)).unwrap_or(0);
        Ok(done.into_iter().nth(pick).expect("an answer").1)
    }
}

/// The file whose hold a create carries: only if every replica that
/// answered made this very file (one that met an existing name opened
/// another, whose lock nobody took).
fn carried_file(plan: &Plan, out: &Outcome) -> Option<Gfid> {
    let file = plan.carry?;
    let ours = |r: &Reply| matches!(r, Reply::Created { attr, .. } if attr.gfid == file);
    (!out.done.is_empty() && out.done.iter().all(|(_, (r, _))| ours(r))).then_some(file)
}

/// The name a request makes, the gfid it gives it, and whether it is a
/// directory; None for requests that make no name.
fn name_made_by(op: &Fop) -> Option<(Gfid, &[u8], Gfid, bool)> {
    match op {
        Fop::Create { parent, name, gfid, .. }
        | Fop::Mknod { parent, name, gfid, .. }
        | Fop::Symlink { parent, name, gfid, .. }
        | Fop::MakeLink { parent, name, gfid, .. } => Some((*parent, name, *gfid, false)),
        Fop::Mkdir { parent, name, gfid, .. } => Some((*parent, name, *gfid, true)),
        Fop::Link {
            gfid,
            new_parent,
            new_name,
        } => Some((*new_parent, new_name, *gfid, false)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::{FopFuture, Subvolume};
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use uuid::Uuid;

    /// A brick in memory: opens, locks and writes succeed; xattrops add to
    /// its counters, unless it refuses changes to them (as a restarted
    /// brick that lost the file's handle did).
    struct FakeBrick {
        counters: Mutex<HashMap<String, [i32; 3]>>,
        writes: Mutex<u32>,
        refuses_xattrop: bool,
        /// Names in the root, with their gfids (creates and unlinks only).
        names: Mutex<Vec<(Vec<u8>, Gfid)>>,
        /// Creates fail as if the brick had gone away.
        unreachable_for_creates: bool,
        /// Every request, in order.
        calls: Mutex<Vec<Fop>>,
        /// Transaction starts refused (EAGAIN) as if another client held
        /// the locks, before they are granted.
        contended: Mutex<u32>,
        /// A brick from before `TxnCreate`: it cannot decode one.
        old: std::sync::atomic::AtomicBool,
        /// Opens fail as if the brick were out of reach.
        refuses_opens: std::sync::atomic::AtomicBool,
        /// When set, each `TxnEnd` waits for a permit of it.
        ends_gate: Mutex<Option<Arc<tokio::sync::Semaphore>>>,
    }

    impl FakeBrick {
        fn new(refuses_xattrop: bool) -> Arc<FakeBrick> {
            Self::with(refuses_xattrop, false)
        }

        fn with(refuses_xattrop: bool, unreachable_for_creates: bool) -> Arc<FakeBrick> {
            Arc::new(FakeBrick {
                counters: Mutex::new(HashMap::new()),
                writes: Mutex::new(0),
                refuses_xattrop,
                names: Mutex::new(Vec::new()),
                unreachable_for_creates,
                calls: Mutex::new(Vec::new()),
                contended: Mutex::new(0),
                old: std::sync::atomic::AtomicBool::new(false),
                refuses_opens: std::sync::atomic::AtomicBool::new(false),
                ends_gate: Mutex::new(None),
            })
        }

        /// A contended start is refused; true once for each `contended`.
        fn contends(&self) -> bool {
            let mut left = self.contended.lock().unwrap();
            let refuse = *left > 0;
            *left = left.saturating_sub(1);
            refuse
        }

        fn calls_named(&self, name: &str) -> Vec<Fop> {
            self.calls
                .lock()
                .unwrap()
                .iter()
                .filter(|op| op.name() == name)
                .cloned()
                .collect()
        }

        fn add(&self, deltas: Vec<(String, [i32; 3])>) {
            let mut c = self.counters.lock().unwrap();
            for (name, d) in deltas {
                let v = c.entry(name).or_default();
                for k in 0..3 {
                    v[k] += d[k];
                }
            }
        }

        fn counter(&self, name: &str) -> [i32; 3] {
            self.counters.lock().unwrap().get(name).copied().unwrap_or_default()
        }
    }

    impl Subvolume for FakeBrick {
        fn call(&self, op: Fop, _payload: Bytes) -> FopFuture<'_> {
            self.calls.lock().unwrap().push(op.clone());
            Box::pin(self.serve(op))
        }

        fn name(&self) -> String {
            "fake".into()
        }
    }

    impl FakeBrick {
        async fn serve(&self, op: Fop) -> FopResult {
            let gate = self.ends_gate.lock().unwrap().clone();
            if let (Fop::TxnEnd { .. }, Some(gate)) = (&op, gate) {
                gate.acquire().await.expect("gate open").forget();
            }
            {
                let empty = |r| Ok((r, Bytes::new()));
                match op {
                    Fop::TxnCreate { .. } if self.old.load(std::sync::atomic::Ordering::Relaxed) => {
                        Err(Errno(libc::EPROTO))
                    }
                    op @ Fop::TxnCreate { .. } => {
                        let (begin, create) = op.split_txn_create().expect("a TxnCreate");
                        Box::pin(self.serve(begin)).await?;
                        let outcome = match Box::pin(self.serve(create)).await {
                            Ok((Reply::Created { attr, fh }, _)) => Ok((attr, fh)),
                            Ok(other) => panic!("create answered {other:?}"),
                            Err(e) => Err(cairn_common::proto::ErrorReply {
                                errno: e.0,
                                message: String::new(),
                            }),
                        };
                        empty(Reply::TxnCreated(outcome))
                    }
                    Fop::TxnBegin { .. } if self.contends() => Err(Errno(libc::EAGAIN)),
                    Fop::Open { .. } if self.refuses_opens.load(std::sync::atomic::Ordering::Relaxed) => {
                        Err(Errno(libc::ENOTCONN))
                    }
                    Fop::Open { .. } => empty(Reply::Opened { fh: 1 }),
                    Fop::InodeLk { .. } | Fop::Flush { .. } | Fop::Fsync { .. } | Fop::Release { .. } => {
                        empty(Reply::Empty)
                    }
                    Fop::Xattrop { deltas, .. } => {
                        if self.refuses_xattrop && !deltas.is_empty() {
                            return Err(Errno(libc::ESTALE));
                        }
                        self.add(deltas);
                        let c = self.counters.lock().unwrap();
                        empty(Reply::Counters(c.iter().map(|(k, v)| (k.clone(), *v)).collect()))
                    }
                    // The compound begin and end: locks always granted;
                    // the counters as Xattrop treats them.
                    Fop::TxnBegin { marks, .. } | Fop::TxnEnd { marks, .. } => {
                        let changes = marks.iter().any(|m| !m.deltas.is_empty());
                        if self.refuses_xattrop && changes {
                            return Err(Errno(libc::ESTALE));
                        }
                        for m in marks {
                            self.add(m.deltas);
                        }
                        empty(Reply::Empty)
                    }
                    Fop::Write { len, .. } => {
                        *self.writes.lock().unwrap() += 1;
                        empty(Reply::Written { len })
                    }
                    Fop::EntryLk { .. } => empty(Reply::Empty),
                    Fop::Create { .. } if self.unreachable_for_creates => Err(Errno(libc::ENOTCONN)),
                    // Away for the truncate that follows such a create too.
                    Fop::SetAttr { .. } if self.unreachable_for_creates => Err(Errno(libc::ENOTCONN)),
                    Fop::SetAttr { gfid, .. } => empty(Reply::Attr(crate::layer::test_file(gfid, 0))),
                    // As a brick does: without O_EXCL an existing name's
                    // file is opened.
                    Fop::Create { name, gfid, flags, .. } => {
                        let mut names = self.names.lock().unwrap();
                        let gfid = match names.iter().find(|(n, _)| *n == name) {
                            Some(_) if flags & libc::O_EXCL != 0 => return Err(Errno(libc::EEXIST)),
                            Some((_, existing)) => *existing,
                            None => {
                                names.push((name, gfid));
                                gfid
                            }
                        };
                        empty(Reply::Created {
                            attr: crate::layer::test_file(gfid, 0),
                            fh: 1,
                        })
                    }
                    Fop::Lookup { name, .. } => match self.names.lock().unwrap().iter().find(|(n, _)| *n == name) {
                        Some((_, gfid)) => empty(Reply::Entry(crate::layer::test_file(*gfid, 0))),
                        None => Err(Errno(libc::ENOENT)),
                    },
                    Fop::Unlink { name, .. } => {
                        let mut names = self.names.lock().unwrap();
                        let before = names.len();
                        names.retain(|(n, _)| *n != name);
                        if names.len() == before {
                            return Err(Errno(libc::ENOENT));
                        }
                        empty(Reply::Empty)
                    }
                    _ => Err(Errno(libc::ENOSYS)),
                }
            }
        }
    }

    #[tokio::test]
    async fn a_replica_that_fails_the_eager_pre_op_is_blamed_for_the_writes_it_misses() {
        let bricks: Vec<Arc<FakeBrick>> = (0..3).map(|i| FakeBrick::new(i == 0)).collect();
        let ids: Vec<Uuid> = (1..=3).map(Uuid::from_u128).collect();
        let children = bricks.iter().map(|b| b.clone() as Arc<dyn Subvolume>).collect();
        let r = Replicate::new("t-replicate-0".into(), children, &ids, false).unwrap();
        let gfid = Gfid([7; 16]);
        let fh = match r
            .call(
                Fop::Open {
                    gfid,
                    flags: libc::O_RDWR,
                },
                Bytes::new(),
            )
            .await
        {
            Ok((Reply::Opened { fh }, _)) => fh,
            other => panic!("open: {other:?}"),
        };
        let write = Fop::Write { fh, offset: 0, len: 4 };
        r.call(write, Bytes::from_static(b"data"))
            .await
            .expect("two of three took the write");
        r.call(Fop::Flush { fh, lock_owner: 1 }, Bytes::new())
            .await
            .expect("flush");
        assert_eq!(*bricks[0].writes.lock().unwrap(), 0, "brick 0 took no part");
        let blame = changelog_name(&ids[0]);
        for (i, b) in bricks.iter().enumerate().skip(1) {
            assert_eq!(*b.writes.lock().unwrap(), 1, "brick {i} took the write");
            assert!(
                b.counter(&blame)[Kind::Data as usize] > 0,
                "brick {i} does not blame brick 0 for the write it missed: {:?}",
                b.counters.lock().unwrap()
            );
            assert_eq!(b.counter(DIRTY), [0; 3], "brick {i}'s dirty mark is settled");
        }
    }

    /// The chaos checker found a create refused for want of quorum left
    /// behind on the one brick that made it, with nobody blamed on its
    /// directory: no heal ever removed or spread it.
    #[tokio::test]
    async fn a_create_refused_for_want_of_quorum_leaves_no_name_behind() {
        let bricks: Vec<Arc<FakeBrick>> = (0..3).map(|i| FakeBrick::with(false, i > 0)).collect();
        let ids: Vec<Uuid> = (1..=3).map(Uuid::from_u128).collect();
        let children = bricks.iter().map(|b| b.clone() as Arc<dyn Subvolume>).collect();
        let r = Replicate::new("t-replicate-0".into(), children, &ids, false).unwrap();
        let create = Fop::Create {
            parent: Gfid::ROOT,
            name: b"f".to_vec(),
            gfid: Gfid([9; 16]),
            mode: 0o644,
            umask: 0,
            flags: libc::O_WRONLY,
            creds: cairn_common::proto::Creds { uid: 0, gid: 0 },
        };
        let err = r
            .call(create, Bytes::new())
            .await
            .expect_err("one of three cannot acknowledge");
        assert_eq!(err.0, libc::EROFS);
        for (i, b) in bricks.iter().enumerate() {
            assert!(b.names.lock().unwrap().is_empty(), "brick {i} kept the name");
            let counters = b.counters.lock().unwrap().clone();
            assert!(
                counters.values().all(|v| *v == [0; 3]),
                "brick {i} is left marked: {counters:?}"
            );
        }
    }

    fn create_of(name: &[u8], gfid: Gfid) -> Fop {
        Fop::Create {
            parent: Gfid::ROOT,
            name: name.to_vec(),
            gfid,
            mode: 0o644,
            umask: 0,
            flags: libc::O_WRONLY | libc::O_CREAT,
            creds: cairn_common::proto::Creds { uid: 0, gid: 0 },
        }
    }

    /// A create without O_EXCL that meets the name another client made
    /// meanwhile opens that file, and O_TRUNC empties it: a data change.
    /// Done by the bricks inside the create, its only marks were the
    /// directory's, so a replica away kept the old data, blamed by nobody
    /// (found reading the soak's logs, 2026-12-06).
    #[tokio::test]
    async fn a_truncating_create_that_meets_an_existing_file_blames_a_replica_that_missed_it_for_the_data() {
        let bricks: Vec<Arc<FakeBrick>> = (0..3).map(|i| FakeBrick::with(false, i == 2)).collect();
        let existing = Gfid([5; 16]);
        for b in &bricks[..2] {
            b.names.lock().unwrap().push((b"f".to_vec(), existing));
        }
        let r = replica_of(&bricks);
        let mut create = create_of(b"f", Gfid([6; 16]));
        if let Fop::Create { flags, .. } = &mut create {
            *flags |= libc::O_TRUNC;
        }
        match r.call(create, Bytes::new()).await {
            Ok((Reply::Created { attr, .. }, _)) => {
                assert_eq!(attr.gfid, existing, "the file already there is opened");
                assert_eq!(attr.size, 0, "answered as emptied");
            }
            other => panic!("create: {other:?}"),
        }
        let blame = changelog_name(&Uuid::from_u128(3));
        for (i, b) in bricks.iter().enumerate().take(2) {
            assert!(
                b.calls_named("create")
                    .iter()
                    .chain(b.calls_named("txn_create").iter())
                    .all(|op| matches!(op, Fop::Create { flags, .. } | Fop::TxnCreate { flags, .. } if flags & libc::O_TRUNC == 0)),
                "brick {i} was asked to truncate inside the create"
            );
            let truncated = b
                .calls_named("setattr")
                .iter()
                .any(|op| matches!(op, Fop::SetAttr { gfid, set, .. } if *gfid == existing && set.size == Some(0)));
            assert!(truncated, "brick {i} never emptied the file");
            assert!(
                b.counter(&blame)[Kind::Data as usize] > 0,
                "brick {i} does not blame brick 2 for the file's data: {:?}",
                b.counters.lock().unwrap()
            );
        }
    }

    fn replica_of(bricks: &[Arc<FakeBrick>]) -> Arc<Replicate> {
        let ids: Vec<Uuid> = (1..=bricks.len() as u128).map(Uuid::from_u128).collect();
        let children = bricks.iter().map(|b| b.clone() as Arc<dyn Subvolume>).collect();
        Replicate::new("t-replicate-0".into(), children, &ids, false).unwrap()
    }

    /// The 1500 s chaos soak found a create acknowledged with its data on
    /// one replica only: a thawed replica still held the name's old file,
    /// the create opened that file there, and the writes went to it while
    /// another replica's new copy stayed empty and blamed by nobody.
    #[tokio::test]
    async fn a_create_meeting_a_stale_name_on_a_minority_replaces_it() {
        let bricks: Vec<Arc<FakeBrick>> = (0..3).map(|_| FakeBrick::new(false)).collect();
        let (old, new) = (Gfid([1; 16]), Gfid([2; 16]));
        bricks[2].names.lock().unwrap().push((b"f".to_vec(), old));
        let r = replica_of(&bricks);
        match r.call(create_of(b"f", new), Bytes::new()).await {
            Ok((Reply::Created { attr, .. }, _)) => assert_eq!(attr.gfid, new),
            other => panic!("create: {other:?}"),
        }
        for (i, b) in bricks.iter().enumerate() {
            assert_eq!(*b.names.lock().unwrap(), vec![(b"f".to_vec(), new)], "brick {i}");
        }
    }

    /// The other way round: the name is a majority's file (this mount's
    /// lookup raced a create, or one replica is behind). Removing it would
    /// lose that file; the create opens it instead and takes its own new
    /// copy back.
    #[tokio::test]
    async fn a_create_meeting_a_majoritys_name_opens_that_file() {
        let bricks: Vec<Arc<FakeBrick>> = (0..3).map(|_| FakeBrick::new(false)).collect();
        let (old, new) = (Gfid([1; 16]), Gfid([2; 16]));
        for b in &bricks[..2] {
            b.names.lock().unwrap().push((b"f".to_vec(), old));
        }
        let r = replica_of(&bricks);
        match r.call(create_of(b"f", new), Bytes::new()).await {
            Ok((Reply::Created { attr, .. }, _)) => assert_eq!(attr.gfid, old),
            other => panic!("create: {other:?}"),
        }
        for b in &bricks[..2] {
            assert_eq!(*b.names.lock().unwrap(), vec![(b"f".to_vec(), old)]);
        }
        assert!(
            bricks[2].names.lock().unwrap().is_empty(),
            "the new copy was taken back"
        );
        assert!(
            r.holds.lock().unwrap().is_empty(),
            "no hold on a file the create did not make"
        );
        for (i, b) in bricks.iter().enumerate() {
            assert_no_lock_kept(b, &format!("brick {i}"));
        }
    }

    /// The 1500 s soak: a rename `f1 → d0/f3` missed by one replica left
    /// the old name there. With a third replica away, a create of the old
    /// name met it on as many replicas as made the new one, and counting
    /// alone took the stale file for the real one. The directory's
    /// changelog knows better: the replica holding it is blamed.
    #[tokio::test]
    async fn a_create_meeting_a_name_on_a_blamed_replica_replaces_it_even_on_a_tie() {
        let bricks: Vec<Arc<FakeBrick>> = (0..3).map(|i| FakeBrick::with(false, i == 2)).collect();
        let (old, new) = (Gfid([1; 16]), Gfid([2; 16]));
        bricks[1].names.lock().unwrap().push((b"f".to_vec(), old));
        let behind = changelog_name(&Uuid::from_u128(2));
        let mut entry_blame = [0; 3];
        entry_blame[Kind::Entry as usize] = 1;
        for b in [&bricks[0], &bricks[2]] {
            b.add(vec![(behind.clone(), entry_blame)]);
        }
        let r = replica_of(&bricks);
        match r.call(create_of(b"f", new), Bytes::new()).await {
            Ok((Reply::Created { attr, .. }, _)) => assert_eq!(attr.gfid, new),
            other => panic!("create: {other:?}"),
        }
        for b in &bricks[..2] {
            assert_eq!(*b.names.lock().unwrap(), vec![(b"f".to_vec(), new)]);
        }
    }

    fn changelog_name(id: &Uuid) -> String {
        super::super::changelog::pending_name(id)
    }

    /// Creates a file for writing, writes it once and flushes it; returns
    /// the create's handle.
    async fn create_write_flush(r: &Replicate, file: Gfid) -> u64 {
        let fh = match r.call(create_of(b"f", file), Bytes::new()).await {
            Ok((Reply::Created { attr, fh }, _)) => {
                assert_eq!(attr.gfid, file);
                fh
            }
            other => panic!("create: {other:?}"),
        };
        r.call(Fop::Write { fh, offset: 0, len: 4 }, Bytes::from_static(b"data"))
            .await
            .expect("write");
        r.call(Fop::Flush { fh, lock_owner: 1 }, Bytes::new())
            .await
            .expect("flush");
        fh
    }

    fn locks_of(op: &Fop) -> Vec<Lock> {
        match op {
            Fop::TxnBegin { locks, .. } | Fop::TxnCreate { locks, .. } | Fop::TxnEnd { locks, .. } => locks.clone(),
            other => panic!("not a transaction: {other:?}"),
        }
    }

    /// Transaction starts a brick was sent, alone or with a create.
    fn begins(b: &FakeBrick) -> Vec<Fop> {
        let mut all = b.calls_named("txn_begin");
        all.extend(b.calls_named("txn_create"));
        all
    }

    /// Bricks holding `f` (all but those in `lacking`), whose post-ops wait
    /// at a gate; the replicate layer over them.
    fn gated_bricks_holding_f(lacking: &[usize]) -> (Vec<Arc<FakeBrick>>, Arc<tokio::sync::Semaphore>, Arc<Replicate>) {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let bricks: Vec<Arc<FakeBrick>> = (0..3).map(|_| FakeBrick::new(false)).collect();
        for (i, b) in bricks.iter().enumerate() {
            if !lacking.contains(&i) {
                b.names.lock().unwrap().push((b"f".to_vec(), Gfid([4; 16])));
            }
            *b.ends_gate.lock().unwrap() = Some(gate.clone());
        }
        let r = replica_of(&bricks);
        (bricks, gate, r)
    }

    fn unlink_f() -> Fop {
        Fop::Unlink {
            parent: Gfid::ROOT,
            name: b"f".to_vec(),
        }
    }

    /// An entry change every replica made is answered before its post-op
    /// (nobody to blame: it only settles the marks and gives back the
    /// locks), which still lands after.
    #[tokio::test]
    async fn an_unlink_every_replica_made_is_answered_before_its_post_op_which_lands_after() {
        let (bricks, gate, r) = gated_bricks_holding_f(&[]);
        tokio::time::timeout(std::time::Duration::from_secs(10), r.call(unlink_f(), Bytes::new()))
            .await
            .expect("answered without waiting for the post-op")
            .expect("unlinked");
        for (i, b) in bricks.iter().enumerate() {
            assert!(b.names.lock().unwrap().is_empty(), "brick {i} still has f");
            assert_eq!(
                b.counter(DIRTY)[Kind::Entry as usize],
                1,
                "brick {i}: marked until the post-op"
            );
        }
        gate.add_permits(bricks.len());
        let settled = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while !bricks
                .iter()
                .all(|b| b.counter(DIRTY) == [0; 3] && b.calls_named("txn_end").len() == 1)
            {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        })
        .await;
        assert!(settled.is_ok(), "the post-op never settled every mark");
        for (i, b) in bricks.iter().enumerate() {
            assert_no_lock_kept(b, &format!("brick {i}"));
        }
        assert!(super::super::background_ends::settled(std::time::Duration::from_secs(1)).await);
    }

    /// One that a replica missed blames it before the answer: otherwise a
    /// client that died in between would leave the change unblamed.
    #[tokio::test]
    async fn an_unlink_a_replica_missed_blames_it_before_answering() {
        let (bricks, gate, r) = gated_bricks_holding_f(&[2]);
        let call = {
            let r = r.clone();
            tokio::spawn(async move { r.call(unlink_f(), Bytes::new()).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(
            !call.is_finished(),
            "answered before its post-op blamed the replica that missed it"
        );
        gate.add_permits(bricks.len());
        call.await.unwrap().expect("two of three unlinked");
        let blame = changelog_name(&Uuid::from_u128(3));
        for (i, b) in bricks.iter().enumerate().take(2) {
            assert_eq!(
                b.counter(&blame)[Kind::Entry as usize],
                1,
                "brick {i} does not blame brick 2"
            );
        }
    }

    /// Every lock a brick was asked to take, it was asked to give back.
    fn assert_no_lock_kept(b: &FakeBrick, which: &str) {
        let taken: Vec<Lock> = begins(b).iter().flat_map(locks_of).collect();
        let given: Vec<Lock> = b.calls_named("txn_end").iter().flat_map(locks_of).collect();
        assert!(
            taken.iter().all(|l| given.contains(l)),
            "{which} kept a lock: took {taken:?}, gave back {given:?}"
        );
    }

    /// A new file's first write begins no transaction of its own: the
    /// create took the file's lock with the entry lock, and its end left
    /// the lock held and the file marked dirty, as the write's pre-op
    /// would have. The flush settles both.
    #[tokio::test]
    async fn a_create_for_writing_carries_its_lock_and_dirty_mark_into_the_first_write() {
        let bricks: Vec<Arc<FakeBrick>> = (0..2).map(|_| FakeBrick::new(false)).collect();
        let r = replica_of(&bricks);
        let file = Gfid([3; 16]);
        let fh = match r.call(create_of(b"f", file), Bytes::new()).await {
            Ok((Reply::Created { fh, .. }, _)) => fh,
            other => panic!("create: {other:?}"),
        };
        for (i, b) in bricks.iter().enumerate() {
            let mut dirty_data = [0; 3];
            dirty_data[Kind::Data as usize] = 1;
            assert_eq!(b.counter(DIRTY), dirty_data, "brick {i}: the new file is marked dirty");
            let ends = b.calls_named("txn_end");
            assert_eq!(
                locks_of(&ends[0]),
                vec![Lock::Entry(Gfid::ROOT, b"f".to_vec())],
                "brick {i}: the file's lock stays held"
            );
        }
        r.call(Fop::Write { fh, offset: 0, len: 4 }, Bytes::from_static(b"data"))
            .await
            .expect("write");
        r.call(Fop::Flush { fh, lock_owner: 1 }, Bytes::new())
            .await
            .expect("flush");
        for (i, b) in bricks.iter().enumerate() {
            assert_eq!(begins(b).len(), 1, "brick {i}: one transaction begun");
            let ends = b.calls_named("txn_end");
            assert_eq!(ends.len(), 2, "brick {i}: the create's end and the flush's");
            assert_eq!(locks_of(&ends[1]), vec![Lock::Inode(file)], "brick {i}");
            assert_eq!(*b.writes.lock().unwrap(), 1, "brick {i} took the write");
            assert_eq!(b.counter(DIRTY), [0; 3], "brick {i}: settled");
        }
    }

    /// A replica that missed the create is blamed for the new file's data
    /// as well as for its directory's entries, and gives the file's lock
    /// back at once: the hold's writes go on without it.
    #[tokio::test]
    async fn a_replica_that_missed_a_create_is_blamed_for_the_files_data_too() {
        let bricks: Vec<Arc<FakeBrick>> = (0..3).map(|i| FakeBrick::with(false, i == 2)).collect();
        let r = replica_of(&bricks);
        let file = Gfid([4; 16]);
        create_write_flush(&r, file).await;
        let missed = changelog_name(&Uuid::from_u128(3));
        for (i, b) in bricks.iter().enumerate().take(2) {
            let blame = b.counter(&missed);
            assert_eq!(blame[Kind::Entry as usize], 1, "brick {i} blames brick 2 for the name");
            assert_eq!(blame[Kind::Data as usize], 1, "brick {i} blames brick 2 for the data");
            assert_eq!(b.counter(DIRTY), [0; 3], "brick {i}: settled");
            assert_eq!(begins(b).len(), 1, "brick {i}");
        }
        assert_eq!(*bricks[2].writes.lock().unwrap(), 0, "brick 2 took no part in the hold");
        assert_no_lock_kept(&bricks[2], "brick 2");
    }

    /// Another client holds the name's lock on one replica: what the
    /// one-round-trip start made elsewhere is taken back, and the create
    /// is made the careful way (locks in order, waiting), on every
    /// replica, with nothing left marked or locked.
    #[tokio::test]
    async fn a_create_meeting_a_contended_lock_takes_back_what_it_made_and_goes_the_careful_way() {
        let bricks: Vec<Arc<FakeBrick>> = (0..2).map(|_| FakeBrick::new(false)).collect();
        *bricks[1].contended.lock().unwrap() = 1;
        let r = replica_of(&bricks);
        let file = Gfid([5; 16]);
        create_write_flush(&r, file).await;
        assert_eq!(
            bricks[0].calls_named("unlink").len(),
            1,
            "brick 0's early copy was taken back"
        );
        for (i, b) in bricks.iter().enumerate() {
            assert_eq!(*b.names.lock().unwrap(), vec![(b"f".to_vec(), file)], "brick {i}");
            assert_eq!(b.calls_named("create").len(), 1, "brick {i}: made the careful way");
            assert_eq!(*b.writes.lock().unwrap(), 1, "brick {i} took the write");
            let counters = b.counters.lock().unwrap().clone();
            assert!(
                counters.values().all(|v| *v == [0; 3]),
                "brick {i} is left marked: {counters:?}"
            );
        }
        assert_no_lock_kept(&bricks[0], "brick 0");
    }

    /// The chaos checker: a brick restarted, a writer's hold still counted
    /// it (its reopen not due yet), and the one other replica up took a
    /// write refused EROFS — which made that copy the only source, and a
    /// refused write what everyone read. A write that cannot reach quorum
    /// is not sent at all.
    #[tokio::test]
    async fn a_write_whose_file_is_open_on_too_few_replicas_is_not_made_anywhere() {
        let bricks: Vec<Arc<FakeBrick>> = (0..3).map(|_| FakeBrick::new(false)).collect();
        for b in &bricks[1..] {
            b.refuses_opens.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let r = replica_of(&bricks);
        let fh = match r
            .call(
                Fop::Open {
                    gfid: Gfid([7; 16]),
                    flags: libc::O_RDWR,
                },
                Bytes::new(),
            )
            .await
        {
            Ok((Reply::Opened { fh }, _)) => fh,
            other => panic!("open: {other:?}"),
        };
        let err = r
            .call(Fop::Write { fh, offset: 0, len: 4 }, Bytes::from_static(b"data"))
            .await
            .expect_err("open on one replica of three");
        assert_eq!(err.0, libc::EROFS);
        r.call(Fop::Flush { fh, lock_owner: 1 }, Bytes::new())
            .await
            .expect("flush");
        for (i, b) in bricks.iter().enumerate() {
            assert_eq!(*b.writes.lock().unwrap(), 0, "brick {i} took a refused write");
            let counters = b.counters.lock().unwrap().clone();
            assert!(
                counters.values().all(|v| *v == [0; 3]),
                "brick {i} is left marked: {counters:?}"
            );
        }
    }

    /// A brick from before `TxnCreate` cannot decode it: the create goes
    /// the careful way, and so do the next ones without asking again.
    #[tokio::test]
    async fn a_brick_that_cannot_decode_a_txn_create_gets_the_careful_way() {
        let bricks: Vec<Arc<FakeBrick>> = (0..2).map(|_| FakeBrick::new(false)).collect();
        bricks[1].old.store(true, std::sync::atomic::Ordering::Relaxed);
        let r = replica_of(&bricks);
        create_write_flush(&r, Gfid([6; 16])).await;
        let again = match r.call(create_of(b"g", Gfid([8; 16])), Bytes::new()).await {
            Ok((Reply::Created { attr, .. }, _)) => attr.gfid,
            other => panic!("second create: {other:?}"),
        };
        assert_eq!(again, Gfid([8; 16]));
        for (i, b) in bricks.iter().enumerate() {
            assert_eq!(b.calls_named("txn_create").len(), 1, "brick {i}: asked once");
            assert_eq!(b.names.lock().unwrap().len(), 2, "brick {i} holds both files");
        }
    }
}
