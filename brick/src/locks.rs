//! POSIX record-lock manager for the brick daemon.
//!
//! FUSE forwards `fcntl(F_GETLK/F_SETLK/F_SETLKW)` and `flock` (as a
//! whole-file lock) to the filesystem; in Cairn those requests end up here, on
//! the brick that stores the file. Locks are advisory and live only in memory:
//! they die with the client connection that took them, exactly as a local
//! filesystem's locks die with the process.
//!
//! Design notes:
//! - All state sits behind one `std::sync::Mutex`. Lock operations are short
//!   and CPU-only, so a single mutex is simpler and cheaper than anything
//!   finer-grained, and the deadlock detector needs a consistent view across
//!   files anyway. The mutex is never held across an `.await`.
//! - Each file keeps a flat `Vec` of held ranges. Real workloads hold few
//!   locks per file, and linear scans keep the split/merge logic obviously
//!   correct.
//! - Blocked requests register themselves on the file with a private
//!   `Notify`. Anything that can shrink or downgrade a file's locks wakes all
//!   of that file's waiters, which then re-check under the mutex. `notify_one`
//!   stores a permit, so a wake-up sent between registering and polling the
//!   `Notified` future is not lost.
//! - The wait-for graph is not stored as edges: it is derived on demand from
//!   the registered pending requests and the locks currently held. Stored
//!   edges would go stale whenever locks change hands; derived ones can't.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// `EAGAIN` on Linux: a non-blocking lock request conflicts.
pub const EAGAIN: i32 = 11;
/// `EINVAL` on Linux: malformed request (e.g. `start > end`).
pub const EINVAL: i32 = 22;
/// `EDEADLK` on Linux: a blocking request would deadlock.
pub const EDEADLK: i32 = 35;

/// Locks are tracked per file, keyed by the file's gfid.
pub type FileKey = [u8; 16];

/// Who holds a lock. POSIX locks belong to a (process-ish) owner, which FUSE
/// reports as `lock_owner`; it is only unique per client mount, so it is
/// paired with the server-side connection id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LockOwner {
    pub conn: u64,
    pub owner: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    Read,
    Write,
    Unlock,
}

/// A lock as reported by `get_lock` (F_GETLK). `end == u64::MAX` means the
/// lock extends to end of file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockInfo {
    pub kind: LockKind,
    pub start: u64,
    pub end: u64,
    pub pid: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockError {
    /// Conflicts with another owner's lock (non-blocking request), or the
    /// blocking request was abandoned because its connection went away.
    WouldBlock,
    /// Waiting would close a cycle in the wait-for graph.
    Deadlock,
    /// Malformed request, e.g. `start > end`.
    Invalid,
}

impl LockError {
    /// The Linux errno to put in the FUSE reply.
    pub fn errno(&self) -> i32 {
        match self {
            LockError::WouldBlock => EAGAIN,
            LockError::Deadlock => EDEADLK,
            LockError::Invalid => EINVAL,
        }
    }
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let msg = match self {
            LockError::WouldBlock => "lock conflicts with a lock held by another owner",
            LockError::Deadlock => "waiting for the lock would deadlock",
            LockError::Invalid => "invalid lock request",
        };
        f.write_str(msg)
    }
}

impl std::error::Error for LockError {}

/// One held range. Invariant (per file): an owner's ranges never overlap, and
/// two ranges of the same owner and kind are never adjacent (they'd have been
/// merged). That keeps every owner's set of ranges canonical, so `held_count`
/// and `get_lock` answers don't depend on the history of requests.
#[derive(Clone, Copy, Debug)]
struct HeldLock {
    owner: LockOwner,
    kind: LockKind,
    start: u64,
    end: u64,
    pid: u32,
}

/// A blocked `set_lock_wait` call, kept so that the deadlock detector can see
/// what each owner is waiting for and so that releases can wake it.
struct Waiter {
    id: u64,
    owner: LockOwner,
    kind: LockKind,
    start: u64,
    end: u64,
    notify: Arc<Notify>,
}

#[derive(Default)]
struct FileLocks {
    locks: Vec<HeldLock>,
    waiters: Vec<Waiter>,
}

impl FileLocks {
    fn is_empty(&self) -> bool {
        self.locks.is_empty() && self.waiters.is_empty()
    }

    /// Locks of *other* owners that a request by `owner` would conflict with.
    fn conflicts(&self, owner: LockOwner, kind: LockKind, start: u64, end: u64) -> impl Iterator<Item = &HeldLock> {
        self.locks.iter().filter(move |l| {
            l.owner != owner
                && overlaps(l.start, l.end, start, end)
                && (kind == LockKind::Write || l.kind == LockKind::Write)
        })
    }

    /// Wake every waiter so it re-checks; called whenever held locks shrink
    /// or weaken. Waking all (rather than computing who is now unblocked) is
    /// deliberate: waiters re-check under the mutex anyway, and waiter lists
    /// are short.
    fn wake_all(&self) {
        for w in &self.waiters {
            w.notify.notify_one();
        }
    }

