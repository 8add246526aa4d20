//! `cairn bench DIR`: a benchmark of any mounted directory — a Cairn mount,
//! a GlusterFS mount or a local disk — so the three can be compared with
//! the same tool. It needs no cairnd and loads no credentials.
//!
//! Phase groups, in this order (each selectable with `--phases`):
//! - `smallfile`: create, stat, ls -l, read, rename, delete of many small
//!   files (built in, timed per operation; see `smallfile.rs`);
//! - `seq`: 1 MiB sequential write (fsync at the end) and read, with fio;
//! - `rand`: 4 KiB random read and write, time-bounded, with fio;
//! - `iozone`: iozone's throughput mode, when iozone is installed.
//!
//! Phases that should start cold (stat, ls -l, read, seq-read, rand-read)
//! are preceded by `sync` and `echo 3 > /proc/sys/vm/drop_caches`; without
//! the right to do that they run warm and say so. CPU time and peak RSS of
//! the file system's processes (`--pids`, `--proc-name`) are sampled around
//! and during every phase (`procstat.rs`). Everything is created in
//! `DIR/cairn-bench-<pid>` and removed at the end, also on error or Ctrl-C.
//! The JSON document is described in `report.rs`.

mod fio;
mod iozone;
mod procstat;
mod progress;
mod report;
mod smallfile;
mod tool;

use anyhow::Context;
use procstat::{Sampler, Target};
use progress::{PhaseProgress, Progress, Total};
use report::{Cache, Latency, PhaseResult, ProcessUsage, Report};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Sizes take K, M, G or T suffixes (powers of 1024). Needs root for cold-cache phases \
                        (drop_caches); fio for seq and rand; iozone for the iozone phase."
)]
pub struct BenchArgs {
    /// Directory to benchmark: a Cairn or GlusterFS mount, or any local directory.
    pub dir: PathBuf,
    /// Phase groups to run, comma-separated [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub phases: Vec<PhaseGroup>,
    /// Number of small files [default: 5000; 200 with --smoke].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub files: Option<u64>,
    /// Size of each small file [default: 4K].
    #[arg(long, value_parser = parse_size)]
    pub file_size: Option<u64>,
    /// Spread the small files over this many subdirectories [default: 1].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub dirs: Option<u64>,
    /// File size of the sequential phase (and of each iozone file) [default: 1G; 16M with --smoke].
    #[arg(long, value_parser = parse_size)]
    pub size: Option<u64>,
    /// File size of the random-I/O phase [default: 256M; 16M with --smoke].
    #[arg(long, value_parser = parse_size)]
    pub rand_size: Option<u64>,
    /// Seconds each random-I/O phase runs [default: 20; 2 with --smoke].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub runtime: Option<u64>,
    /// Have fio open its files with O_DIRECT (bypassing the client's page cache).
    #[arg(long)]
    pub direct: bool,
    /// Pids of file system processes to watch (CPU, RSS), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub pids: Vec<u32>,
    /// Watch every process of this name (e.g. cairnd, mount-cairn, glusterfsd); repeatable.
    #[arg(long = "proc-name", value_name = "NAME")]
    pub proc_names: Vec<String>,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// No progress output on stderr (warnings are still shown).
    #[arg(long, short)]
    pub quiet: bool,
    /// Shrink everything for CI: every code path runs, the numbers mean nothing.
    #[arg(long)]
    pub smoke: bool,
}

#[derive(clap::ValueEnum, Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum PhaseGroup {
    Smallfile,
    Seq,
    Rand,
    Iozone,
}

/// The settings a run used, defaults and `--smoke` applied (part of the report).
#[derive(Serialize, Debug, Clone)]
pub struct Config {
    pub phases: Vec<PhaseGroup>,
    pub files: u64,
    pub file_size: u64,
    pub dirs: u64,
    pub size: u64,
    pub rand_size: u64,
    pub runtime_s: u64,
    pub direct: bool,
    pub smoke: bool,
}

