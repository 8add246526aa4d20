//! I/O statistics of each brick, as gluster's io-stats keeps them: per-fop
//! call counts and latencies, read/write block-size histograms, bytes, and
//! per-file counters for `volume top`. Fed by the server for every fop;
//! read by `volume profile`, `volume top` and the metrics endpoint.

use cairn_common::Gfid;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Block-size histogram buckets: 1b+, 2b+, 4b+ … 2^27b+ (128 MiB+).
pub const SIZE_BUCKETS: usize = 28;
/// Per-file counters kept for `volume top` at most (the busiest survive).
const TOP_FILES_LIMIT: usize = 50_000;

/// Upper bounds (seconds) of the latency histogram's buckets; a last,
/// unbounded bucket follows.
pub const LATENCY_BOUNDS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

#[derive(Debug, Clone, Default)]
pub struct FopStat {
    pub calls: u64,
    pub errors: u64,
    pub total: Duration,
    pub min: Option<Duration>,
    pub max: Duration,
    /// Calls per latency bucket (not cumulative; see `LATENCY_BOUNDS`).
    pub latency: [u64; LATENCY_BOUNDS.len() + 1],
}

#[derive(Debug, Clone)]
pub struct Window {
    pub started: Instant,
    pub fops: HashMap<&'static str, FopStat>,
    pub reads: [u64; SIZE_BUCKETS],
    pub writes: [u64; SIZE_BUCKETS],
    pub bytes_read: u64,
    pub bytes_written: u64,
}

impl Window {
    fn new() -> Window {
        Window {
            started: Instant::now(),
            fops: HashMap::new(),
            reads: [0; SIZE_BUCKETS],
            writes: [0; SIZE_BUCKETS],
            bytes_read: 0,
            bytes_written: 0,
        }
    }
}

/// Counters of one file for `volume top`.
#[derive(Debug, Clone, Default)]
pub struct FileCounters {
    pub opens: u64,
    pub reads: u64,
    pub writes: u64,
    pub opendirs: u64,
    pub readdirs: u64,
}

pub struct BrickStats {
    /// Since the daemon started (metrics), since `profile start`
    /// (cumulative), and since the last `profile info` (interval).
    lifetime: Mutex<Window>,
    cumulative: Mutex<Window>,
    interval: Mutex<(u64, Window)>,
    files: Mutex<HashMap<Gfid, FileCounters>>,
}

impl Default for BrickStats {
    fn default() -> Self {
        BrickStats {
            lifetime: Mutex::new(Window::new()),
            cumulative: Mutex::new(Window::new()),
            interval: Mutex::new((0, Window::new())),
            files: Mutex::new(HashMap::new()),
        }
    }
}

fn bucket(size: u64) -> usize {
    (63 - size.max(1).leading_zeros() as usize).min(SIZE_BUCKETS - 1)
}

/// What one fop did, for the statistics.
pub struct Sample {
    pub op: &'static str,
    pub elapsed: Duration,
    pub ok: bool,
    pub read: Option<u64>,
    pub written: Option<u64>,
    pub file: Option<Gfid>,
    /// A listing's first batch: the brick's equivalent of an opendir.
    pub first_listing: bool,
}

impl BrickStats {
    pub fn record(&self, s: &Sample) {
        for w in [&self.lifetime, &self.cumulative] {
            apply(&mut w.lock().expect("stats poisoned"), s);
        }
        apply(&mut self.interval.lock().expect("stats poisoned").1, s);
        if let Some(gfid) = &s.file {
            let mut files = self.files.lock().expect("stats poisoned");
            if files.len() >= TOP_FILES_LIMIT && !files.contains_key(gfid) {
                // Keep the busiest half; a new file starts from zero.
                let mut all: Vec<(Gfid, u64)> = files.iter().map(|(g, c)| (*g, c.opens + c.reads + c.writes)).collect();
                all.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
                for (g, _) in all.into_iter().skip(TOP_FILES_LIMIT / 2) {
                    files.remove(&g);
                }
            }
            let c = files.entry(*gfid).or_default();
            match s.op {
                "open" | "create" => c.opens += 1,
                "read" => c.reads += 1,
                "write" => c.writes += 1,
                "readdir" => c.readdirs += 1,
                _ => {}
            }
            if s.first_listing {
                c.opendirs += 1;
            }
        }
    }

    pub fn lifetime(&self) -> Window {
        self.lifetime.lock().expect("stats poisoned").clone()
    }

    /// `profile start`: cumulative and interval figures begin now.
    pub fn reset(&self) {
        *self.cumulative.lock().expect("stats poisoned") = Window::new();
        *self.interval.lock().expect("stats poisoned") = (0, Window::new());
    }

    /// `profile info`: the cumulative window and the interval since the last
    /// info (numbered as gluster numbers them), which then starts afresh.
    pub fn profile(&self) -> (Window, u64, Window) {
        let cumulative = self.cumulative.lock().expect("stats poisoned").clone();
        let mut interval = self.interval.lock().expect("stats poisoned");
        let n = interval.0;
        let window = std::mem::replace(&mut interval.1, Window::new());
        interval.0 += 1;
        (cumulative, n, window)
    }