    /// Apply an already conflict-checked request by `owner`. Returns whether
    /// any of the owner's existing locks were cut or replaced, i.e. whether
    /// waiters might now be able to proceed.
    fn apply(&mut self, owner: LockOwner, kind: LockKind, start: u64, end: u64, pid: u32) -> bool {
        // POSIX: a new request by the same owner replaces whatever that owner
        // held in the range (upgrade/downgrade/unlock), so first carve the
        // range out of the owner's locks, keeping any parts outside it.
        let mut touched = false;
        let mut kept = Vec::with_capacity(self.locks.len() + 1);
        for l in self.locks.drain(..) {
            if l.owner != owner || !overlaps(l.start, l.end, start, end) {
                kept.push(l);
                continue;
            }
            touched = true;
            if l.start < start {
                // `start > l.start >= 0`, so `start - 1` can't underflow.
                kept.push(HeldLock { end: start - 1, ..l });
            }
            if l.end > end {
                // `end < l.end <= u64::MAX`, so `end + 1` can't overflow.
                kept.push(HeldLock { start: end + 1, ..l });
            }
        }
        self.locks = kept;

        if kind == LockKind::Unlock {
            return touched;
        }

        // After the carve-out nothing of this owner overlaps [start, end], so
        // only adjacent same-kind ranges can merge with the new one. Merging
        // keeps an owner's ranges canonical (see `HeldLock`).
        let mut new = HeldLock {
            owner,
            kind,
            start,
            end,
            pid,
        };
        self.locks.retain(|l| {
            if l.owner != owner || l.kind != kind {
                return true;
            }
            if l.end != u64::MAX && l.end + 1 == new.start {
                new.start = l.start;
                false
            } else if new.end != u64::MAX && new.end + 1 == l.start {
                new.end = l.end;
                false
            } else {
                true
            }
        });
        self.locks.push(new);
        touched
    }
}

fn overlaps(a_start: u64, a_end: u64, b_start: u64, b_end: u64) -> bool {
    a_start <= b_end && b_start <= a_end
}

#[derive(Default)]
struct State {
    files: HashMap<FileKey, FileLocks>,
    /// Index of pending requests by owner (file and waiter id), so the
    /// deadlock detector can follow "X waits for ..." edges without scanning
    /// every file. An owner may wait on several files at once (threads of one
    /// process share a lock owner).
    waiting: HashMap<LockOwner, Vec<(FileKey, u64)>>,
    next_waiter_id: u64,
}

impl State {
    /// Drop the file's entry once nothing references it, so the map doesn't
    /// grow with every file ever locked.
    fn gc(&mut self, key: &FileKey) {
        if self.files.get(key).is_some_and(FileLocks::is_empty) {
            self.files.remove(key);
        }
    }

    fn blockers(&self, key: &FileKey, owner: LockOwner, kind: LockKind, start: u64, end: u64) -> Vec<LockOwner> {
        let Some(file) = self.files.get(key) else {
            return Vec::new();
        };
        let mut out: Vec<LockOwner> = file.conflicts(owner, kind, start, end).map(|l| l.owner).collect();
        out.sort_unstable_by_key(|o| (o.conn, o.owner));
        out.dedup();
        out
    }

    /// Would `me` waiting on `blockers` close a cycle? Follows every pending
    /// request of every reachable owner, and for each, every owner currently
    /// holding a conflicting lock. Like Linux, this only runs when a request
    /// is about to (re)wait, so it catches every cycle that such a request
    /// would close.
    fn would_deadlock(&self, me: LockOwner, blockers: &[LockOwner]) -> bool {
        let mut stack: Vec<LockOwner> = blockers.to_vec();
        let mut seen: HashSet<LockOwner> = HashSet::new();
        while let Some(o) = stack.pop() {
            if o == me {
                return true;
            }
            if !seen.insert(o) {
                continue;
            }
            let Some(waits) = self.waiting.get(&o) else {
                continue;
            };
            for (key, id) in waits {
                let Some(file) = self.files.get(key) else {
                    continue;
                };
                if let Some(w) = file.waiters.iter().find(|w| w.id == *id) {
                    stack.extend(file.conflicts(o, w.kind, w.start, w.end).map(|l| l.owner));
                }
            }
        }
        false
    }

    fn register(&mut self, key: FileKey, owner: LockOwner, kind: LockKind, start: u64, end: u64) -> (u64, Arc<Notify>) {
        let id = self.next_waiter_id;
        self.next_waiter_id += 1;
        let notify = Arc::new(Notify::new());
        self.files.entry(key).or_default().waiters.push(Waiter {
            id,
            owner,
            kind,
            start,
            end,
            notify: notify.clone(),
        });
        self.waiting.entry(owner).or_default().push((key, id));
        (id, notify)
    }

    /// Whether the waiter is still registered; `release_connection` removes
    /// waiters of a dead connection behind their back.
    fn is_registered(&self, key: &FileKey, id: u64) -> bool {
        self.files
            .get(key)
            .is_some_and(|f| f.waiters.iter().any(|w| w.id == id))
    }

