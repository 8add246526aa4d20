//! What this client knows well enough to skip a round trip.
//!
//! - Flush only matters to the brick when the closing process holds locks on
//!   the file: every lock goes through this client, so it knows which
//!   (inode, lock owner) pairs hold any.
//! - The kernel asks for `security.capability` before every write (to clear
//!   file capabilities). Its absence is remembered per inode for the
//!   attribute timeout, like any other attribute, and forgotten when this
//!   client sets or removes it.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const CAPABILITY_XATTR: &[u8] = b"security.capability";

#[derive(Default)]
pub struct LockHolders {
    pairs: Mutex<HashSet<(u64, u64)>>,
}

impl LockHolders {
    pub fn note_lock(&self, ino: u64, owner: u64) {
        self.pairs.lock().expect("lock holders poisoned").insert((ino, owner));
    }

    /// Whether a flush by `owner` must reach the brick; forgets the pair,
    /// since the flush releases all of the owner's locks on the file.
    pub fn take_for_flush(&self, ino: u64, owner: u64) -> bool {
        self.pairs.lock().expect("lock holders poisoned").remove(&(ino, owner))
    }
}

pub struct AbsentCapabilities {
    ttl: Duration,
    until: Mutex<HashMap<u64, Instant>>,
}

impl AbsentCapabilities {
    pub fn new(ttl: Duration) -> AbsentCapabilities {
        AbsentCapabilities {
            ttl,
            until: Mutex::new(HashMap::new()),
        }
    }

    pub fn note_absent(&self, ino: u64) {
        if self.ttl.is_zero() {
            return;
        }
        let mut map = self.until.lock().expect("capability cache poisoned");
        // Bound the map: expired entries go first, then everything.
        if map.len() >= 65536 {
            let now = Instant::now();
            map.retain(|_, t| *t > now);
            if map.len() >= 65536 {
                map.clear();
            }
        }
        map.insert(ino, Instant::now() + self.ttl);
    }

    pub fn known_absent(&self, ino: u64) -> bool {
        let map = self.until.lock().expect("capability cache poisoned");
        map.get(&ino).is_some_and(|t| *t > Instant::now())
    }

    pub fn forget(&self, ino: u64) {
        self.until.lock().expect("capability cache poisoned").remove(&ino);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_needed_once_per_locked_pair() {
        let h = LockHolders::default();
        assert!(!h.take_for_flush(1, 2));
        h.note_lock(1, 2);
        assert!(h.take_for_flush(1, 2));
        assert!(!h.take_for_flush(1, 2));
    }

    #[test]
    fn absence_expires_and_can_be_forgotten() {
        let c = AbsentCapabilities::new(Duration::from_millis(30));
        c.note_absent(5);
        assert!(c.known_absent(5));
        c.forget(5);
        assert!(!c.known_absent(5));
        c.note_absent(5);
        std::thread::sleep(Duration::from_millis(40));
        assert!(!c.known_absent(5));
        let off = AbsentCapabilities::new(Duration::ZERO);
        off.note_absent(1);
        assert!(!off.known_absent(1));
    }
}