impl Config {
    /// Explicit options win over `--smoke`, which wins over the defaults.
    fn from_args(a: &BenchArgs) -> anyhow::Result<Config> {
        let pick = |given: Option<u64>, normal: u64, smoke: u64| given.unwrap_or(if a.smoke { smoke } else { normal });
        let mut phases = if a.phases.is_empty() {
            vec![
                PhaseGroup::Smallfile,
                PhaseGroup::Seq,
                PhaseGroup::Rand,
                PhaseGroup::Iozone,
            ]
        } else {
            a.phases.clone()
        };
        phases.sort();
        phases.dedup();
        let c = Config {
            phases,
            files: pick(a.files, 5000, 200),
            file_size: pick(a.file_size, 4096, 4096),
            dirs: pick(a.dirs, 1, 1),
            size: pick(a.size, GIB, 16 * MIB),
            rand_size: pick(a.rand_size, 256 * MIB, 16 * MIB),
            runtime_s: pick(a.runtime, 20, 2),
            direct: a.direct,
            smoke: a.smoke,
        };
        anyhow::ensure!(c.size >= MIB, "--size must be at least 1M (the sequential block size)");
        anyhow::ensure!(
            c.rand_size >= 4096,
            "--rand-size must be at least 4K (the random block size)"
        );
        anyhow::ensure!(c.file_size <= GIB, "--file-size must be at most 1G");
        Ok(c)
    }

    pub fn wants(&self, g: PhaseGroup) -> bool {
        self.phases.contains(&g)
    }
}

/// "512", "4K", "64k", "256M", "1G", "1GiB", "2T": bytes, suffixes in powers of 1024.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid size {s:?} (expected e.g. 4096, 64K, 256M, 1G)"))?;
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("invalid size suffix in {s:?} (use K, M, G or T)")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

// ---------------------------------------------------------------------------
// Interruption: Ctrl-C must still remove what the run created.
// ---------------------------------------------------------------------------

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // A second Ctrl-C means "now", e.g. when a hung mount blocks cleanup.
    if INTERRUPTED.swap(true, Ordering::SeqCst) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
}

/// SIGINT and SIGTERM set a flag that the phases poll, so the run unwinds
/// through the bench directory's guard instead of dying mid-phase.
fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only touches an atomic (and _exit).
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

