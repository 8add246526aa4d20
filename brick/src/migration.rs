//! The brick's side of moving a file to another subvolume (rebalance).
//!
//! A migrator copies a file while applications keep using it through
//! this brick. To finish, it *freezes* the file here: changes to it
//! (writes, truncates, attribute and xattr changes) wait, and the freeze
//! is granted only once changes already under way have finished, so what
//! the migrator reads next is final. It copies the last differences, makes
//! the destination the file, and marks the file *moved*: the waiting
//! changes, and every later request on the file's open handles here, fail
//! with EREMCHG. Distribute takes EREMCHG as "find the file again", so
//! each such change is sent again to the destination and none lands on
//! the old copy only.
//!
//! A freeze belongs to the migrator's connection and lasts at most
//! [`FREEZE_LIMIT`]: a migrator that dies or hangs cannot block a file.

use crate::store::FsError;
use cairn_common::proto::Fop;
use cairn_common::Gfid;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Longest a freeze holds changes back.
pub const FREEZE_LIMIT: Duration = Duration::from_secs(60);
/// Moved files remembered per node; the oldest are forgotten past this
/// (by then their handles have long been found moved or closed).
const MOVED_LIMIT: usize = 1 << 18;

type Key = (Uuid, Gfid);

#[derive(Default)]
struct Gate {
    /// Changes to the file under way now.
    inflight: u32,
    /// (connection, since) of the migrator holding the file.
    frozen: Option<(u64, Instant)>,
}

impl Gate {
    fn frozen_now(&self) -> Option<(u64, Instant)> {
        self.frozen.filter(|(_, since)| since.elapsed() < FREEZE_LIMIT)
    }
}

#[derive(Default)]
struct State {
    gates: HashMap<Key, Gate>,
    moved: HashMap<Key, Instant>,
}

#[derive(Default)]
pub struct Migrations {
    state: Mutex<State>,
    changed: tokio::sync::Notify,
}

/// How a request concerns migration.
pub enum Concern {
    /// Not at all (namespace operations, locks, changelog).
    None,
    /// It uses the file: refused once the file has moved.
    Uses(Gfid),
    /// It changes the file: also waits while the file is frozen.
    Changes(Gfid),
}

/// Which file a request uses or changes; `fh_gfid` resolves an open
/// handle of this connection to its file.
pub fn concern(op: &Fop, fh_gfid: impl Fn(u64) -> Option<Gfid>) -> Concern {
    let uses = |fh: &u64| fh_gfid(*fh).map_or(Concern::None, Concern::Uses);
    let changes = |fh: &u64| fh_gfid(*fh).map_or(Concern::None, Concern::Changes);
    match op {
        Fop::Write { fh, .. } | Fop::Fallocate { fh, .. } => changes(fh),
        Fop::CopyFileRange { fh_out, .. } => changes(fh_out),
        Fop::SetAttr { gfid, .. } | Fop::SetXattr { gfid, .. } | Fop::RemoveXattr { gfid, .. } => {
            Concern::Changes(*gfid)
        }
        Fop::Open { gfid, .. } | Fop::OpenRead { gfid, .. } => Concern::Uses(*gfid),
        Fop::Read { fh, .. }
        | Fop::Fsync { fh, .. }
        | Fop::Flush { fh, .. }
        | Fop::Lseek { fh, .. }
        | Fop::GetLk { fh, .. }
        | Fop::SetLk { fh, .. }
        | Fop::Checksum { fh, .. } => uses(fh),
        _ => Concern::None,
    }
}

fn moved_error() -> FsError {
    FsError::new(libc::EREMCHG, "the file was migrated to another subvolume")
}

/// A change under way; ends when dropped.
pub struct Pass<'a> {
    owner: &'a Migrations,
    key: Option<Key>,
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        let Some(key) = self.key else { return };
        let mut st = self.owner.state.lock().expect("migrations poisoned");
        if let Some(g) = st.gates.get_mut(&key) {
            g.inflight = g.inflight.saturating_sub(1);
            if g.inflight == 0 {
                if g.frozen.is_none() {
                    st.gates.remove(&key);
                }
                // A freeze may be waiting for the last change to finish.
                self.owner.changed.notify_waiters();
            }
        }
    }
}

