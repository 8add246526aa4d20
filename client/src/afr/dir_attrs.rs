//! Directory attributes answered from memory for a moment.
//!
//! The kernel drops what it caches of a directory's attributes whenever
//! this mount makes or removes a name in it, and asks again (GETATTR) at
//! the next permission check: one more request per create or unlink, to
//! every subvolume of the volume. A replica set knows the directory's
//! attributes after its own change (the bricks send them back with the
//! post-op, `Reply::MarkedAttrs`), and what it fetched within the mount's
//! attribute timeout is as fresh as the kernel itself would have trusted
//! had it not dropped it. A zero timeout (the default, and every daemon's
//! graph) keeps nothing.

use cairn_common::proto::Attr;
use cairn_common::Gfid;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Directories remembered at most; beyond it the memory starts over
/// (a directory is rarely hot for long, and a miss costs one request).
const LIMIT: usize = 4096;

#[derive(Default)]
pub struct DirAttrs {
    ttl_nanos: AtomicU64,
    map: Mutex<HashMap<Gfid, (Attr, Instant)>>,
    /// Changes seen so far: a fetch that began before one may carry
    /// attributes older than the change's, so it is not remembered.
    changes: AtomicU64,
}

impl DirAttrs {
    pub fn set_ttl(&self, ttl: Duration) {
        self.ttl_nanos
            .store(u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
        if ttl.is_zero() {
            self.map.lock().expect("dir attrs poisoned").clear();
        }
    }

    fn ttl(&self) -> Duration {
        Duration::from_nanos(self.ttl_nanos.load(Ordering::Relaxed))
    }

    /// The directory's attributes, if learned within the timeout.
    pub fn get(&self, gfid: &Gfid) -> Option<Attr> {
        let ttl = self.ttl();
        if ttl.is_zero() {
            return None;
        }
        let mut map = self.map.lock().expect("dir attrs poisoned");
        match map.get(gfid) {
            Some((a, at)) if at.elapsed() < ttl => Some(*a),
            Some(_) => {
                map.remove(gfid);
                None
            }
            None => None,
        }
    }

    /// Where the changes stand, for `put_fetched`.
    pub fn epoch(&self) -> u64 {
        self.changes.load(Ordering::SeqCst)
    }

    /// Remembers attributes fetched from a brick, unless a change came
    /// in since the fetch began (`epoch`).
    pub fn put_fetched(&self, attr: &Attr, epoch: u64) {
        if self.epoch() == epoch {
            self.put(attr);
        }
    }

    /// Remembers what a directory's attributes are now (anything else is
    /// ignored: a file's size changes under writes that pass no post-op).
    pub fn put(&self, attr: &Attr) {
        if !attr.is_dir() || self.ttl().is_zero() {
            return;
        }
        let mut map = self.map.lock().expect("dir attrs poisoned");
        if map.len() >= LIMIT && !map.contains_key(&attr.gfid) {
            map.clear();
        }
        map.insert(attr.gfid, (*attr, Instant::now()));
    }

    /// Forgets an inode whose attributes a change is moving.
    pub fn forget(&self, gfid: &Gfid) {
        if self.ttl().is_zero() {
            return;
        }
        let mut map = self.map.lock().expect("dir attrs poisoned");
        self.changes.fetch_add(1, Ordering::SeqCst);
        map.remove(gfid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(gfid: Gfid, mtime: i64) -> Attr {
        let mut a = crate::layer::test_file(gfid, 0);
        a.mode = libc::S_IFDIR | 0o755;
        a.mtime.sec = mtime;
        a
    }

    #[test]
    fn nothing_is_kept_without_a_timeout() {
        let cache = DirAttrs::default();
        let g = Gfid([3; 16]);
        cache.put(&dir(g, 1));
        assert!(cache.get(&g).is_none());
    }

    #[test]
    fn a_directory_is_served_until_the_timeout_or_a_change() {
        let cache = DirAttrs::default();
        cache.set_ttl(Duration::from_millis(200));
        let (g, file) = (Gfid([3; 16]), Gfid([4; 16]));
        cache.put(&dir(g, 1));
        cache.put(&crate::layer::test_file(file, 10));
        assert_eq!(cache.get(&g).map(|a| a.mtime.sec), Some(1));
        assert!(cache.get(&file).is_none(), "files are never kept");
        cache.put(&dir(g, 2));
        assert_eq!(cache.get(&g).map(|a| a.mtime.sec), Some(2), "the newest wins");
        cache.forget(&g);
        assert!(cache.get(&g).is_none());
        let before = cache.epoch();
        cache.forget(&file);
        cache.put_fetched(&dir(g, 5), before);
        assert!(cache.get(&g).is_none(), "fetched before a change: not kept");
        cache.put_fetched(&dir(g, 5), cache.epoch());
        assert_eq!(cache.get(&g).map(|a| a.mtime.sec), Some(5));
        cache.put(&dir(g, 3));
        std::thread::sleep(Duration::from_millis(250));
        assert!(cache.get(&g).is_none(), "expired");
    }
}
