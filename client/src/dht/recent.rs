//! Where names were just found. `rm` is a lookup then an unlink of the
//! same name: the unlink used to resolve the name again (a second lookup
//! on every replica of its set), a sixth of a cold delete's requests. The
//! answer is kept for a moment and taken by the unlink that follows; one
//! that finds the name gone from where it was (another client renamed or
//! removed it meanwhile) resolves it afresh.

use cairn_common::Gfid;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a lookup's answer stands in for the next one.
const FRESH: Duration = Duration::from_secs(1);
/// Beyond this many names, the stale ones go (and all, if none is).
const MAX_NAMES: usize = 4096;

/// (parent, name) → what was found, and when.
type Names<T> = HashMap<(Gfid, Vec<u8>), (T, Instant)>;

pub(super) struct RecentNames<T> {
    names: Mutex<Names<T>>,
}

impl<T> Default for RecentNames<T> {
    fn default() -> Self {
        RecentNames {
            names: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> RecentNames<T> {
    pub(super) fn note(&self, parent: Gfid, name: &[u8], found: T) {
        let mut names = self.names.lock().expect("recent names poisoned");
        if names.len() >= MAX_NAMES {
            names.retain(|_, (_, at)| at.elapsed() < FRESH);
            if names.len() >= MAX_NAMES {
                names.clear();
            }
        }
        names.insert((parent, name.to_vec()), (found, Instant::now()));
    }

    /// The name's place if it was found within the last moment; it is
    /// used once.
    pub(super) fn take(&self, parent: Gfid, name: &[u8]) -> Option<T> {
        let mut names = self.names.lock().expect("recent names poisoned");
        let (found, at) = names.remove(&(parent, name.to_vec()))?;
        (at.elapsed() < FRESH).then_some(found)
    }

    pub(super) fn forget(&self, parent: Gfid, name: &[u8]) {
        self.names
            .lock()
            .expect("recent names poisoned")
            .remove(&(parent, name.to_vec()));
    }

    /// The subvolumes changed: every place is stale.
    pub(super) fn clear(&self) {
        self.names.lock().expect("recent names poisoned").clear();
    }
}

#[cfg(test)]
mod tests {
    use super::RecentNames;
    use cairn_common::Gfid;

    #[test]
    fn a_found_name_is_used_once_and_forgotten_on_change() {
        let recent = RecentNames::default();
        recent.note(Gfid::ROOT, b"a", 1);
        recent.note(Gfid::ROOT, b"b", 2);
        assert_eq!(recent.take(Gfid::ROOT, b"a"), Some(1));
        assert_eq!(recent.take(Gfid::ROOT, b"a"), None);
        recent.forget(Gfid::ROOT, b"b");
        assert_eq!(recent.take(Gfid::ROOT, b"b"), None);
        recent.note(Gfid::ROOT, b"c", 3);
        recent.clear();
        assert_eq!(recent.take(Gfid::ROOT, b"c"), None);
    }
}