    fn unregister(&mut self, key: &FileKey, owner: LockOwner, id: u64) {
        if let Some(file) = self.files.get_mut(key) {
            file.waiters.retain(|w| w.id != id);
        }
        if let Some(list) = self.waiting.get_mut(&owner) {
            list.retain(|&(_, wid)| wid != id);
            if list.is_empty() {
                self.waiting.remove(&owner);
            }
        }
        self.gc(key);
    }
}

/// Shared (as `Arc<LockManager>`) by all connection tasks of a brick.
#[derive(Default)]
pub struct LockManager {
    state: Mutex<State>,
}

impl LockManager {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the mutex can only come from a bug in this
        // module; every mutation leaves the state consistent between
        // statements that could panic, so keep serving rather than turning
        // one bug into a brick-wide outage (and never panic inside `Drop`).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// F_GETLK: the first lock (lowest start) of another owner that would
    /// conflict with the described request, or `None` if it could be granted.
    /// `Unlock` and malformed ranges conflict with nothing; the caller is
    /// expected to have rejected them already.
    pub fn get_lock(&self, key: FileKey, owner: LockOwner, kind: LockKind, start: u64, end: u64) -> Option<LockInfo> {
        if kind == LockKind::Unlock || start > end {
            return None;
        }
        let state = self.state();
        let file = state.files.get(&key)?;
        file.conflicts(owner, kind, start, end)
            .min_by_key(|l| (l.start, l.end))
            .map(|l| LockInfo {
                kind: l.kind,
                start: l.start,
                end: l.end,
                pid: l.pid,
            })
    }

    /// F_SETLK: take, change or drop (`Unlock`) a lock without waiting.
    pub fn set_lock(
        &self,
        key: FileKey,
        owner: LockOwner,
        kind: LockKind,
        start: u64,
        end: u64,
        pid: u32,
    ) -> Result<(), LockError> {
        if start > end {
            return Err(LockError::Invalid);
        }
        let mut state = self.state();
        let state = &mut *state;
        if kind == LockKind::Unlock && !state.files.contains_key(&key) {
            // Unlocking nothing is a successful no-op; don't create an entry.
            return Ok(());
        }
        let file = state.files.entry(key).or_default();
        if kind != LockKind::Unlock && file.conflicts(owner, kind, start, end).next().is_some() {
            // `or_default` may just have created the entry.
            state.gc(&key);
            return Err(LockError::WouldBlock);
        }
        if file.apply(owner, kind, start, end, pid) {
            file.wake_all();
        }
        state.gc(&key);
        Ok(())
    }

    /// F_SETLKW: like `set_lock`, but waits for conflicting locks to go
    /// away. Fails with `Deadlock` if waiting would close a cycle of owners
    /// waiting on each other. Cancel-safe: dropping the future removes the
    /// request from the wait-for graph.
    ///
    /// If the owner's connection is released (`release_connection`) while
    /// this waits, the request is abandoned with `WouldBlock`: the reply has
    /// nowhere to go, and granting it would leak a lock nobody can release.
    pub async fn set_lock_wait(
        &self,
        key: FileKey,
        owner: LockOwner,
        kind: LockKind,
        start: u64,
        end: u64,
        pid: u32,
    ) -> Result<(), LockError> {
        if kind == LockKind::Unlock || start > end {
            // Unlocking never waits; `set_lock` also does the validation.
            return self.set_lock(key, owner, kind, start, end, pid);
        }
        // Owns the waiter registration from the first wait on; its `Drop`
        // unregisters, which is what makes cancellation leave no trace.
        let mut registration: Option<Registration<'_>> = None;
        loop {
            let notify = {
                let mut state = self.state();
                if let Some(reg) = &mut registration {
                    if !state.is_registered(&key, reg.id) {
                        reg.armed = false;
                        return Err(LockError::WouldBlock);
                    }
                }
                let blockers = state.blockers(&key, owner, kind, start, end);
                if blockers.is_empty() || state.would_deadlock(owner, &blockers) {
                    // Either way this request stops waiting: leave the graph
                    // before granting (so the grant sees a clean state) or
                    // before reporting the deadlock.
                    if let Some(mut reg) = registration.take() {
                        state.unregister(&key, owner, reg.id);
                        reg.armed = false;
                    }
                    if !blockers.is_empty() {
                        return Err(LockError::Deadlock);
                    }
                    let file = state.files.entry(key).or_default();
                    if file.apply(owner, kind, start, end, pid) {
                        file.wake_all();
                    }
                    return Ok(());
                }
                match &registration {
                    Some(reg) => reg.notify.clone(),
                    None => {
                        let (id, notify) = state.register(key, owner, kind, start, end);
                        registration = Some(Registration {
                            manager: self,
                            key,
                            owner,
                            id,
                            notify: notify.clone(),
                            armed: true,
                        });
                        notify
                    }
                }
                // The guard drops here, before the await.
            };
            notify.notified().await;
        }
    }

