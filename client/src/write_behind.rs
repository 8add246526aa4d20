//! Write-behind (gluster's performance/write-behind): a write is
//! acknowledged once it is on its way to the bricks, so one writer keeps
//! several writes in flight instead of waiting a round trip for each.
//!
//! What keeps this safe:
//! - Writes to overlapping ranges of a file never travel together: a write
//!   waits for every in-flight write it overlaps, so the bricks apply them
//!   in the order the application made them.
//! - Up to `performance.write-behind-window-size` bytes per file are in
//!   flight; a write beyond that waits for room.
//! - Anything that reads or depends on a file's data or size (read, lseek,
//!   getattr, lookup, truncate, fallocate, locks, copy_file_range, and
//!   listings, whose entries carry sizes) first waits for its writes.
//! - A write that fails in the background is reported by the next write,
//!   flush (close) or fsync of the handle that made it; flush, fsync and
//!   release wait for the handle's file to have no write in flight.
//! - Files opened with O_SYNC, O_DSYNC, O_DIRECT or O_APPEND write
//!   through (the brick places an append at its own end of file, so two
//!   appends in flight could swap), and so does every file while the
//!   fullest subvolume is nearly full: there an ENOSPC must reach the
//!   write(2) that caused it (gluster's write-behind reports it only at
//!   close, which many programs never check).

use crate::dht::Distribute;
use crate::layer::{Errno, FopFuture, FopResult, Subvolume};
use bytes::Bytes;
use cairn_common::proto::{Fop, Reply};
use cairn_common::Gfid;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::Notify;

/// Below this much free space on the fullest subvolume (or 5 % of it),
/// every write goes through, so ENOSPC is reported where it happens.
const NEARLY_FULL_BYTES: u64 = 1 << 30;
const NEARLY_FULL_PERMILLE: u64 = 50;

/// Writes ending past this offset go through: a brick's file-size limit
/// (ext4: 16 TiB) must fail the pwrite(2) itself with EFBIG.
const WRITE_THROUGH_BEYOND: u64 = 1 << 40;

/// An open handle as write-behind sees it.
struct OpenHandle {
    gfid: Gfid,
    /// Opened for synchronous, direct or appending I/O: never written behind.
    through: bool,
    /// A background write's failure, for the handle's next write, flush
    /// or fsync.
    error: Option<Errno>,
}

/// A write on its way.
struct InFlight {
    id: u64,
    start: u64,
    end: u64,
}

#[derive(Default)]
struct State {
    handles: HashMap<u64, OpenHandle>,
    inflight: HashMap<Gfid, Vec<InFlight>>,
    next_id: u64,
}

impl State {
    fn overlaps(&self, gfid: &Gfid, start: u64, end: u64) -> bool {
        self.inflight
            .get(gfid)
            .is_some_and(|l| l.iter().any(|w| w.start < end && start < w.end))
    }

    fn bytes_in_flight(&self, gfid: &Gfid) -> u64 {
        self.inflight
            .get(gfid)
            .map_or(0, |l| l.iter().map(|w| w.end - w.start).sum())
    }
}

pub struct WriteBehind {
    inner: Arc<dyn Subvolume>,
    /// Free-space figures (the volume's distribute layer), if known.
    space: Option<Arc<Distribute>>,
    enabled: AtomicBool,
    window: AtomicU64,
    state: Mutex<State>,
    /// Signalled whenever a write in flight finishes.
    finished: Notify,
    me: Weak<WriteBehind>,
}