impl Migrations {
    /// Lets a request through: refuses it if its file moved away, waits
    /// while the file is frozen if it changes it.
    pub async fn enter(&self, brick: Uuid, concern: Concern) -> Result<Pass<'_>, FsError> {
        let (gfid, changes) = match concern {
            Concern::None => return Ok(Pass { owner: self, key: None }),
            Concern::Uses(g) => (g, false),
            Concern::Changes(g) => (g, true),
        };
        let key = (brick, gfid);
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            let wait = {
                let mut st = self.state.lock().expect("migrations poisoned");
                if st.moved.contains_key(&key) {
                    return Err(moved_error());
                }
                if !changes {
                    return Ok(Pass { owner: self, key: None });
                }
                let gate = st.gates.entry(key).or_default();
                match gate.frozen_now() {
                    Some((_, since)) => {
                        notified.as_mut().enable();
                        FREEZE_LIMIT.saturating_sub(since.elapsed())
                    }
                    None => {
                        gate.frozen = None;
                        gate.inflight += 1;
                        return Ok(Pass {
                            owner: self,
                            key: Some(key),
                        });
                    }
                }
            };
            let _ = tokio::time::timeout(wait, notified).await;
        }
    }

    /// Freezes a file for migrator `conn`; returns once no change to it is
    /// under way.
    pub async fn freeze(&self, brick: Uuid, gfid: Gfid, conn: u64) -> Result<(), FsError> {
        let key = (brick, gfid);
        {
            let mut st = self.state.lock().expect("migrations poisoned");
            if st.moved.contains_key(&key) {
                return Err(moved_error());
            }
            let gate = st.gates.entry(key).or_default();
            match gate.frozen_now() {
                Some((holder, _)) if holder != conn => {
                    return Err(FsError::new(libc::EBUSY, "another migrator holds this file"));
                }
                _ => gate.frozen = Some((conn, Instant::now())),
            }
        }
        let deadline = Instant::now() + FREEZE_LIMIT;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            {
                let mut st = self.state.lock().expect("migrations poisoned");
                let Some(gate) = st.gates.get_mut(&key) else {
                    return Err(FsError::new(libc::ETIMEDOUT, "the freeze was lost"));
                };
                if gate.frozen.map(|(c, _)| c) != Some(conn) {
                    return Err(FsError::new(libc::ETIMEDOUT, "the freeze was lost"));
                }
                if gate.inflight == 0 {
                    return Ok(());
                }
                notified.as_mut().enable();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, notified).await.is_err() {
                self.thaw(brick, gfid, conn);
                return Err(FsError::new(
                    libc::ETIMEDOUT,
                    "changes under way did not finish in time",
                ));
            }
        }
    }

    /// Ends `conn`'s freeze of a file (a migration that gave up).
    pub fn thaw(&self, brick: Uuid, gfid: Gfid, conn: u64) {
        let key = (brick, gfid);
        let mut st = self.state.lock().expect("migrations poisoned");
        if let Some(g) = st.gates.get_mut(&key) {
            if g.frozen.is_some_and(|(c, _)| c == conn) {
                g.frozen = None;
                if g.inflight == 0 {
                    st.gates.remove(&key);
                }
            }
        }
        self.changed.notify_waiters();
    }

    /// The file lives elsewhere now: only the migrator holding its freeze
    /// may say so.
    pub fn mark_moved(&self, brick: Uuid, gfid: Gfid, conn: u64) -> Result<(), FsError> {
        let key = (brick, gfid);
        let mut st = self.state.lock().expect("migrations poisoned");
        let held = st
            .gates
            .get(&key)
            .and_then(Gate::frozen_now)
            .is_some_and(|(c, _)| c == conn);
        if !held {
            return Err(FsError::new(
                libc::ETIMEDOUT,
                "the file is not frozen by this migrator (the freeze expired?)",
            ));
        }
        st.gates.remove(&key);
        if st.moved.len() >= MOVED_LIMIT {
            if let Some(oldest) = st.moved.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k) {
                st.moved.remove(&oldest);
            }
        }
        st.moved.insert(key, Instant::now());
        drop(st);
        self.changed.notify_waiters();
        Ok(())
    }

    /// The file is coming (back) to this brick: a link file for it is
    /// being made or pointed anew, so an old copy's "moved" mark must not
    /// refuse the new one.
    pub fn arriving(&self, brick: Uuid, gfid: Gfid) {
        self.state
            .lock()
            .expect("migrations poisoned")
            .moved
            .remove(&(brick, gfid));
    }

    /// Has this file moved away from this brick?
    pub fn is_moved(&self, brick: Uuid, gfid: Gfid) -> bool {
        self.state
            .lock()
            .expect("migrations poisoned")
            .moved
            .contains_key(&(brick, gfid))
    }

    /// Has any file moved away from any brick here (since start)?
    pub fn any_moved(&self) -> bool {
        !self.state.lock().expect("migrations poisoned").moved.is_empty()
    }

    /// A migrator's connection ended: its freezes end with it.
    pub fn release_connection(&self, conn: u64) {
        let mut st = self.state.lock().expect("migrations poisoned");
        st.gates.retain(|_, g| {
            if g.frozen.is_some_and(|(c, _)| c == conn) {
                g.frozen = None;
            }
            g.frozen.is_some() || g.inflight > 0
        });
        drop(st);
        self.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ids() -> (Uuid, Gfid) {
        (Uuid::new_v4(), Gfid::random())
    }

    #[tokio::test]
    async fn changes_wait_while_frozen_and_fail_once_moved() {
        let m = Arc::new(Migrations::default());
        let (brick, gfid) = ids();
        m.freeze(brick, gfid, 7).await.unwrap();
        let m2 = m.clone();
        let writer = tokio::spawn(async move { m2.enter(brick, Concern::Changes(gfid)).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!writer.is_finished(), "a write went through a frozen file");
        // Reads are not held back.
        assert!(m.enter(brick, Concern::Uses(gfid)).await.is_ok());
        m.mark_moved(brick, gfid, 7).unwrap();
        let err = writer.await.unwrap().expect_err("moved");
        assert_eq!(err.errno, libc::EREMCHG);
        assert_eq!(
            m.enter(brick, Concern::Uses(gfid)).await.err().unwrap().errno,
            libc::EREMCHG
        );
    }

    #[tokio::test]
    async fn a_file_that_comes_back_is_served_again() {
        let m = Migrations::default();
        let (brick, gfid) = ids();
        m.freeze(brick, gfid, 3).await.unwrap();
        m.mark_moved(brick, gfid, 3).unwrap();
        assert!(m.enter(brick, Concern::Uses(gfid)).await.is_err());
        m.arriving(brick, gfid);
        assert!(m.enter(brick, Concern::Changes(gfid)).await.is_ok());
    }

    #[tokio::test]
    async fn a_freeze_waits_for_changes_under_way() {
        let m = Arc::new(Migrations::default());
        let (brick, gfid) = ids();
        let pass = m.enter(brick, Concern::Changes(gfid)).await.unwrap();
        let m2 = m.clone();
        let freeze = tokio::spawn(async move { m2.freeze(brick, gfid, 1).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!freeze.is_finished(), "froze with a write under way");
        drop(pass);
        freeze.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn freezes_belong_to_their_connection() {
        let m = Migrations::default();
        let (brick, gfid) = ids();
        m.freeze(brick, gfid, 1).await.unwrap();
        assert_eq!(m.freeze(brick, gfid, 2).await.err().unwrap().errno, libc::EBUSY);
        assert!(m.mark_moved(brick, gfid, 2).is_err());
        m.release_connection(1);
        // Free again: changes pass, another migrator may freeze.
        drop(m.enter(brick, Concern::Changes(gfid)).await.unwrap());
        m.freeze(brick, gfid, 2).await.unwrap();
        m.thaw(brick, gfid, 2);
        assert!(m.mark_moved(brick, gfid, 2).is_err());
        assert!(m.state.lock().unwrap().gates.is_empty());
    }
}