    /// Drop every lock `owner` holds on the file (FUSE flush/release: POSIX
    /// says closing any fd of a file drops all the process's locks on it).
    /// Pending requests of the owner are left alone; they belong to other
    /// threads that are still waiting.
    pub fn release_owner(&self, key: FileKey, owner: LockOwner) {
        let mut state = self.state();
        let Some(file) = state.files.get_mut(&key) else {
            return;
        };
        let before = file.locks.len();
        file.locks.retain(|l| l.owner != owner);
        if file.locks.len() != before {
            file.wake_all();
        }
        state.gc(&key);
    }

    /// The client connection died: drop every lock held by any of its owners
    /// on every file, abandon its pending requests (their futures return
    /// `WouldBlock` when next polled), and wake everyone who might now
    /// proceed.
    ///
    /// Callers should invoke this after the connection's request tasks can no
    /// longer start new lock requests; a request that starts afterwards would
    /// take a lock nothing releases.
    pub fn release_connection(&self, conn: u64) {
        let mut state = self.state();
        let state = &mut *state;
        state.files.retain(|_, file| {
            let before = file.locks.len();
            file.locks.retain(|l| l.owner.conn != conn);
            let released = file.locks.len() != before;
            file.waiters.retain(|w| {
                if w.owner.conn == conn {
                    // Wake it so it notices it was dropped and returns.
                    w.notify.notify_one();
                    false
                } else {
                    true
                }
            });
            if released {
                file.wake_all();
            }
            !file.is_empty()
        });
        state.waiting.retain(|owner, _| owner.conn != conn);
    }

    /// Total number of held ranges over all files.
    #[cfg(test)]
    pub fn held_count(&self) -> usize {
        self.state().files.values().map(|f| f.locks.len()).sum()
    }
}

