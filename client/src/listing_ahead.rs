//! The rest of a directory batch the kernel had no room for, kept for its
//! next readdir (GlusterFS's readdir-ahead, in its simplest form).
//!
//! A listing fetches up to 512 entries per round trip, but the kernel's
//! readdir buffer takes far fewer (one 4 KiB page on older kernels, the
//! caller's getdents buffer up to 128 KiB on newer ones), and asks again
//! from the last entry it took. Without this the bricks listed, stat'ed
//! and sent the same entries again on every call: a 3,000-entry `ls -l`
//! fetched each entry several times over.
//!
//! What is kept is exactly what the brick said a moment ago, so serving it
//! is the same as a listing that took a little longer; it is dropped when
//! it is older than its lifetime (at most a second; for entries carrying
//! attributes, no longer than the attribute timeout, so `attribute-timeout=0`
//! keeps nothing), and as soon as this client changes anything at all
//! (any request but a pure read bumps a generation; a remainder fetched
//! under an older generation is not served).

use cairn_common::proto::DirEntry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Names alone are kept this long at most.
const NAMES_TTL: Duration = Duration::from_secs(1);
/// Remainders kept at once (each at most one batch, ~100 KiB): enough for
/// many concurrent listers, bounded whatever they do.
const MAX_KEPT: usize = 64;

/// Where a listing resumes: directory inode, whether entries carry
/// attributes, and the cookie the kernel will ask from.
type Resume = (u64, bool, u64);

struct Kept {
    entries: Vec<DirEntry>,
    eof: bool,
    generation: u64,
    expires: Instant,
}

pub struct ListingAhead {
    plus_ttl: Duration,
    generation: AtomicU64,
    kept: Mutex<HashMap<Resume, Kept>>,
}

impl ListingAhead {
    /// `attr_timeout` bounds how long entries with attributes are kept.
    pub fn new(attr_timeout: Duration) -> ListingAhead {
        ListingAhead {
            plus_ttl: attr_timeout.min(NAMES_TTL),
            generation: AtomicU64::new(0),
            kept: Mutex::new(HashMap::new()),
        }
    }

    /// The generation a fetch starts under; pass it to [`Self::keep`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// This client is about to change something: nothing kept so far is
    /// served again.
    pub fn changed(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.kept.lock().expect("listing remainders poisoned").clear();
    }

    /// The entries of `dir` from `cookie` on and whether they end the
    /// listing, when a fresh remainder starts exactly there.
    pub fn take(&self, dir: u64, plus: bool, cookie: u64) -> Option<(Vec<DirEntry>, bool)> {
        let k = self
            .kept
            .lock()
            .expect("listing remainders poisoned")
            .remove(&(dir, plus, cookie))?;
        (k.generation == self.generation() && k.expires > Instant::now()).then_some((k.entries, k.eof))
    }

    /// Keeps the entries the kernel did not take, which follow `after`
    /// (the cookie of the last entry it took), fetched under `generation`.
    pub fn keep(&self, dir: u64, plus: bool, after: u64, rest: Vec<DirEntry>, eof: bool, generation: u64) {
        let ttl = if plus { self.plus_ttl } else { NAMES_TTL };
        if ttl.is_zero() || (rest.is_empty() && !eof) || generation != self.generation() {
            return;
        }
        let now = Instant::now();
        let mut kept = self.kept.lock().expect("listing remainders poisoned");
        if kept.len() >= MAX_KEPT {
            kept.retain(|_, k| k.expires > now);
            if kept.len() >= MAX_KEPT {
                kept.clear();
            }
        }
        kept.insert(
            (dir, plus, after),
            Kept {
                entries: rest,
                eof,
                generation,
                expires: now + ttl,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_common::Gfid;

    fn entries(cookies: std::ops::Range<u64>) -> Vec<DirEntry> {
        cookies
            .map(|c| DirEntry {
                cookie: c,
                name: format!("f{c}").into_bytes(),
                gfid: Gfid::ROOT,
                kind: libc::S_IFREG,
                attr: None,
                linkto: None,
            })
            .collect()
    }

    #[test]
    fn a_remainder_is_served_once_from_where_the_kernel_stopped() {
        let ahead = ListingAhead::new(Duration::from_secs(1));
        let g = ahead.generation();
        ahead.keep(7, true, 20, entries(21..40), false, g);
        assert!(ahead.take(7, true, 19).is_none(), "another resume point");
        assert!(ahead.take(7, false, 20).is_none(), "names-only is another listing");
        assert!(ahead.take(8, true, 20).is_none(), "another directory");
        let (got, eof) = ahead.take(7, true, 20).expect("kept");
        assert_eq!(got.first().map(|e| e.cookie), Some(21));
        assert!(!eof);
        assert!(ahead.take(7, true, 20).is_none(), "served once");
    }

    #[test]
    fn any_change_by_this_client_drops_what_is_kept() {
        let ahead = ListingAhead::new(Duration::from_secs(1));
        let before = ahead.generation();
        ahead.keep(7, true, 20, entries(21..40), false, before);
        ahead.changed();
        assert!(ahead.take(7, true, 20).is_none());
        // A fetch that began before the change is not kept either.
        ahead.keep(7, true, 20, entries(21..40), false, before);
        assert!(ahead.take(7, true, 20).is_none());
    }

    #[test]
    fn zero_attribute_timeout_keeps_no_attributes_but_names() {
        let ahead = ListingAhead::new(Duration::ZERO);
        let g = ahead.generation();
        ahead.keep(7, true, 20, entries(21..40), false, g);
        assert!(ahead.take(7, true, 20).is_none());
        ahead.keep(7, false, 20, entries(21..40), false, g);
        assert!(ahead.take(7, false, 20).is_some());
    }

    #[test]
    fn an_end_of_listing_is_kept_even_without_entries() {
        let ahead = ListingAhead::new(Duration::from_secs(1));
        let g = ahead.generation();
        ahead.keep(7, false, 40, Vec::new(), true, g);
        assert_eq!(ahead.take(7, false, 40).map(|(e, eof)| (e.len(), eof)), Some((0, true)));
        ahead.keep(7, false, 40, Vec::new(), false, g);
        assert!(ahead.take(7, false, 40).is_none(), "nothing to say");
    }

    #[test]
    fn expired_remainders_are_not_served() {
        let ahead = ListingAhead::new(Duration::from_millis(1));
        let g = ahead.generation();
        ahead.keep(7, true, 20, entries(21..40), false, g);
        std::thread::sleep(Duration::from_millis(5));
        assert!(ahead.take(7, true, 20).is_none());
    }
}
