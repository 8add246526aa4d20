//! Small files read whole by the open that opened them for reading
//! (`Fop::OpenRead`), kept for that handle's first reads: a cold read of a
//! small file then costs an open and no separate read round trip
//! (GlusterFS's quick-read does the same from the lookup).
//!
//! What is served is the file as of its open: close-to-open consistency,
//! which is what the kernel's page cache gives a FUSE file system anyway
//! (it keeps what it read for as long as the file is open). It is served
//! only for `FRESH` after the open, as the kernel trusts attributes for a
//! moment: a first read long after the open goes to a brick, as it would
//! have with nothing cached. A change this mount makes to the file forgets
//! its content at once, so a process never reads back older data than it
//! wrote; content read to its end is forgotten too, since the kernel now
//! holds it. O_DIRECT opens never ask for it (see `Replicate`).

use bytes::Bytes;
use cairn_common::gfid::Gfid;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Files up to this size are read whole at open (quick-read's default
/// `max-file-size`); larger ones are opened as usual.
pub(super) const WHOLE_FILE_MAX: u32 = 64 * 1024;

/// How long after its open a file's content read with it is served.
const FRESH: Duration = Duration::from_secs(1);

struct Kept {
    gfid: Gfid,
    content: Bytes,
    opened: Instant,
}

#[derive(Default)]
pub(super) struct WholeFiles {
    by_handle: Mutex<HashMap<u64, Kept>>,
}

impl WholeFiles {
    /// Keeps `content`, the whole of `gfid` as opened as `fh`.
    pub(super) fn keep(&self, fh: u64, gfid: Gfid, content: Bytes) {
        let kept = Kept {
            gfid,
            content,
            opened: Instant::now(),
        };
        self.lock().insert(fh, kept);
    }

    /// A read of `size` bytes at `offset` through `fh`, when its content is
    /// kept (short or empty past the end, as a read at the end of a file).
    pub(super) fn read(&self, fh: u64, offset: u64, size: u32) -> Option<Bytes> {
        let mut map = self.lock();
        let kept = map.get(&fh)?;
        if kept.opened.elapsed() >= FRESH {
            map.remove(&fh);
            return None;
        }
        let content = &kept.content;
        let len = content.len() as u64;
        let start = offset.min(len);
        let end = offset.saturating_add(u64::from(size)).min(len);
        let data = content.slice(start as usize..end as usize);
        if end == len {
            map.remove(&fh);
        }
        Some(data)
    }

    /// Forgets what is kept of `gfid`: this mount is changing it.
    pub(super) fn forget_file(&self, gfid: Gfid) {
        let mut map = self.lock();
        if !map.is_empty() {
            map.retain(|_, kept| kept.gfid != gfid);
        }
    }

    /// Forgets what is kept for `fh` (closed).
    pub(super) fn forget(&self, fh: u64) {
        self.lock().remove(&fh);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Kept>> {
        self.by_handle.lock().expect("whole files poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gfid(n: u8) -> Gfid {
        Gfid([n; 16])
    }

    #[test]
    fn reads_are_served_until_one_reaches_the_end() {
        let w = WholeFiles::default();
        w.keep(1, gfid(1), Bytes::from_static(b"0123456789"));
        assert_eq!(w.read(1, 2, 3).as_deref(), Some(&b"234"[..]));
        assert_eq!(w.read(1, 8, 100).as_deref(), Some(&b"89"[..]));
        assert_eq!(w.read(1, 0, 4), None, "the kernel holds what was read to the end");
    }

    #[test]
    fn a_read_past_the_end_is_empty_like_a_read_at_eof() {
        let w = WholeFiles::default();
        w.keep(1, gfid(1), Bytes::from_static(b"abc"));
        assert_eq!(w.read(1, 10, 4096).as_deref(), Some(&b""[..]));
    }

    #[test]
    fn a_change_to_the_file_forgets_it_for_every_handle_and_spares_others() {
        let w = WholeFiles::default();
        w.keep(1, gfid(1), Bytes::from_static(b"old"));
        w.keep(2, gfid(1), Bytes::from_static(b"old"));
        w.keep(3, gfid(2), Bytes::from_static(b"other"));
        w.forget_file(gfid(1));
        assert_eq!(w.read(1, 0, 1), None);
        assert_eq!(w.read(2, 0, 1), None);
        assert_eq!(w.read(3, 0, 1).as_deref(), Some(&b"o"[..]));
        w.forget(3);
        assert_eq!(w.read(3, 0, 1), None);
    }

    #[test]
    fn content_is_served_only_for_a_moment_after_the_open() {
        let w = WholeFiles::default();
        w.keep(1, gfid(1), Bytes::from_static(b"old"));
        w.lock().get_mut(&1).unwrap().opened -= FRESH;
        assert_eq!(w.read(1, 0, 1), None, "a late first read goes to a brick");
        assert!(w.lock().is_empty(), "and what was kept is dropped");
    }
}
