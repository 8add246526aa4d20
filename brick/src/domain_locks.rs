//! Replicate's locks (gluster's inodelk and entrylk): exclusive, whole-inode
//! or one-name locks in a named domain, held by (connection, owner) and
//! dropped when the connection dies, so a crashed client never wedges a
//! file. Re-entrant for the same holder. An entry lock with an empty name
//! covers the whole directory (gluster's entrylk with a NULL basename): it
//! excludes every name lock of that directory held by someone else, and
//! they exclude it. Unrelated to POSIX locks, which applications see
//! (`locks.rs`).

use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::Notify;

/// What a lock covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LockTarget {
    Inode {
        brick: uuid::Uuid,
        domain: String,
        gfid: [u8; 16],
    },
    Entry {
        brick: uuid::Uuid,
        domain: String,
        parent: [u8; 16],
        name: Vec<u8>,
    },
}

impl LockTarget {
    /// The whole-directory lock that covers this name lock, if it is one.
    fn whole_dir(&self) -> Option<LockTarget> {
        match self {
            LockTarget::Entry {
                brick,
                domain,
                parent,
                name,
            } if !name.is_empty() => Some(LockTarget::Entry {
                brick: *brick,
                domain: domain.clone(),
                parent: *parent,
                name: Vec::new(),
            }),
            _ => None,
        }
    }

    /// Is this a name lock in the directory a whole-directory lock covers?
    fn is_name_in(&self, dir: &LockTarget) -> bool {
        match (self, dir) {
            (
                LockTarget::Entry {
                    brick,
                    domain,
                    parent,
                    name,
                },
                LockTarget::Entry {
                    brick: b,
                    domain: d,
                    parent: p,
                    name: whole,
                },
            ) => whole.is_empty() && !name.is_empty() && brick == b && domain == d && parent == p,
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    pub conn: u64,
    pub owner: u64,
}

#[derive(Default)]
pub struct DomainLocks {
    held: Mutex<HashMap<LockTarget, (Holder, u32)>>,
    released: Notify,
}

impl DomainLocks {
    /// Takes the lock; waits for it if `wait`, else fails with EAGAIN.
    pub async fn lock(&self, target: LockTarget, holder: Holder, wait: bool) -> Result<(), i32> {
        loop {
            // Registered before looking, so a release in between wakes us.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            match self.try_lock(target.clone(), holder) {
                Err(libc::EAGAIN) if wait => {}
                other => return other,
            }
            released.await;
        }
    }

    /// Takes the lock if it is free (and no other holder's lock covers
    /// it) or already the holder's; EAGAIN if not.
    pub fn try_lock(&self, target: LockTarget, holder: Holder) -> Result<(), i32> {
        let mut held = self.held.lock().expect("domain locks poisoned");
        let covered = Self::covered(&held, &target, holder);
        match held.get_mut(&target) {
            None if !covered => {
                held.insert(target, (holder, 1));
                Ok(())
            }
            Some((h, depth)) if *h == holder => {
                *depth += 1;
                Ok(())
            }
            _ => Err(libc::EAGAIN),
        }
    }

    /// Does someone else hold a lock that overlaps `target` without being
    /// it: the whole directory of a name, or a name of a whole directory?
    fn covered(held: &HashMap<LockTarget, (Holder, u32)>, target: &LockTarget, holder: Holder) -> bool {
        let other = |h: &Holder| *h != holder;
        match target.whole_dir() {
            Some(dir) => held.get(&dir).is_some_and(|(h, _)| other(h)),
            // Only a whole-directory lock needs the scan (heals take it).
            None => held.iter().any(|(t, (h, _))| other(h) && t.is_name_in(target)),
        }
    }

    /// Releases one level of the holder's lock.
    pub fn unlock(&self, target: &LockTarget, holder: Holder) -> Result<(), i32> {
        let mut held = self.held.lock().expect("domain locks poisoned");
        match held.get_mut(target) {
            Some((h, depth)) if *h == holder => {
                *depth -= 1;
                if *depth == 0 {
                    held.remove(target);
                    drop(held);
                    self.released.notify_waiters();
                }
                Ok(())
            }
            _ => Err(libc::EINVAL),
        }
    }

    /// Drops every lock of a connection that went away.
    pub fn release_connection(&self, conn: u64) {
        let mut held = self.held.lock().expect("domain locks poisoned");
        let before = held.len();
        held.retain(|_, (h, _)| h.conn != conn);
        if held.len() != before {
            drop(held);
            self.released.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn inode(n: u8) -> LockTarget {
        LockTarget::Inode {
            brick: uuid::Uuid::nil(),
            domain: "vol-replicate-0".into(),
            gfid: [n; 16],
        }
    }

    fn entry(parent: u8, name: &str) -> LockTarget {
        LockTarget::Entry {
            brick: uuid::Uuid::nil(),
            domain: "vol-replicate-0".into(),
            parent: [parent; 16],
            name: name.as_bytes().to_vec(),
        }
    }

    const A: Holder = Holder { conn: 1, owner: 7 };
    const B: Holder = Holder { conn: 2, owner: 7 };

    #[tokio::test]
    async fn exclusive_reentrant_and_released_with_the_connection() {
        let locks = Arc::new(DomainLocks::default());
        locks.lock(inode(1), A, false).await.unwrap();
        locks.lock(inode(1), A, false).await.unwrap();
        assert_eq!(locks.lock(inode(1), B, false).await, Err(libc::EAGAIN));
        // Another inode is independent.
        locks.lock(inode(2), B, false).await.unwrap();
        assert_eq!(locks.unlock(&inode(1), B), Err(libc::EINVAL));
        locks.unlock(&inode(1), A).unwrap();
        assert_eq!(locks.try_lock(inode(1), B), Err(libc::EAGAIN));
        assert_eq!(
            locks.lock(inode(1), B, false).await,
            Err(libc::EAGAIN),
            "still held once"
        );
        // A waiter gets the lock when the holder's connection dies.
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move { locks.lock(inode(1), B, true).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        locks.release_connection(A.conn);
        tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .expect("waiter woke")
            .unwrap()
            .unwrap();
        assert_eq!(locks.lock(inode(1), A, false).await, Err(libc::EAGAIN));
    }

    #[tokio::test]
    async fn a_whole_directory_entry_lock_excludes_the_names_of_others() {
        let locks = Arc::new(DomainLocks::default());
        locks.lock(entry(1, "x"), A, false).await.unwrap();
        // A name held by another: the whole directory waits.
        assert_eq!(locks.lock(entry(1, ""), B, false).await, Err(libc::EAGAIN));
        // Its own names do not stop a holder; another directory is free.
        locks.lock(entry(1, ""), A, false).await.unwrap();
        locks.lock(entry(2, ""), B, false).await.unwrap();
        locks.unlock(&entry(1, "x"), A).unwrap();
        // The whole directory held: every name of it waits, for others.
        assert_eq!(locks.lock(entry(1, "y"), B, false).await, Err(libc::EAGAIN));
        locks.lock(entry(1, "y"), A, false).await.unwrap();
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move { locks.lock(entry(1, "z"), B, true).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        locks.unlock(&entry(1, ""), A).unwrap();
        tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .expect("waiter woke")
            .unwrap()
            .unwrap();
    }
}
