//! CPU time and memory of the file system's own processes (bricks, the FUSE
//! client, GlusterFS daemons) while a phase runs, read from /proc: the cost
//! of a workload on the server side is half of what a benchmark should show.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often a running phase is sampled: RSS peaks between samples are
/// missed, CPU time is not (it is a counter).
const SAMPLE_EVERY: Duration = Duration::from_millis(200);

/// What the user asked to watch: `--pids` (each pid is its own group, named
/// after its command) or `--proc-name NAME` (every process of that name).
#[derive(Clone, Debug)]
pub enum Target {
    Pid(u32),
    Name(String),
}

/// One watched group, resolved to the pids alive at the start of a phase.
#[derive(Clone, Debug)]
pub struct Group {
    pub name: String,
    pub pids: Vec<u32>,
}

/// What a group used during one phase.
#[derive(Clone, Debug)]
pub struct GroupUsage {
    pub name: String,
    pub pids: Vec<u32>,
    /// utime + stime consumed during the phase, all threads, in seconds.
    pub cpu_s: f64,
    /// Highest sum of VmRSS over the group's processes seen in any sample.
    pub peak_rss_kib: u64,
}

impl Target {
    /// The pids this target stands for right now. A `--proc-name` is looked
    /// up again before every phase, so restarted daemons are still followed.
    pub fn resolve(&self) -> Group {
        match self {
            Target::Pid(pid) => Group {
                name: format!("{}:{pid}", comm(*pid).unwrap_or_else(|| "pid".into())),
                pids: vec![*pid],
            },
            Target::Name(name) => Group {
                name: name.clone(),
                pids: pids_named(name),
            },
        }
    }
}

/// Does a process with this pid exist?
pub fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}/stat")).exists()
}

fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
}

/// Processes whose `comm` or argv[0] basename is `name` (comm is cut to 15
/// bytes by the kernel, so longer names only match through argv[0]). This
/// process itself is left out: `--proc-name cairn` means the daemon side.
pub fn pids_named(name: &str) -> Vec<u32> {
    let me = std::process::id();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = BTreeSet::new();
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let by_comm = comm(pid).is_some_and(|c| c == name);
        let by_argv0 = || {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmd| {
                let argv0 = cmd.split(|&b| b == 0).next().unwrap_or_default();
                let base = argv0.rsplit(|&b| b == b'/').next().unwrap_or_default();
                base == name.as_bytes()
            })
        };
        if by_comm || by_argv0() {
            out.insert(pid);
        }
    }
    out.into_iter().collect()
}

/// utime + stime (fields 14 and 15, in clock ticks) from /proc/PID/stat.
/// The command name (field 2) is in parentheses and may itself contain
/// spaces and ')', so fields are counted from the last ')'.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field N is fields[N - 3].
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

/// VmRSS in KiB from /proc/PID/status (absent for kernel threads and zombies).
pub fn parse_status_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.trim_start_matches("VmRSS:")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn read_ticks(pid: u32) -> Option<u64> {
    parse_stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn read_rss_kib(pid: u32) -> Option<u64> {
    parse_status_rss_kib(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Per-pid counters of one group while sampling.
struct Tracked {
    group: Group,
    /// (ticks at the start, latest ticks seen) per pid; a process that
    /// exits keeps its last reading instead of losing its CPU time.
    ticks: Vec<Option<(u64, u64)>>,
    peak_rss_kib: u64,
}

impl Tracked {
    fn sample(&mut self) {
        let mut rss = 0;
        for (pid, t) in self.group.pids.iter().zip(self.ticks.iter_mut()) {
            if let (Some((_, last)), Some(now)) = (t.as_mut(), read_ticks(*pid)) {
                *last = now;
            }
            rss += read_rss_kib(*pid).unwrap_or(0);
        }
        self.peak_rss_kib = self.peak_rss_kib.max(rss);
    }

    fn usage(&self, tps: f64) -> GroupUsage {
        let ticks: u64 = self.ticks.iter().flatten().map(|(a, b)| b.saturating_sub(*a)).sum();
        GroupUsage {
            name: self.group.name.clone(),
            pids: self.group.pids.clone(),
            cpu_s: ticks as f64 / tps,
            peak_rss_kib: self.peak_rss_kib,
        }
    }
}

/// A background thread sampling the groups every 200 ms until `finish`.
pub struct Sampler {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<Vec<GroupUsage>>,
}

impl Sampler {
    /// Takes the "before" reading now, then samples in the background.
    pub fn start(groups: Vec<Group>) -> Sampler {
        let mut tracked: Vec<Tracked> = groups
            .into_iter()
            .map(|g| Tracked {
                ticks: g.pids.iter().map(|&p| read_ticks(p).map(|t| (t, t))).collect(),
                group: g,
                peak_rss_kib: 0,
            })
            .collect();
        tracked.iter_mut().for_each(Tracked::sample);
        let (stop, rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(SAMPLE_EVERY) {
                tracked.iter_mut().for_each(Tracked::sample);
            }
            // The "after" reading.
            tracked.iter_mut().for_each(Tracked::sample);
            let tps = ticks_per_second();
            tracked.iter().map(|t| t.usage(tps)).collect()
        });
        Sampler { stop, thread }
    }

    /// Stops sampling and returns what each group used since `start`.
    pub fn finish(self) -> Vec<GroupUsage> {
        let _ = self.stop.send(());
        self.thread.join().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_last_paren() {
        // A command name with spaces and a ')' must not shift the fields.
        let stat = "4242 (mount-cairn ) x) S 1 4242 4242 0 -1 4194560 2791 0 0 0 \
                    157 83 0 0 20 0 6 0 123456 987654321 1234 18446744073709551615";
        assert_eq!(parse_stat_ticks(stat), Some(157 + 83));
        assert_eq!(parse_stat_ticks("1 (init) S 0 1"), None, "truncated");
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn own_stat_parses() {
        let own = std::fs::read_to_string("/proc/self/stat").expect("own stat");
        assert!(parse_stat_ticks(&own).is_some(), "{own}");
    }

    #[test]
    fn rss_from_status() {
        let status = "Name:\tcairnd\nVmPeak:\t  200000 kB\nVmRSS:\t   51234 kB\nThreads:\t6\n";
        assert_eq!(parse_status_rss_kib(status), Some(51234));
        assert_eq!(parse_status_rss_kib("Name:\tkthreadd\nThreads:\t1\n"), None);
    }

    #[test]
    fn sampler_sees_this_process() {
        let me = std::process::id();
        let s = Sampler::start(vec![Group {
            name: "self".into(),
            pids: vec![me],
        }]);
        // Burn a little CPU so there is something to count.
        let mut x = 0u64;
        let until = std::time::Instant::now() + Duration::from_millis(300);
        while std::time::Instant::now() < until {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let u = s.finish();
        assert_eq!(u.len(), 1);
        assert!(u[0].peak_rss_kib > 0, "{u:?}");
        assert!(u[0].cpu_s > 0.0, "{u:?}");
    }
}