/// A registered waiter of an in-flight `set_lock_wait`. Dropping it while
/// armed (the future was cancelled) unregisters the waiter; completion paths
/// unregister under the already-held mutex and disarm it instead, since the
/// std mutex isn't reentrant.
struct Registration<'a> {
    manager: &'a LockManager,
    key: FileKey,
    owner: LockOwner,
    id: u64,
    notify: Arc<Notify>,
    armed: bool,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.manager.state().unregister(&self.key, self.owner, self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    use LockKind::{Read, Unlock, Write};

    const K: FileKey = [1; 16];
    const K2: FileKey = [2; 16];
    const EOF: u64 = u64::MAX;

    fn own(conn: u64, owner: u64) -> LockOwner {
        LockOwner { conn, owner }
    }

    impl LockManager {
        /// Held ranges of one owner on one file, sorted, for assertions.
        fn ranges(&self, key: FileKey, owner: LockOwner) -> Vec<(LockKind, u64, u64)> {
            let state = self.state();
            let mut v: Vec<_> = state
                .files
                .get(&key)
                .map(|f| {
                    f.locks
                        .iter()
                        .filter(|l| l.owner == owner)
                        .map(|l| (l.kind, l.start, l.end))
                        .collect()
                })
                .unwrap_or_default();
            v.sort_by_key(|r| r.1);
            v
        }

        fn waiter_count(&self) -> usize {
            let state = self.state();
            let in_files: usize = state.files.values().map(|f| f.waiters.len()).sum();
            let indexed: usize = state.waiting.values().map(Vec::len).sum();
            assert_eq!(in_files, indexed, "waiter index out of sync");
            in_files
        }

        fn file_count(&self) -> usize {
            self.state().files.len()
        }
    }

    /// Wait (bounded) until `n` waiters are registered, so tests don't race
    /// against spawned tasks reaching their first `.await`.
    async fn until_waiters(m: &LockManager, n: usize) {
        for _ in 0..5000 {
            if m.waiter_count() == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("expected {n} waiters, have {}", m.waiter_count());
    }

    /// Await a request that must not block, failing instead of hanging if
    /// it does (e.g. a missed deadlock).
    async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(5), f)
            .await
            .expect("request blocked")
    }

    async fn join<T>(h: tokio::task::JoinHandle<T>) -> T {
        tokio::time::timeout(Duration::from_secs(5), h)
            .await
            .expect("task did not finish")
            .expect("task panicked")
    }

    #[test]
    fn errors_map_to_errno_and_display() {
        assert_eq!(LockError::WouldBlock.errno(), 11);
        assert_eq!(LockError::Deadlock.errno(), 35);
        assert_eq!(LockError::Invalid.errno(), 22);
        let e: Box<dyn std::error::Error> = Box::new(LockError::Deadlock);
        assert!(e.to_string().contains("deadlock"));
    }

    #[tokio::test]
    async fn invalid_range_rejected() {
        let m = LockManager::new();
        let a = own(1, 1);
        assert_eq!(m.set_lock(K, a, Write, 5, 4, 1), Err(LockError::Invalid));
        assert_eq!(m.set_lock(K, a, Unlock, 5, 4, 1), Err(LockError::Invalid));
        assert_eq!(
            bounded(m.set_lock_wait(K, a, Read, 9, 0, 1)).await,
            Err(LockError::Invalid)
        );
        assert_eq!(m.get_lock(K, a, Write, 5, 4), None);
        assert_eq!(m.file_count(), 0);
    }

    #[test]
    fn merge_adjacent_and_overlapping_same_kind() {
        let m = LockManager::new();
        let a = own(1, 1);
        m.set_lock(K, a, Read, 0, 9, 1).unwrap();
        m.set_lock(K, a, Read, 10, 19, 1).unwrap();
        assert_eq!(m.ranges(K, a), vec![(Read, 0, 19)]);
        m.set_lock(K, a, Read, 30, 39, 1).unwrap();
        m.set_lock(K, a, Read, 15, 35, 1).unwrap();
        assert_eq!(m.ranges(K, a), vec![(Read, 0, 39)]);
        m.set_lock(K, a, Read, 40, EOF, 1).unwrap();
        assert_eq!(m.ranges(K, a), vec![(Read, 0, EOF)]);
        assert_eq!(m.held_count(), 1);
        // Different kinds stay separate even when adjacent.
        let b = own(1, 2);
        m.set_lock(K2, b, Read, 0, 9, 1).unwrap();
        m.set_lock(K2, b, Write, 10, 19, 1).unwrap();
        assert_eq!(m.ranges(K2, b), vec![(Read, 0, 9), (Write, 10, 19)]);
        assert_eq!(m.held_count(), 3);
    }

    #[test]
    fn upgrade_and_downgrade_split_existing_ranges() {
        let m = LockManager::new();
        let a = own(1, 1);
        m.set_lock(K, a, Read, 0, 99, 1).unwrap();
        // Upgrade the middle: the read lock splits around it.
        m.set_lock(K, a, Write, 40, 59, 1).unwrap();
        assert_eq!(m.ranges(K, a), vec![(Read, 0, 39), (Write, 40, 59), (Read, 60, 99)]);
        // Downgrade it again: everything merges back into one range.
        m.set_lock(K, a, Read, 40, 59, 1).unwrap();
        assert_eq!(m.ranges(K, a), vec![(Read, 0, 99)]);
        // Upgrade a range straddling the end: partial replace + extend.
        m.set_lock(K, a, Write, 90, EOF, 1).unwrap();
        assert_eq!(m.ranges(K, a), vec![(Read, 0, 89), (Write, 90, EOF)]);
        // Whole-file flock-style write replaces everything.
        m.set_lock(K, a, Write, 0, EOF, 1).unwrap();
        assert_eq!(m.ranges(K, a), vec![(Write, 0, EOF)]);
    }

    #[test]
    fn unlock_middle_range_splits() {
        let m = LockManager::new();
        let a = own(1, 1);
        let b = own(2, 1);
        m.set_lock(K, a, Write, 0, EOF, 7).unwrap();
        m.set_lock(K, a, Unlock, 100, 199, 7).unwrap();
        assert_eq!(m.ranges(K, a), vec![(Write, 0, 99), (Write, 200, EOF)]);
        // The hole is now free for someone else, and only the hole.
        m.set_lock(K, b, Write, 100, 199, 8).unwrap();
        assert_eq!(m.set_lock(K, b, Write, 199, 200, 8), Err(LockError::WouldBlock));
        // Unlocking the tail only at EOF, and unlocking nothing.
        m.set_lock(K, a, Unlock, 500, EOF, 7).unwrap();
        assert_eq!(m.ranges(K, a), vec![(Write, 0, 99), (Write, 200, 499)]);
        m.set_lock(K, a, Unlock, 1000, 2000, 7).unwrap();
        m.set_lock(K2, a, Unlock, 0, EOF, 7).unwrap();
        assert_eq!(m.file_count(), 1);
        m.set_lock(K, a, Unlock, 0, EOF, 7).unwrap();
        m.set_lock(K, b, Unlock, 0, EOF, 8).unwrap();
        assert_eq!(m.held_count(), 0);
        assert_eq!(m.file_count(), 0, "empty file entry must be dropped");
    }

    #[test]
    fn conflict_matrix() {
        let a = own(1, 1);
        let b = own(1, 2); // same connection, different owner: still conflicts
        for (held, req, conflict) in [
            (Read, Read, false),
            (Read, Write, true),
            (Write, Read, true),
            (Write, Write, true),
        ] {
            let m = LockManager::new();
            m.set_lock(K, a, held, 10, 19, 1).unwrap();
            let got = m.set_lock(K, b, req, 15, 25, 2);
            assert_eq!(got.is_err(), conflict, "{held:?} vs {req:?}");
            if conflict {
                assert_eq!(got, Err(LockError::WouldBlock));
            }
            // Non-overlapping never conflicts; an owner never conflicts with
            // itself (a's upgrade ignores its own read); files are separate.
            m.release_owner(K, b);
            assert_eq!(m.set_lock(K, b, req, 20, 30, 2), Ok(()));
            assert_eq!(m.set_lock(K, b, Write, 0, 9, 2), Ok(()));
            assert_eq!(m.set_lock(K, a, Write, 10, 19, 1), Ok(()));
            assert_eq!(m.set_lock(K2, b, Write, 0, EOF, 2), Ok(()));
        }
    }

    #[test]
    fn getlk_reports_first_conflict() {
        let m = LockManager::new();
        let a = own(1, 1);
        let b = own(2, 1);
        let c = own(3, 1);
        m.set_lock(K, a, Read, 50, 59, 100).unwrap();
        m.set_lock(K, b, Write, 10, 19, 200).unwrap();
        m.set_lock(K, c, Read, 0, 4, 300).unwrap();
        // Read request: only b's write conflicts.
        assert_eq!(
            m.get_lock(K, c, Read, 0, EOF),
            Some(LockInfo {
                kind: Write,
                start: 10,
                end: 19,
                pid: 200
            })
        );
        // Write request: lowest-start conflict first (c's read at 0..4).
        assert_eq!(
            m.get_lock(K, a, Write, 0, EOF).map(|i| (i.kind, i.start, i.pid)),
            Some((Read, 0, 300))
        );
        assert_eq!(
            m.get_lock(K, b, Write, 40, EOF),
            Some(LockInfo {
                kind: Read,
                start: 50,
                end: 59,
                pid: 100
            })
        );
        // Own locks never reported; free ranges report None; Unlock is None.
        assert_eq!(m.get_lock(K, b, Write, 10, 19), None);
        assert_eq!(m.get_lock(K, a, Write, 20, 49), None);
        assert_eq!(m.get_lock(K, a, Unlock, 0, EOF), None);
        assert_eq!(m.get_lock(K2, a, Write, 0, EOF), None);
        assert_eq!(m.file_count(), 1, "getlk must not create entries");
    }

    #[test]
    fn release_owner_and_connection() {
        let m = LockManager::new();
        let a1 = own(1, 1);
        let a2 = own(1, 2);
        let b = own(2, 1);
        m.set_lock(K, a1, Read, 0, 9, 1).unwrap();
        m.set_lock(K, a1, Write, 20, 29, 1).unwrap();
        m.set_lock(K, a2, Read, 0, 9, 2).unwrap();
        m.set_lock(K2, a2, Write, 0, EOF, 2).unwrap();
        m.set_lock(K, b, Read, 0, 9, 3).unwrap();
        m.release_owner(K, a1);
        assert_eq!(m.ranges(K, a1), vec![]);
        assert_eq!(m.held_count(), 3);
        m.release_owner(K2, b); // holds nothing there: no-op
        m.release_connection(1);
        assert_eq!(m.held_count(), 1);
        assert_eq!(m.file_count(), 1);
        m.release_owner(K, b);
        assert_eq!(m.file_count(), 0);
    }

    #[tokio::test]
    async fn waiter_woken_on_release() {
        let m = Arc::new(LockManager::new());
        let a = own(1, 1);
        let b = own(2, 1);
        m.set_lock(K, a, Write, 0, 99, 1).unwrap();
        let h = tokio::spawn({
            let m = m.clone();
            async move { m.set_lock_wait(K, b, Read, 50, 149, 2).await }
        });
        until_waiters(&m, 1).await;
        // Releasing an unrelated range doesn't grant it.
        m.set_lock(K, a, Unlock, 0, 9, 1).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!h.is_finished());
        // A downgrade to read does.
        m.set_lock(K, a, Read, 10, 99, 1).unwrap();
        assert_eq!(join(h).await, Ok(()));
        assert_eq!(m.ranges(K, b), vec![(Read, 50, 149)]);
        assert_eq!(m.waiter_count(), 0);
        // Plain release_owner wakes a writer too.
        let h = tokio::spawn({
            let m = m.clone();
            async move { m.set_lock_wait(K, a, Write, 0, EOF, 1).await }
        });
        until_waiters(&m, 1).await;
        m.release_owner(K, b);
        assert_eq!(join(h).await, Ok(()));
        assert_eq!(m.ranges(K, a), vec![(Write, 0, EOF)]);
    }

    #[tokio::test]
    async fn waiter_woken_on_release_connection() {
        let m = Arc::new(LockManager::new());
        let a = own(1, 1);
        let b = own(2, 1);
        m.set_lock(K, a, Write, 0, EOF, 1).unwrap();
        m.set_lock(K2, a, Write, 0, EOF, 1).unwrap();
        let h = tokio::spawn({
            let m = m.clone();
            async move { m.set_lock_wait(K, b, Write, 0, 0, 2).await }
        });
        until_waiters(&m, 1).await;
        m.release_connection(1);
        assert_eq!(join(h).await, Ok(()));
        assert_eq!(m.held_count(), 1);
        assert_eq!(m.file_count(), 1);
    }

    #[tokio::test]
    async fn release_connection_abandons_its_waiters() {
        let m = Arc::new(LockManager::new());
        let a = own(1, 1);
        let b = own(2, 1);
        m.set_lock(K, a, Write, 0, EOF, 1).unwrap();
        let h = tokio::spawn({
            let m = m.clone();
            async move { m.set_lock_wait(K, b, Write, 0, 0, 2).await }
        });
        until_waiters(&m, 1).await;
        m.release_connection(2);
        assert_eq!(join(h).await, Err(LockError::WouldBlock));
        assert_eq!(m.waiter_count(), 0);
        m.release_owner(K, a);
        assert_eq!(m.held_count(), 0, "abandoned waiter must not get the lock");
        assert_eq!(m.file_count(), 0);
    }

    #[tokio::test]
    async fn two_owner_deadlock_detected() {
        let m = Arc::new(LockManager::new());
        let a = own(1, 1);
        let b = own(2, 1);
        m.set_lock(K, a, Write, 1, 1, 1).unwrap();
        m.set_lock(K, b, Write, 2, 2, 2).unwrap();
        let ha = tokio::spawn({
            let m = m.clone();
            async move { m.set_lock_wait(K, a, Write, 2, 2, 1).await }
        });
        until_waiters(&m, 1).await;
        assert_eq!(
            bounded(m.set_lock_wait(K, b, Write, 1, 1, 2)).await,
            Err(LockError::Deadlock)
        );
        assert_eq!(m.waiter_count(), 1, "refused request must not stay queued");
        // B backs off, A proceeds.
        m.release_owner(K, b);
        assert_eq!(join(ha).await, Ok(()));
        assert_eq!(m.ranges(K, a), vec![(Write, 1, 2)]);
    }

    #[tokio::test]
    async fn transitive_cross_file_deadlock_detected() {
        let m = Arc::new(LockManager::new());
        let (a, b, c) = (own(1, 1), own(2, 1), own(3, 1));
        m.set_lock(K, a, Write, 0, 9, 1).unwrap();
        m.set_lock(K2, b, Read, 0, 9, 2).unwrap();
        m.set_lock(K, c, Read, 20, 29, 3).unwrap();
        // a waits for b (on K2), b waits for c (on K).
        let ha = tokio::spawn({
            let m = m.clone();
            async move { m.set_lock_wait(K2, a, Write, 5, 5, 1).await }
        });
        until_waiters(&m, 1).await;
        let hb = tokio::spawn({
            let m = m.clone();
            async move { m.set_lock_wait(K, b, Write, 25, 25, 2).await }
        });
        until_waiters(&m, 2).await;
        // c -> a closes the cycle; a reader asking for a read is fine though.
        assert_eq!(
            bounded(m.set_lock_wait(K, c, Read, 0, 0, 3)).await,
            Err(LockError::Deadlock)
        );
        assert_eq!(m.set_lock(K, c, Read, 100, 100, 3), Ok(()));
        m.release_owner(K, c);
        assert_eq!(join(hb).await, Ok(()));
        m.release_owner(K2, b);
        assert_eq!(join(ha).await, Ok(()));
        assert_eq!(m.waiter_count(), 0);
    }

    #[tokio::test]
    async fn cancelled_waiter_leaves_no_trace() {
        let m = Arc::new(LockManager::new());
        let a = own(1, 1);
        let b = own(2, 1);
        m.set_lock(K, a, Write, 1, 1, 1).unwrap();
        m.set_lock(K, b, Write, 2, 2, 2).unwrap();
        // A waits for 2, then gives up (future dropped by the timeout).
        let r = tokio::time::timeout(Duration::from_millis(20), m.set_lock_wait(K, a, Write, 2, 2, 1)).await;
        assert!(r.is_err(), "should still have been waiting");
        assert_eq!(m.waiter_count(), 0);
        // Also via aborting a spawned task.
        let h = tokio::spawn({
            let m = m.clone();
            async move { m.set_lock_wait(K, a, Write, 2, 2, 1).await }
        });
        until_waiters(&m, 1).await;
        h.abort();
        until_waiters(&m, 0).await;
        // Without A's stale edge, B waiting for 1 is no deadlock: it waits.
        let hb = tokio::spawn({
            let m = m.clone();
            async move { m.set_lock_wait(K, b, Write, 1, 1, 2).await }
        });
        until_waiters(&m, 1).await;
        assert!(!hb.is_finished());
        m.release_owner(K, a);
        assert_eq!(join(hb).await, Ok(()));
        m.release_owner(K, b);
        assert_eq!(m.file_count(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiters_serialize_writers_under_contention() {
        let m = Arc::new(LockManager::new());
        let inside = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for t in 0..6u64 {
            let (m, inside, done) = (m.clone(), inside.clone(), done.clone());
            handles.push(tokio::spawn(async move {
                let o = own(t, t);
                for _ in 0..50 {
                    m.set_lock_wait(K, o, Write, 0, EOF, t as u32).await.unwrap();
                    assert!(!inside.swap(true, Ordering::SeqCst), "two writers");
                    tokio::task::yield_now().await;
                    inside.store(false, Ordering::SeqCst);
                    m.set_lock(K, o, Unlock, 0, EOF, t as u32).unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        for h in handles {
            join(h).await;
        }
        assert_eq!(done.load(Ordering::Relaxed), 300);
        assert_eq!(m.waiter_count(), 0);
        assert_eq!(m.file_count(), 0);
    }

    /// Naive reference: for each byte, what each owner holds there. Byte
    /// `TAIL` stands for the whole range `TAIL..=u64::MAX`, so requests
    /// ending at EOF are modelled too; every generated request either ends
    /// below `TAIL` or runs to EOF, so that bucket is always uniform.
    const TAIL: usize = 64;
    const NOWN: usize = 3;

    struct Model {
        bytes: [[Option<LockKind>; NOWN]; TAIL + 1],
    }

    impl Model {
        fn conflicts(held: LockKind, req: LockKind) -> bool {
            req == Write || held == Write
        }

        fn set(&mut self, o: usize, kind: LockKind, s: usize, e: usize) -> bool {
            let ok = kind == Unlock
                || (s..=e)
                    .all(|b| (0..NOWN).all(|p| p == o || self.bytes[b][p].is_none_or(|h| !Self::conflicts(h, kind))));
            if ok {
                for b in s..=e {
                    self.bytes[b][o] = (kind != Unlock).then_some(kind);
                }
            }
            ok
        }

        /// Maximal runs of equal kind held by owner `p`: (kind, start, end).
        fn runs(&self, p: usize) -> Vec<(LockKind, usize, usize)> {
            let mut out: Vec<(LockKind, usize, usize)> = Vec::new();
            for b in 0..=TAIL {
                if let Some(k) = self.bytes[b][p] {
                    match out.last_mut() {
                        Some(last) if last.0 == k && last.2 + 1 == b => last.2 = b,
                        _ => out.push((k, b, b)),
                    }
                }
            }
            out
        }
    }

    fn to_real(b: usize) -> u64 {
        if b == TAIL {
            EOF
        } else {
            b as u64
        }
    }

    #[test]
    fn randomized_against_per_byte_model() {
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            // xorshift64: deterministic, dependency-free.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let owners = [own(1, 1), own(1, 2), own(2, 1)];
        for round in 0..40 {
            let m = LockManager::new();
            let mut model = Model {
                bytes: [[None; NOWN]; TAIL + 1],
            };
            for step in 0..300 {
                let o = (next() % NOWN as u64) as usize;
                let s = (next() % TAIL as u64) as usize;
                let e = if next() % 8 == 0 {
                    TAIL
                } else {
                    s + (next() % (TAIL - s) as u64) as usize
                };
                let kind = [Read, Write, Unlock][(next() % 3) as usize];
                let ctx = format!("round {round} step {step}: {o} {kind:?} {s}..={e}");
                let (rs, re) = (s as u64, to_real(e));

                // getlk first, checked against the model's runs.
                if kind != Unlock {
                    let got = m.get_lock(K, owners[o], kind, rs, re);
                    let mut candidates: Vec<(LockKind, usize, usize, usize)> = (0..NOWN)
                        .filter(|&p| p != o)
                        .flat_map(|p| model.runs(p).into_iter().map(move |r| (r.0, r.1, r.2, p)))
                        .filter(|r| r.1 <= e && s <= r.2 && Model::conflicts(r.0, kind))
                        .collect();
                    candidates.sort_by_key(|r| r.1);
                    match got {
                        None => assert!(candidates.is_empty(), "{ctx}: missed conflict"),
                        Some(info) => {
                            let min = candidates.first().expect(&ctx).1;
                            assert!(
                                candidates.iter().any(|r| r.0 == info.kind
                                    && r.1 as u64 == info.start
                                    && to_real(r.2) == info.end
                                    && r.3 as u32 == info.pid),
                                "{ctx}: bogus conflict {info:?}"
                            );
                            assert_eq!(info.start, min as u64, "{ctx}: not the first");
                        }
                    }
                }

                let ok = model.set(o, kind, s, e);
                let got = m.set_lock(K, owners[o], kind, rs, re, o as u32);
                assert_eq!(got.is_ok(), ok, "{ctx}: {got:?}");

                // Every owner's ranges must be exactly the model's maximal
                // runs (this checks both content and canonical merging).
                let mut total = 0;
                for (p, &owner) in owners.iter().enumerate() {
                    let want: Vec<_> = model
                        .runs(p)
                        .into_iter()
                        .map(|(k, a, b)| (k, a as u64, to_real(b)))
                        .collect();
                    total += want.len();
                    assert_eq!(m.ranges(K, owner), want, "{ctx}: owner {p}");
                }
                assert_eq!(m.held_count(), total, "{ctx}");
            }
            for &owner in &owners {
                m.release_owner(K, owner);
            }
            assert_eq!(m.file_count(), 0);
        }
    }
}
