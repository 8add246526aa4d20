//! Replicate's locks (gluster's inodelk and entrylk): exclusive, whole-inode
//! or one-name locks in a named domain, held by (connection, owner) and
//! dropped when the connection dies, so a crashed client never wedges a
//! file. Re-entrant for the same holder. Unrelated to POSIX locks, which
//! applications see (`locks.rs`).

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

    /// Takes the lock if it is free or already the holder's; EAGAIN if not.
    pub fn try_lock(&self, target: LockTarget, holder: Holder) -> Result<(), i32> {
        let mut held = self.held.lock().expect("domain locks poisoned");
        match held.get_mut(&target) {
            None => {
                held.insert(target, (holder, 1));
                Ok(())
            }
            Some((h, depth)) if *h == holder => {
                *depth += 1;
                Ok(())
            }
            Some(_) => Err(libc::EAGAIN),
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
}
