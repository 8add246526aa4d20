//! The results of a benchmark run: the JSON document (`--json`, `--output`)
//! and the human-readable table drawn from the same data.
//!
//! # JSON document (schema 1)
//!
//! Field names are stable; new fields may be added, none are renamed.
//!
//! ```text
//! {
//!   "ok": true,
//!   "schema": 1,
//!   "dir": "/mnt/gv0",                 // the DIR benchmarked
//!   "fs_type": "fuse.cairn",           // from /proc/self/mounts, or null
//!   "mount_point": "/mnt/gv0",         // idem
//!   "cold_cache": true,                // page caches could be dropped (null: never tried)
//!   "config": { "phases": ["smallfile", …], "files": 5000, "file_size": 4096,
//!               "dirs": 1, "size": 1073741824, "rand_size": 268435456,
//!               "runtime_s": 20, "direct": false, "smoke": false },
//!   "warnings": ["…"],
//!   "phases": [ {                      // one per row of the table, in run order
//!     "name": "create",                // create stat ls-l read rename delete
//!                                      // seq-write seq-read rand-read rand-write iozone
//!     "group": "smallfile",            // smallfile | seq | rand | iozone
//!     "status": "measured",            // measured | skipped
//!     "reason": null,                  // why it was skipped
//!     "cache": "cold",                 // cold | warm for phases meant to start cold, else null
//!     "tool": "fio psync",             // what ran it (null for built-in phases)
//!     "ops": 5000,                     // operations (files, or fio I/Os)
//!     "bytes": 20480000,               // payload bytes moved (0 for metadata phases)
//!     "seconds": 1.25,                 // wall time of the measured part
//!     "ops_per_s": 4000.0,             // null when skipped
//!     "mb_per_s": 16.4,                // 10^6 bytes/s; null for metadata phases
//!     "latency_us": { "p50": …, "p90": …, "p99": …, "max": … },  // or null
//!     "processes": [ { "name": "cairnd", "pids": [123], "cpu_s": 0.8,
//!                      "peak_rss_mib": 41.2, "cpu_s_per_gib": null } ],
//!     "iozone": [ { "test": "initial writers", "kb_per_s": 512345.6 } ]  // iozone only, else null
//!   } ]
//! }
//! ```
//!
//! Latencies of the built-in small-file phases are per file operation (for
//! `ls-l`: fetching one directory entry plus its lstat); fio's are its
//! completion latencies (clat). `cpu_s_per_gib` is set for seq phases only.

use serde::Serialize;
use std::fmt::Write;
use std::time::Duration;

pub const SCHEMA: u32 = 1;

#[derive(Serialize, Debug)]
pub struct Report {
    pub ok: bool,
    pub schema: u32,
    pub dir: String,
    pub fs_type: Option<String>,
    pub mount_point: Option<String>,
    pub cold_cache: Option<bool>,
    pub config: super::Config,
    pub warnings: Vec<String>,
    pub phases: Vec<PhaseResult>,
}

#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Measured,
    Skipped,
}

/// Whether a phase that should start with empty caches really did.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Cache {
    Cold,
    Warm,
}

#[derive(Serialize, Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    /// Nearest-rank percentiles of per-operation times in nanoseconds,
    /// reported in microseconds; None without samples.
    pub fn from_ns(samples: &mut [u64]) -> Option<Latency> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let pct = |p: f64| {
            let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
            samples[rank.clamp(1, samples.len()) - 1] as f64 / 1000.0
        };
        Some(Latency {
            p50: pct(50.0),
            p90: pct(90.0),
            p99: pct(99.0),
            max: *samples.last().unwrap_or(&0) as f64 / 1000.0,
        })
    }
}