impl WriteBehind {
    pub fn new(inner: Arc<dyn Subvolume>, space: Option<Arc<Distribute>>) -> Arc<WriteBehind> {
        Arc::new_cyclic(|me| WriteBehind {
            inner,
            space,
            enabled: AtomicBool::new(false),
            window: AtomicU64::new(4 << 20),
            state: Mutex::new(State::default()),
            finished: Notify::new(),
            me: me.clone(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("write-behind poisoned")
    }

    /// Waits until `done(state)` holds, re-checking after every finished write.
    async fn wait_until(&self, mut done: impl FnMut(&mut State) -> bool) {
        loop {
            // Registered before looking, so a write finishing in between wakes us.
            let finished = self.finished.notified();
            tokio::pin!(finished);
            finished.as_mut().enable();
            if done(&mut self.state()) {
                return;
            }
            finished.await;
        }
    }

    /// Waits for every write in flight to `gfid` (every file: None).
    async fn drain(&self, gfid: Option<Gfid>) {
        self.wait_until(|st| match &gfid {
            Some(g) => !st.inflight.contains_key(g),
            None => st.inflight.is_empty(),
        })
        .await;
    }

    fn gfid_of(&self, fh: u64) -> Option<Gfid> {
        self.state().handles.get(&fh).map(|h| h.gfid)
    }

    async fn drain_handle(&self, fh: u64) {
        if let Some(g) = self.gfid_of(fh) {
            self.drain(Some(g)).await;
        }
    }

    /// Waits for the writes in flight to `fh`'s file; then the handle's
    /// first background failure not reported yet, if any. close(2) calls
    /// this even when it has no locks to release on the bricks.
    pub async fn settle(&self, fh: u64) -> Result<(), Errno> {
        self.drain_handle(fh).await;
        self.take_error(fh).map_or(Ok(()), Err)
    }

    fn take_error(&self, fh: u64) -> Option<Errno> {
        self.state().handles.get_mut(&fh).and_then(|h| h.error.take())
    }

    fn remember_open(&self, reply: &FopResult, gfid: Option<Gfid>, flags: i32) {
        let (fh, gfid) = match (reply, gfid) {
            (Ok((Reply::Opened { fh }, _)), Some(g)) => (*fh, g),
            (Ok((Reply::Created { attr, fh }, _)), _) => (*fh, attr.gfid),
            _ => return,
        };
        // O_APPEND: the brick appends wherever its file ends, whatever
        // offset a write names, so two appends in flight could land in
        // either order.
        let through = flags & (libc::O_DSYNC | libc::O_DIRECT | libc::O_APPEND) != 0;
        self.state().handles.insert(
            fh,
            OpenHandle {
                gfid,
                through,
                error: None,
            },
        );
    }

    /// Is the fullest subvolume close enough to full that writes must go
    /// through?
    async fn nearly_full(&self) -> bool {
        let Some(dht) = &self.space else { return false };
        dht.least_free()
            .await
            .is_some_and(|(bytes, permille)| bytes < NEARLY_FULL_BYTES || permille < NEARLY_FULL_PERMILLE)
    }

    async fn write(&self, fh: u64, offset: u64, len: u32, op: Fop, payload: Bytes) -> FopResult {
        if let Some(e) = self.take_error(fh) {
            return Err(e);
        }
        let handle = self.state().handles.get(&fh).map(|h| (h.gfid, h.through));
        let Some((gfid, through)) = handle else {
            return self.inner.call(op, payload).await;
        };
        let (start, end) = (offset, offset.saturating_add(u64::from(len)));
        if through || end > WRITE_THROUGH_BEYOND || !self.enabled.load(Ordering::Relaxed) || self.nearly_full().await {
            self.drain(Some(gfid)).await;
            return self.inner.call(op, payload).await;
        }
        let window = self.window.load(Ordering::Relaxed);
        let mut id = 0;
        self.wait_until(|st| {
            let room = st.bytes_in_flight(&gfid) + u64::from(len) <= window || !st.inflight.contains_key(&gfid);
            if !room || st.overlaps(&gfid, start, end) {
                return false;
            }
            st.next_id += 1;
            id = st.next_id;
            st.inflight.entry(gfid).or_default().push(InFlight { id, start, end });
            true
        })
        .await;
        let Some(me) = self.me.upgrade() else {
            return Err(Errno(libc::ENOTCONN));
        };
        tokio::spawn(async move {
            let result = me.inner.call(op, payload).await;
            let failure = match result {
                Ok((Reply::Written { len: done }, _)) if done == len => None,
                // A short write in the background: the rest is lost, and
                // only an error can say so now.
                Ok((Reply::Written { .. }, _)) => Some(Errno(libc::EIO)),
                Ok(_) => Some(Errno(libc::EIO)),
                Err(e) => Some(e),
            };
            me.finish(fh, gfid, id, failure);
        });
        Ok((Reply::Written { len }, Bytes::new()))
    }

    fn finish(&self, fh: u64, gfid: Gfid, id: u64, failure: Option<Errno>) {
        {
            let mut st = self.state();
            if let Some(list) = st.inflight.get_mut(&gfid) {
                list.retain(|w| w.id != id);
                if list.is_empty() {
                    st.inflight.remove(&gfid);
                }
            }
            if let Some(e) = failure {
                tracing::warn!(%gfid, errno = e.0, "a written-behind write failed; the file's next write, flush or fsync reports it");
                match st.handles.get_mut(&fh) {
                    Some(h) => {
                        h.error.get_or_insert(e);
                    }
                    None => tracing::error!(%gfid, "a written-behind write failed after its handle was released"),
                }
            }
        }
        self.finished.notify_waiters();
    }

    /// Runs `op` after the writes in flight to the file it concerns.
    async fn after_writes(&self, gfid: Option<Gfid>, op: Fop, payload: Bytes) -> FopResult {
        if let Some(g) = gfid {
            self.drain(Some(g)).await;
        }
        self.inner.call(op, payload).await
    }

    async fn perform(&self, op: Fop, payload: Bytes) -> FopResult {
        match op {
            Fop::Open { gfid, flags } => {
                let r = self.inner.call(op, payload).await;
                self.remember_open(&r, Some(gfid), flags);
                r
            }
            Fop::Create { flags, .. } => {
                let r = self.inner.call(op, payload).await;
                self.remember_open(&r, None, flags);
                r
            }
            Fop::Write { fh, offset, len } => self.write(fh, offset, len, op, payload).await,
            Fop::Flush { fh, .. } | Fop::Fsync { fh, .. } => {
                let settled = self.settle(fh).await;
                let r = self.inner.call(op, payload).await;
                settled.and(r)
            }
            Fop::Release { fh } => {
                self.drain_handle(fh).await;
                self.state().handles.remove(&fh);
                self.inner.call(op, payload).await
            }
            Fop::CopyFileRange { fh_in, fh_out, .. } => {
                self.drain_handle(fh_in).await;
                self.drain_handle(fh_out).await;
                self.inner.call(op, payload).await
            }
            Fop::Read { fh, .. }
            | Fop::Lseek { fh, .. }
            | Fop::Fallocate { fh, .. }
            | Fop::GetLk { fh, .. }
            | Fop::SetLk { fh, .. }
            | Fop::Checksum { fh, .. } => {
                let gfid = self.gfid_of(fh);
                self.after_writes(gfid, op, payload).await
            }
            Fop::GetAttr { gfid } | Fop::SetAttr { gfid, .. } => self.after_writes(Some(gfid), op, payload).await,
            Fop::Lookup { .. } => {
                let r = self.inner.call(op.clone(), payload.clone()).await;
                let pending = match &r {
                    Ok((Reply::Entry(a), _)) => self.state().inflight.contains_key(&a.gfid).then_some(a.gfid),
                    _ => None,
                };
                match pending {
                    // Its size may predate writes still in flight: ask again after them.
                    Some(g) => self.after_writes(Some(g), op, payload).await,
                    None => r,
                }
            }
            Fop::Readdir { .. } => {
                // Listings may carry attributes (readdirplus): no size
                // older than a write already acknowledged.
                self.drain(None).await;
                self.inner.call(op, payload).await
            }
            op => self.inner.call(op, payload).await,
        }
    }
}

impl Subvolume for WriteBehind {
    fn call(&self, op: Fop, payload: Bytes) -> FopFuture<'_> {
        Box::pin(self.perform(op, payload))
    }

    fn name(&self) -> String {
        self.inner.name()
    }

    fn reconfigure(&self, options: &std::collections::BTreeMap<String, String>) {
        use cairn_common::options::{effective, parse_bool, parse_size};
        let on = parse_bool(effective(options, "performance.write-behind")).unwrap_or(false);
        self.enabled.store(on, Ordering::Relaxed);
        if let Some(w) = parse_size(effective(options, "performance.write-behind-window-size")) {
            self.window.store(w, Ordering::Relaxed);
        }
        self.inner.reconfigure(options);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_common::proto::Attr;
    use std::time::Duration;

    /// A file store below write-behind: applies writes to one buffer in
    /// the order they arrive, each after a delay set per write (so later
    /// writes can overtake earlier ones), and fails writes at a chosen offset.
    #[derive(Default)]
    struct SlowFile {
        data: Mutex<Vec<u8>>,
        /// Writes started and not yet finished, and the most at once.
        busy: Mutex<(usize, usize)>,
        fail_at: Mutex<Option<u64>>,
        getattr_saw_len: Mutex<Vec<usize>>,
        writes_seen: AtomicU64,
    }

    const GFID: Gfid = Gfid([7; 16]);

    fn attr(size: u64) -> Attr {
        crate::layer::test_file(GFID, size)
    }

    impl Subvolume for SlowFile {
        fn call(&self, op: Fop, payload: Bytes) -> FopFuture<'_> {
            Box::pin(async move {
                match op {
                    Fop::Open { .. } => Ok((Reply::Opened { fh: 1 }, Bytes::new())),
                    Fop::Write { offset, len, .. } => {
                        {
                            let mut b = self.busy.lock().unwrap();
                            b.0 += 1;
                            b.1 = b.1.max(b.0);
                        }
                        // Early writes take longest: without ordering they would land last.
                        let seq = self.writes_seen.fetch_add(1, Ordering::SeqCst);
                        let delay = 40u64.saturating_sub(4 * seq);
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                        self.busy.lock().unwrap().0 -= 1;
                        if *self.fail_at.lock().unwrap() == Some(offset) {
                            return Err(Errno(libc::EIO));
                        }
                        let mut d = self.data.lock().unwrap();
                        let end = offset as usize + len as usize;
                        if d.len() < end {
                            d.resize(end, 0);
                        }
                        d[offset as usize..end].copy_from_slice(&payload);
                        Ok((Reply::Written { len }, Bytes::new()))
                    }
                    Fop::GetAttr { .. } => {
                        let len = self.data.lock().unwrap().len();
                        self.getattr_saw_len.lock().unwrap().push(len);
                        Ok((Reply::Attr(attr(len as u64)), Bytes::new()))
                    }
                    _ => Ok((Reply::Empty, Bytes::new())),
                }
            })
        }

        fn name(&self) -> String {
            "slow".into()
        }
    }

    async fn open(wb: &WriteBehind, flags: i32) -> u64 {
        match wb.call(Fop::Open { gfid: GFID, flags }, Bytes::new()).await.unwrap() {
            (Reply::Opened { fh }, _) => fh,
            r => panic!("{r:?}"),
        }
    }

    async fn write(wb: &WriteBehind, fh: u64, offset: u64, byte: u8, len: usize) -> FopResult {
        let op = Fop::Write {
            fh,
            offset,
            len: len as u32,
        };
        wb.call(op, Bytes::from(vec![byte; len])).await
    }

    fn layer(window: &str) -> (Arc<SlowFile>, Arc<WriteBehind>) {
        let file = Arc::new(SlowFile::default());
        let wb = WriteBehind::new(file.clone(), None);
        let mut o = std::collections::BTreeMap::new();
        o.insert("performance.write-behind".to_string(), "on".to_string());
        o.insert("performance.write-behind-window-size".to_string(), window.to_string());
        wb.reconfigure(&o);
        (file, wb)
    }

    #[tokio::test]
    async fn overlapping_writes_land_in_order_and_distinct_ones_overlap_in_time() {
        let (file, wb) = layer("1MB");
        let fh = open(&wb, libc::O_WRONLY).await;
        // Eight distinct blocks, then the first rewritten twice.
        for i in 0..8u64 {
            write(&wb, fh, i * 4096, i as u8 + 1, 4096).await.unwrap();
        }
        write(&wb, fh, 0, 0xAA, 4096).await.unwrap();
        write(&wb, fh, 2048, 0xBB, 4096).await.unwrap();
        wb.call(Fop::Flush { fh, lock_owner: 0 }, Bytes::new()).await.unwrap();
        let d = file.data.lock().unwrap().clone();
        assert_eq!(d.len(), 8 * 4096);
        assert!(d[..2048].iter().all(|&b| b == 0xAA));
        assert!(d[2048..6144].iter().all(|&b| b == 0xBB));
        assert!(d[6144..8192].iter().all(|&b| b == 2));
        for i in 2..8 {
            assert!(
                d[i * 4096..(i + 1) * 4096].iter().all(|&b| b == i as u8 + 1),
                "block {i}"
            );
        }
        assert!(file.busy.lock().unwrap().1 > 1, "writes never overlapped in time");
    }

    #[tokio::test]
    async fn the_window_bounds_bytes_in_flight() {
        let (file, wb) = layer("64KB");
        let fh = open(&wb, libc::O_WRONLY).await;
        for i in 0..16u64 {
            write(&wb, fh, i * 8192, 1, 8192).await.unwrap();
        }
        wb.call(Fop::Fsync { fh, datasync: false }, Bytes::new()).await.unwrap();
        assert!(file.busy.lock().unwrap().1 <= 8, "more than 64 KiB in flight");
    }

    #[tokio::test]
    async fn a_failed_write_is_reported_by_the_next_flush_once() {
        let (file, wb) = layer("1MB");
        *file.fail_at.lock().unwrap() = Some(4096);
        let fh = open(&wb, libc::O_WRONLY).await;
        write(&wb, fh, 0, 1, 4096).await.unwrap();
        write(&wb, fh, 4096, 1, 4096).await.unwrap();
        let flush = wb.call(Fop::Flush { fh, lock_owner: 0 }, Bytes::new()).await;
        assert_eq!(flush.unwrap_err(), Errno(libc::EIO));
        wb.call(Fop::Flush { fh, lock_owner: 0 }, Bytes::new()).await.unwrap();
    }

    #[tokio::test]
    async fn a_failed_write_is_reported_by_the_next_write() {
        let (file, wb) = layer("1MB");
        *file.fail_at.lock().unwrap() = Some(0);
        let fh = open(&wb, libc::O_WRONLY).await;
        write(&wb, fh, 0, 1, 4096).await.unwrap();
        wb.drain(None).await;
        assert_eq!(write(&wb, fh, 4096, 1, 4096).await.unwrap_err(), Errno(libc::EIO));
    }

    #[tokio::test]
    async fn getattr_sees_every_acknowledged_write() {
        let (file, wb) = layer("1MB");
        let fh = open(&wb, libc::O_WRONLY).await;
        for i in 0..4u64 {
            write(&wb, fh, i * 4096, 1, 4096).await.unwrap();
        }
        match wb.call(Fop::GetAttr { gfid: GFID }, Bytes::new()).await.unwrap() {
            (Reply::Attr(a), _) => assert_eq!(a.size, 4 * 4096),
            r => panic!("{r:?}"),
        }
        assert_eq!(*file.getattr_saw_len.lock().unwrap(), vec![4 * 4096]);
    }

    #[tokio::test]
    async fn synchronous_and_direct_files_write_through() {
        for flags in [
            libc::O_WRONLY | libc::O_SYNC,
            libc::O_WRONLY | libc::O_DIRECT,
            libc::O_WRONLY | libc::O_APPEND,
        ] {
            let (file, wb) = layer("1MB");
            *file.fail_at.lock().unwrap() = Some(0);
            let fh = open(&wb, flags).await;
            assert_eq!(write(&wb, fh, 0, 1, 4096).await.unwrap_err(), Errno(libc::EIO));
        }
        let (file, wb) = layer("1MB");
        let mut o = std::collections::BTreeMap::new();
        o.insert("performance.write-behind".to_string(), "off".to_string());
        wb.reconfigure(&o);
        *file.fail_at.lock().unwrap() = Some(0);
        let fh = open(&wb, libc::O_WRONLY).await;
        assert_eq!(write(&wb, fh, 0, 1, 4096).await.unwrap_err(), Errno(libc::EIO));
    }
}
