//! Small files read whole by the open that opened them for reading
//! (`Fop::OpenRead`), kept for that handle's first reads: a cold read of a
//! small file then costs an open and no separate read round trip
//! (GlusterFS's quick-read does the same from the lookup).
//!
//! What is served is the file as of its open: close-to-open consistency,
//! which is what the kernel's page cache gives a FUSE file system anyway
//! (it keeps what it read for as long as the file is open). A change this
//! mount makes to the file forgets its content at once, so a process never
//! reads back older data than it wrote; content read to its end is
//! forgotten too, since the kernel now holds it.

use bytes::Bytes;
use cairn_common::gfid::Gfid;
use std::collections::HashMap;
use std::sync::Mutex;

/// Files up to this size are read whole at open (quick-read's default
/// `max-file-size`); larger ones are opened as usual.
pub(super) const WHOLE_FILE_MAX: u32 = 64 * 1024;

#[derive(Default)]
pub(super) struct WholeFiles {
    by_handle: Mutex<HashMap<u64, (Gfid, Bytes)>>,
}

impl WholeFiles {
    /// Keeps `content`, the whole of `gfid` as opened as `fh`.
    pub(super) fn keep(&self, fh: u64, gfid: Gfid, content: Bytes) {
        self.lock().insert(fh, (gfid, content));
    }

    /// A read of `size` bytes at `offset` through `fh`, when its content is
    /// kept (short or empty past the end, as a read at the end of a file).
    pub(super) fn read(&self, fh: u64, offset: u64, size: u32) -> Option<Bytes> {
        let mut map = self.lock();
        let (_, content) = map.get(&fh)?;
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
            map.retain(|_, (g, _)| *g != gfid);
        }
    }

    /// Forgets what is kept for `fh` (closed).
    pub(super) fn forget(&self, fh: u64) {
        self.lock().remove(&fh);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Gfid, Bytes)>> {
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
}