#[derive(Serialize, Debug, Clone)]
pub struct ProcessUsage {
    pub name: String,
    pub pids: Vec<u32>,
    pub cpu_s: f64,
    pub peak_rss_mib: f64,
    pub cpu_s_per_gib: Option<f64>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct IozoneResult {
    pub test: String,
    pub kb_per_s: f64,
}

#[derive(Serialize, Debug, Clone)]
pub struct PhaseResult {
    pub name: String,
    pub group: &'static str,
    pub status: Status,
    pub reason: Option<String>,
    pub cache: Option<Cache>,
    pub tool: Option<String>,
    pub ops: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub ops_per_s: Option<f64>,
    pub mb_per_s: Option<f64>,
    pub latency_us: Option<Latency>,
    pub processes: Vec<ProcessUsage>,
    pub iozone: Option<Vec<IozoneResult>>,
}

impl PhaseResult {
    /// A measured phase; rates are derived from `ops`, `bytes` and `wall`.
    pub fn measured(name: &str, group: &'static str, ops: u64, bytes: u64, wall: Duration) -> PhaseResult {
        let secs = wall.as_secs_f64().max(1e-9);
        PhaseResult {
            name: name.to_string(),
            group,
            status: Status::Measured,
            reason: None,
            cache: None,
            tool: None,
            ops,
            bytes,
            seconds: wall.as_secs_f64(),
            ops_per_s: Some(ops as f64 / secs),
            mb_per_s: (bytes > 0).then(|| bytes as f64 / secs / 1e6),
            latency_us: None,
            processes: Vec::new(),
            iozone: None,
        }
    }

    pub fn skipped(name: &str, group: &'static str, reason: &str) -> PhaseResult {
        PhaseResult {
            status: Status::Skipped,
            reason: Some(reason.to_string()),
            ops_per_s: None,
            mb_per_s: None,
            ..PhaseResult::measured(name, group, 0, 0, Duration::ZERO)
        }
    }
}

/// Microseconds with precision that fits the magnitude.
fn us(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}")
    } else if v < 1000.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

fn mib(bytes: u64) -> String {
    if bytes >= 1 << 30 && bytes & ((1 << 30) - 1) == 0 {
        format!("{} GiB", bytes >> 30)
    } else if bytes >= 1 << 20 {
        format!("{:.0} MiB", bytes as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.0} KiB", bytes as f64 / 1024.0)
    }
}