    pub fn files(&self) -> Vec<(Gfid, FileCounters)> {
        self.files
            .lock()
            .expect("stats poisoned")
            .iter()
            .map(|(g, c)| (*g, c.clone()))
            .collect()
    }
}

fn apply(w: &mut Window, s: &Sample) {
    let f = w.fops.entry(s.op).or_default();
    f.calls += 1;
    if !s.ok {
        f.errors += 1;
    }
    f.total += s.elapsed;
    f.min = Some(f.min.map_or(s.elapsed, |m| m.min(s.elapsed)));
    f.max = f.max.max(s.elapsed);
    let secs = s.elapsed.as_secs_f64();
    let b = LATENCY_BOUNDS
        .iter()
        .position(|&bound| secs <= bound)
        .unwrap_or(LATENCY_BOUNDS.len());
    f.latency[b] += 1;
    if let Some(n) = s.read.filter(|_| s.ok) {
        w.reads[bucket(n)] += 1;
        w.bytes_read += n;
    }
    if let Some(n) = s.written.filter(|_| s.ok) {
        w.writes[bucket(n)] += 1;
        w.bytes_written += n;
    }
}

/// One live connection, for `volume status VOL clients`.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub address: String,
    pub identity: String,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub bricks: std::collections::BTreeSet<Uuid>,
}

/// Statistics of every brick this node serves.
#[derive(Default)]
pub struct NodeStats {
    bricks: Mutex<HashMap<Uuid, std::sync::Arc<BrickStats>>>,
    /// Client and peer connections open now.
    pub connections: std::sync::atomic::AtomicI64,
    conns: Mutex<HashMap<u64, ConnInfo>>,
}

impl NodeStats {
    pub fn brick(&self, id: Uuid) -> std::sync::Arc<BrickStats> {
        self.bricks
            .lock()
            .expect("stats poisoned")
            .entry(id)
            .or_default()
            .clone()
    }

    pub fn connection_up(&self, id: u64, address: String, identity: String) {
        self.connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let info = ConnInfo {
            address,
            identity,
            bytes_read: 0,
            bytes_written: 0,
            bricks: Default::default(),
        };
        self.conns.lock().expect("stats poisoned").insert(id, info);
    }

    pub fn connection_down(&self, id: u64) {
        self.connections.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.conns.lock().expect("stats poisoned").remove(&id);
    }

    /// A connection used `brick`, moving these payload bytes.
    pub fn connection_used(&self, id: u64, brick: Uuid, read: u64, written: u64) {
        if let Some(c) = self.conns.lock().expect("stats poisoned").get_mut(&id) {
            c.bytes_read += read;
            c.bytes_written += written;
            c.bricks.insert(brick);
        }
    }

    pub fn connections_of(&self, brick: &Uuid) -> Vec<ConnInfo> {
        let conns = self.conns.lock().expect("stats poisoned");
        let mut v: Vec<ConnInfo> = conns.values().filter(|c| c.bricks.contains(brick)).cloned().collect();
        v.sort_by(|a, b| a.address.cmp(&b.address));
        v
    }

    pub fn all(&self) -> Vec<(Uuid, std::sync::Arc<BrickStats>)> {
        self.bricks
            .lock()
            .expect("stats poisoned")
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(op: &'static str, us: u64, read: Option<u64>) -> Sample {
        Sample {
            op,
            elapsed: Duration::from_micros(us),
            ok: true,
            read,
            written: None,
            file: None,
            first_listing: false,
        }
    }

    #[test]
    fn counts_latencies_and_block_sizes() {
        let s = BrickStats::default();
        s.record(&sample("read", 10, Some(4096)));
        s.record(&sample("read", 30, Some(4097)));
        s.record(&sample("lookup", 5, None));
        let (cum, n, interval) = s.profile();
        assert_eq!(n, 0);
        let r = &cum.fops["read"];
        assert_eq!(
            (r.calls, r.min, r.max),
            (2, Some(Duration::from_micros(10)), Duration::from_micros(30))
        );
        assert_eq!(cum.reads[12], 2, "4096 and 4097 bytes are both 4096b+");
        assert_eq!(cum.bytes_read, 8193);
        assert_eq!(interval.fops["lookup"].calls, 1);
        // The next interval starts empty; the cumulative window keeps going.
        s.record(&sample("lookup", 5, None));
        let (cum, n, interval) = s.profile();
        assert_eq!((n, interval.fops["lookup"].calls, cum.fops["lookup"].calls), (1, 1, 2));
        s.reset();
        assert!(s.profile().0.fops.is_empty());
        assert_eq!(s.lifetime().fops["lookup"].calls, 2);
    }

    #[test]
    fn buckets() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1), 0);
        assert_eq!(bucket(2), 1);
        assert_eq!(bucket(1 << 20), 20);
        assert_eq!(bucket(u64::MAX), SIZE_BUCKETS - 1);
    }
}