pub fn check_interrupted() -> anyhow::Result<()> {
    if interrupted() {
        anyhow::bail!("interrupted");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The bench directory and its guard
// ---------------------------------------------------------------------------

/// `DIR/cairn-bench-<pid>`, removed with everything in it when dropped, so
/// an error or interruption anywhere leaves nothing behind.
struct BenchDir {
    path: PathBuf,
    armed: bool,
}

impl BenchDir {
    fn create(parent: &Path) -> anyhow::Result<BenchDir> {
        let path = parent.join(format!("cairn-bench-{}", std::process::id()));
        std::fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(BenchDir { path, armed: true })
    }

    /// The normal-path removal, which can report failure.
    fn remove(mut self) -> anyhow::Result<()> {
        self.armed = false;
        std::fs::remove_dir_all(&self.path).with_context(|| format!("cannot remove {}", self.path.display()))
    }
}

impl Drop for BenchDir {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = std::fs::remove_dir_all(&self.path) {
                eprintln!("warning: cannot remove {}: {e}", self.path.display());
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Orchestration
// ---------------------------------------------------------------------------

/// Runs the benchmark; returns what goes to stdout (the table, or JSON).
pub fn run(args: BenchArgs, json: bool) -> anyhow::Result<String> {
    // Validate everything before creating anything.
    let cfg = Config::from_args(&args)?;
    let meta = std::fs::metadata(&args.dir).with_context(|| format!("cannot use {}", args.dir.display()))?;
    anyhow::ensure!(meta.is_dir(), "{} is not a directory", args.dir.display());
    for &pid in &args.pids {
        anyhow::ensure!(procstat::exists(pid), "--pids: no process with pid {pid}");
    }
    if let Some(out) = &args.output {
        let parent = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        anyhow::ensure!(
            parent.is_dir(),
            "--output: directory {} does not exist",
            parent.display()
        );
    }
    let targets: Vec<Target> = args
        .pids
        .iter()
        .map(|&p| Target::Pid(p))
        .chain(args.proc_names.iter().map(|n| Target::Name(n.clone())))
        .collect();
    install_signal_handlers();

    let mut b = Bench {
        progress: Progress::new(args.quiet),
        cfg,
        targets,
        warnings: Vec::new(),
        cold: None,
        phases: Vec::new(),
    };
    for n in &args.proc_names {
        if procstat::pids_named(n).is_empty() {
            b.warn(format!("--proc-name {n}: no such process now; CPU and RSS will read 0"));
        }
    }
    let dir = BenchDir::create(&args.dir)?;
    b.run_all(&dir.path)?;
    if let Err(e) = dir.remove() {
        b.warn(format!("{e:#}"));
    }

    let mount = std::fs::canonicalize(&args.dir)
        .ok()
        .and_then(|p| mount_of(&std::fs::read_to_string("/proc/self/mounts").unwrap_or_default(), &p));
    let report = Report {
        ok: true,
        schema: report::SCHEMA,
        dir: args.dir.display().to_string(),
        fs_type: mount.as_ref().map(|m| m.0.clone()),
        mount_point: mount.map(|m| m.1),
        cold_cache: b.cold,
        config: b.cfg,
        warnings: b.warnings,
        phases: b.phases,
    };
    let doc = format!("{}\n", serde_json::to_string_pretty(&report)?);
    if let Some(out) = &args.output {
        std::fs::write(out, &doc).with_context(|| format!("cannot write {}", out.display()))?;
    }
    Ok(if json { doc } else { report::table(&report) })
}

/// The state of one run: settings, what was measured so far, warnings.
struct Bench {
    cfg: Config,
    progress: Progress,
    targets: Vec<Target>,
    warnings: Vec<String>,
    /// Whether dropping caches works (None: not tried yet).
    cold: Option<bool>,
    phases: Vec<PhaseResult>,
}

impl Bench {
    fn warn(&mut self, msg: String) {
        self.progress.warn(&msg);
        self.warnings.push(msg);
    }

    fn run_all(&mut self, root: &Path) -> anyhow::Result<()> {
        if self.cfg.wants(PhaseGroup::Smallfile) {
            self.smallfile(root)?;
        }
        let fio = tool::find_on_path("fio");
        if self.cfg.wants(PhaseGroup::Seq) {
            match &fio {
                Some(f) => self.seq(f, root)?,
                None => self.skip(&["seq-write", "seq-read"], "seq", "fio not found on PATH"),
            }
        }
        if self.cfg.wants(PhaseGroup::Rand) {
            match &fio {
                Some(f) => self.rand(f, root)?,
                None => self.skip(&["rand-read", "rand-write"], "rand", "fio not found on PATH"),
            }
        }
        if self.cfg.wants(PhaseGroup::Iozone) {
            match tool::find_on_path("iozone") {
                Some(i) => self.iozone(&i, root)?,
                None => self.skip(&["iozone"], "iozone", "iozone not found on PATH"),
            }
        }
        Ok(())
    }

    fn skip(&mut self, names: &[&str], group: &'static str, reason: &str) {
        for n in names {
            self.phases.push(PhaseResult::skipped(n, group, reason));
        }
        self.progress.note(&format!("{} skipped: {reason}", names.join(", ")));
    }

    /// `sync; echo 3 > /proc/sys/vm/drop_caches`, so the next phase reads
    /// from the file system rather than from the kernel's caches. Without
    /// the right to (not root, a container), say so once and run warm.
    fn drop_caches(&mut self) -> Cache {
        if self.cold == Some(false) {
            return Cache::Warm;
        }
        // SAFETY: sync has no preconditions.
        unsafe { libc::sync() };
        match std::fs::write("/proc/sys/vm/drop_caches", "3") {
            Ok(()) => {
                self.cold = Some(true);
                Cache::Cold
            }
            Err(e) => {
                self.cold = Some(false);
                self.warn(format!(
                    "cannot drop caches ({e}; needs root): phases meant to start cold run warm"
                ));
                Cache::Warm
            }
        }
    }

    fn sampler(&self) -> Sampler {
        Sampler::start(self.targets.iter().map(Target::resolve).collect())
    }

    /// Runs `f` as one measured phase: progress, CPU/RSS sampling around it.
    fn measure<T>(
        &self,
        name: &str,
        total: Total,
        f: impl FnOnce(&PhaseProgress) -> anyhow::Result<T>,
    ) -> anyhow::Result<(T, Vec<procstat::GroupUsage>, PhaseProgress)> {
        let p = self.progress.phase(name, total);
        let sampler = self.sampler();
        let r = f(&p);
        let usage = sampler.finish();
        Ok((r?, usage, p))
    }

    fn record(&mut self, mut r: PhaseResult, usage: Vec<procstat::GroupUsage>, p: PhaseProgress) {
        // CPU per GiB moved is what compares a FUSE client's efficiency
        // across file systems; it is meaningful for streaming phases only.
        let gib = (r.group == "seq" && r.bytes > 0).then(|| r.bytes as f64 / GIB as f64);
        r.processes = usage
            .into_iter()
            .map(|u| ProcessUsage {
                cpu_s_per_gib: gib.map(|g| u.cpu_s / g),
                name: u.name,
                pids: u.pids,
                cpu_s: u.cpu_s,
                peak_rss_mib: u.peak_rss_kib as f64 / 1024.0,
            })
            .collect();
        p.finish(&summary(&r));
        self.phases.push(r);
    }

    fn smallfile(&mut self, root: &Path) -> anyhow::Result<()> {
        let c = self.cfg.clone();
        let mut sf = smallfile::SmallFiles::setup(&root.join("smallfile"), c.files, c.file_size, c.dirs)?;
        for op in smallfile::Op::ALL {
            let cache = op.wants_cold_cache().then(|| self.drop_caches());
            let (mut t, usage, p) = self.measure(op.name(), Total::Items(c.files), |p| sf.run(op, p))?;
            let mut r = PhaseResult::measured(op.name(), "smallfile", t.samples_ns.len() as u64, t.bytes, t.wall);
            r.latency_us = Latency::from_ns(&mut t.samples_ns);
            r.cache = cache;
            self.record(r, usage, p);
        }
        sf.teardown()
    }

    fn fio_job(&self, name: &str, file: &Path, rw: &'static str) -> fio::Job {
        fio::Job {
            name: name.to_string(),
            file: file.to_path_buf(),
            rw,
            bs: MIB,
            size: self.cfg.size,
            ioengine: "psync",
            iodepth: 1,
            runtime_s: None,
            end_fsync: rw.contains("write"),
            direct: self.cfg.direct,
        }
    }

    fn fio_phase(
        &mut self,
        fio: &Path,
        job: &fio::Job,
        group: &'static str,
        cache: Option<Cache>,
    ) -> anyhow::Result<()> {
        let total = match job.runtime_s {
            Some(s) => Total::Seconds(s),
            None => Total::Bytes(job.size),
        };
        let (f, usage, p) = self.measure(&job.name, total, |p| fio::run(fio, job, p))?;
        let mut r = PhaseResult::measured(&job.name, group, f.ios, f.io_bytes, Duration::from_millis(f.runtime_ms));
        // fio's own rates, from its precise per-job clock.
        r.ops_per_s = Some(f.iops);
        r.mb_per_s = Some(f.bw_bytes / 1e6);
        r.latency_us = f.latency;
        r.cache = cache;
        r.tool = Some(job.describe());
        self.record(r, usage, p);
        Ok(())
    }

    fn seq(&mut self, fio: &Path, root: &Path) -> anyhow::Result<()> {
        let file = root.join("seq.dat");
        self.fio_phase(fio, &self.fio_job("seq-write", &file, "write"), "seq", None)?;
        let cache = self.drop_caches();
        self.fio_phase(fio, &self.fio_job("seq-read", &file, "read"), "seq", Some(cache))?;
        std::fs::remove_file(&file).with_context(|| format!("removing {}", file.display()))
    }

    fn rand(&mut self, fio: &Path, root: &Path) -> anyhow::Result<()> {
        let file = root.join("rand.dat");
        // Lay the file out with real data first (not measured): random reads
        // of a sparse or preallocated file would only measure hole handling.
        let mut layout = self.fio_job("rand-layout", &file, "write");
        layout.size = self.cfg.rand_size;
        let p = self.progress.phase("rand-layout", Total::Bytes(layout.size));
        fio::run(fio, &layout, &p)?;
        p.finish("laid out");

        // libaio keeps 16 requests in flight where the kernel allows it (with
        // --direct; buffered libaio mostly completes inline); psync is the
        // portable fallback, one request at a time.
        let libaio = fio::has_libaio(fio);
        let rand_job = |name: &str, rw: &'static str| fio::Job {
            name: name.to_string(),
            bs: 4096,
            size: self.cfg.rand_size,
            ioengine: if libaio { "libaio" } else { "psync" },
            iodepth: if libaio { 16 } else { 1 },
            runtime_s: Some(self.cfg.runtime_s),
            ..self.fio_job(name, &file, rw)
        };
        let (read, write) = (rand_job("rand-read", "randread"), rand_job("rand-write", "randwrite"));
        let cache = self.drop_caches();
        self.fio_phase(fio, &read, "rand", Some(cache))?;
        self.fio_phase(fio, &write, "rand", None)?;
        std::fs::remove_file(&file).with_context(|| format!("removing {}", file.display()))
    }

    fn iozone(&mut self, iozone: &Path, root: &Path) -> anyhow::Result<()> {
        let files = iozone::files(root);
        let mut cmd = std::process::Command::new(iozone);
        cmd.args(iozone::args(self.cfg.size, &files)).current_dir(root);
        let started = Instant::now();
        let (out, usage, p) = self.measure("iozone", Total::Unknown, |_| tool::run_monitored(cmd, |_| {}))?;
        let wall = started.elapsed();
        if !out.status.success() {
            anyhow::bail!("iozone failed ({}): {}", out.status, out.last_words());
        }
        let rows = iozone::parse(&out.stdout);
        anyhow::ensure!(
            !rows.is_empty(),
            "iozone printed no \"Children see throughput\" lines: {}",
            out.last_words()
        );
        let mut r = PhaseResult::measured("iozone", "iozone", 0, 0, wall);
        r.ops_per_s = None;
        r.tool = Some("iozone -t 2 -r 64k".into());
        r.iozone = Some(rows);
        self.record(r, usage, p);
        for f in &files {
            if let Err(e) = std::fs::remove_file(f) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(e).with_context(|| format!("removing {}", f.display()));
                }
            }
        }
        Ok(())
    }
}

/// The one-line summary shown when a phase finishes.
fn summary(r: &PhaseResult) -> String {
    let rate = match (r.group, r.mb_per_s, r.ops_per_s) {
        ("seq", Some(mb), _) => format!("{mb:.1} MB/s"),
        (_, _, Some(ops)) => format!("{ops:.0} ops/s"),
        _ => "finished".into(),
    };
    match &r.latency_us {
        Some(l) => format!("{rate}, p50 {:.1} µs, p99 {:.1} µs", l.p50, l.p99),
        None => rate,
    }
}

/// The (fstype, mount point) of the mount holding `path`, from the text of
/// /proc/self/mounts: the longest mount point that is a prefix of `path`.
fn mount_of(mounts: &str, path: &Path) -> Option<(String, String)> {
    let unescape = |s: &str| {
        s.replace("\\040", " ")
            .replace("\\011", "\t")
            .replace("\\012", "\n")
            .replace("\\134", "\\")
    };
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() >= 3).then(|| (unescape(f[1]), f[2].to_string()))
        })
        .filter(|(mp, _)| path.starts_with(mp))
        // The last of equally long ones is the mount on top.
        .max_by_key(|(mp, _)| mp.len())
        .map(|(mp, t)| (t, mp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2t"), Ok(2 << 40));
        assert_eq!(parse_size("0"), Ok(0));
        for bad in ["", "G", "1.5G", "-1", "12Q", "1 G", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn longest_mount_prefix_wins() {
        let mounts = "/dev/vda / ext4 rw 0 0\n\
                      proc /proc proc rw 0 0\n\
                      127.0.0.1:/vol /tmp/my\\040mnt fuse.cairn rw 0 0\n\
                      tmpfs /tmp tmpfs rw 0 0\n";
        let m = |p: &str| mount_of(mounts, Path::new(p));
        assert_eq!(m("/tmp/my mnt/x"), Some(("fuse.cairn".into(), "/tmp/my mnt".into())));
        assert_eq!(m("/tmp/other"), Some(("tmpfs".into(), "/tmp".into())));
        assert_eq!(m("/work"), Some(("ext4".into(), "/".into())));
        // A mere string prefix is not a path prefix.
        assert_eq!(m("/tmp/my mntx"), Some(("tmpfs".into(), "/tmp".into())));
    }

    #[test]
    fn smoke_shrinks_but_explicit_options_win() {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            a: BenchArgs,
        }
        let cfg = |args: &[&str]| {
            let t = T::try_parse_from(std::iter::once("t").chain(args.iter().copied())).expect("parse");
            Config::from_args(&t.a)
        };
        let c = cfg(&["/tmp", "--smoke", "--files", "7"]).expect("config");
        assert_eq!((c.files, c.size, c.runtime_s), (7, 16 * MIB, 2));
        let d = cfg(&["/tmp", "--phases", "iozone,seq,seq"]).expect("config");
        assert_eq!(d.phases, [PhaseGroup::Seq, PhaseGroup::Iozone]);
        assert_eq!((d.files, d.size, d.rand_size), (5000, GIB, 256 * MIB));
        assert!(cfg(&["/tmp", "--size", "4K"]).is_err(), "below the 1 MiB block");
    }
}