/// The human-readable form: a header, one row per phase, then the
/// per-process breakdown and iozone's table when there is one.
pub fn table(r: &Report) -> String {
    let mut s = String::new();
    let c = &r.config;
    let fs = match (&r.fs_type, &r.mount_point) {
        (Some(t), Some(m)) => format!(" ({t} on {m})"),
        _ => String::new(),
    };
    let _ = writeln!(s, "cairn bench {}{fs}", r.dir);
    // What was asked for, so a pasted table says what it measured.
    let mut what = Vec::new();
    if c.wants(super::PhaseGroup::Smallfile) {
        what.push(format!(
            "small files: {} x {} B in {} dir(s)",
            c.files, c.file_size, c.dirs
        ));
    }
    if c.wants(super::PhaseGroup::Seq) {
        what.push(format!("seq: {} in 1 MiB blocks", mib(c.size)));
    }
    if c.wants(super::PhaseGroup::Rand) {
        what.push(format!("rand: 4 KiB in {} for {} s", mib(c.rand_size), c.runtime_s));
    }
    if c.direct {
        what.push("O_DIRECT".into());
    }
    if c.smoke {
        what.push("SMOKE RUN (numbers are meaningless)".into());
    }
    let _ = writeln!(s, "{}", what.join("; "));
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<18} {:>15} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9}",
        "phase", "rate", "p50 µs", "p90 µs", "p99 µs", "max µs", "CPU s", "RSS MiB"
    );
    for p in &r.phases {
        let name = match p.cache {
            Some(Cache::Warm) => format!("{} (warm)", p.name),
            _ => p.name.clone(),
        };
        if p.status == Status::Skipped {
            let _ = writeln!(s, "{name:<18} skipped: {}", p.reason.as_deref().unwrap_or("?"));
            continue;
        }
        let rate = match (p.group, p.mb_per_s, p.ops_per_s) {
            ("seq", Some(mb), _) => format!("{mb:.1} MB/s"),
            ("iozone", ..) => "see below".to_string(),
            (_, _, Some(ops)) => format!("{ops:.0} ops/s"),
            _ => "-".to_string(),
        };
        let lat = |f: fn(&Latency) -> f64| p.latency_us.as_ref().map_or("-".to_string(), |l| us(f(l)));
        let (cpu, rss) = if p.processes.is_empty() {
            ("-".to_string(), "-".to_string())
        } else {
            (
                format!("{:.2}", p.processes.iter().map(|u| u.cpu_s).sum::<f64>()),
                format!("{:.1}", p.processes.iter().map(|u| u.peak_rss_mib).sum::<f64>()),
            )
        };
        let _ = writeln!(
            s,
            "{name:<18} {rate:>15} {:>9} {:>9} {:>9} {:>9} {cpu:>8} {rss:>9}",
            lat(|l| l.p50),
            lat(|l| l.p90),
            lat(|l| l.p99),
            lat(|l| l.max),
        );
    }
    // CPU and RSS above are sums over all watched groups; break them down
    // when there is more than one.
    let groups: usize = r.phases.iter().map(|p| p.processes.len()).max().unwrap_or(0);
    if groups > 1
        || r.phases
            .iter()
            .any(|p| p.processes.iter().any(|u| u.cpu_s_per_gib.is_some()))
    {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<18} {:<20} {:>8} {:>9} {:>10}",
            "phase", "process", "CPU s", "RSS MiB", "CPU s/GiB"
        );
        for p in r.phases.iter().filter(|p| p.status == Status::Measured) {
            for u in &p.processes {
                let per_gib = u.cpu_s_per_gib.map_or("-".to_string(), |v| format!("{v:.2}"));
                let _ = writeln!(
                    s,
                    "{:<18} {:<20} {:>8.2} {:>9.1} {per_gib:>10}",
                    p.name,
                    format!("{} ({})", u.name, u.pids.len()),
                    u.cpu_s,
                    u.peak_rss_mib
                );
            }
        }
    }
    for p in &r.phases {
        if let Some(rows) = &p.iozone {
            let _ = writeln!(s, "\niozone (2 processes, 64 KiB records, {} per file)", mib(c.size));
            for row in rows {
                let _ = writeln!(s, "{:<24} {:>14.0} KB/s", row.test, row.kb_per_s);
            }
        }
    }
    for w in &r.warnings {
        let _ = writeln!(s, "\nwarning: {w}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<u64> = (1..=100).rev().map(|i| i * 1000).collect();
        let l = Latency::from_ns(&mut v).expect("samples");
        assert_eq!((l.p50, l.p90, l.p99, l.max), (50.0, 90.0, 99.0, 100.0));
        let one = Latency::from_ns(&mut [7000]).expect("one sample");
        assert_eq!((one.p50, one.p99, one.max), (7.0, 7.0, 7.0));
        assert!(Latency::from_ns(&mut []).is_none());
    }

    #[test]
    fn rates_from_counts() {
        let p = PhaseResult::measured("read", "smallfile", 1000, 4_096_000, Duration::from_secs(2));
        assert_eq!(p.ops_per_s, Some(500.0));
        assert_eq!(p.mb_per_s, Some(2.048));
        let q = PhaseResult::measured("stat", "smallfile", 10, 0, Duration::from_secs(1));
        assert_eq!(q.mb_per_s, None);
        let s = PhaseResult::skipped("seq-read", "seq", "fio not found");
        assert_eq!((s.status, s.ops_per_s), (Status::Skipped, None));
    }

    #[test]
    fn micros_formatting() {
        assert_eq!(us(4.5678), "4.57");
        assert_eq!(us(123.45), "123.5");
        assert_eq!(us(12345.6), "12346");
        assert_eq!(mib(1 << 30), "1 GiB");
        assert_eq!(mib(16 << 20), "16 MiB");
    }
}
