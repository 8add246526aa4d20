//! Sequential and random I/O through fio: building its command line,
//! following its progress, and reading bandwidth, IOPS and completion
//! latency percentiles from `--output-format=json`.

use super::progress::PhaseProgress;
use super::report::Latency;
use super::tool;
use anyhow::Context;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Which side of fio's per-job statistics a job fills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Read,
    Write,
}

impl Dir {
    fn key(self) -> &'static str {
        match self {
            Dir::Read => "read",
            Dir::Write => "write",
        }
    }
}

/// One fio job, as `cairn bench` runs them: a single file, one thread.
#[derive(Clone, Debug)]
pub struct Job {
    pub name: String,
    pub file: PathBuf,
    /// fio's `rw`: write, read, randread, randwrite.
    pub rw: &'static str,
    pub bs: u64,
    pub size: u64,
    pub ioengine: &'static str,
    pub iodepth: u32,
    /// Seconds for a time-bounded job (fio loops over the file until then).
    pub runtime_s: Option<u64>,
    pub end_fsync: bool,
    pub direct: bool,
}

impl Job {
    pub fn dir(&self) -> Dir {
        if self.rw.contains("read") {
            Dir::Read
        } else {
            Dir::Write
        }
    }

    /// How `tool` describes this job in the report.
    pub fn describe(&self) -> String {
        let depth = if self.ioengine == "psync" {
            String::new()
        } else {
            format!(" iodepth={}", self.iodepth)
        };
        format!(
            "fio {}{depth}{}",
            self.ioengine,
            if self.direct { " direct" } else { "" }
        )
    }

    pub fn args(&self) -> Vec<String> {
        let mut a = vec![
            format!("--name={}", self.name),
            format!("--filename={}", escape_filename(&self.file)),
            format!("--rw={}", self.rw),
            format!("--bs={}", self.bs),
            format!("--size={}", self.size),
            format!("--ioengine={}", self.ioengine),
            format!("--iodepth={}", self.iodepth),
            format!("--direct={}", u8::from(self.direct)),
            format!("--end_fsync={}", u8::from(self.end_fsync)),
            // Jobs as threads of the one fio process: its /proc/PID/io then
            // counts the job's I/O, which is how progress is shown.
            "--thread".into(),
            "--eta=never".into(),
            "--output-format=json".into(),
        ];
        if let Some(r) = self.runtime_s {
            a.push("--time_based=1".into());
            a.push(format!("--runtime={r}"));
        }
        a
    }
}

/// fio splits `--filename` at ':' (several files); a literal one is `\:`.
fn escape_filename(p: &Path) -> String {
    p.to_string_lossy().replace(':', "\\:")
}

/// What one job measured.
#[derive(Clone, Debug, PartialEq)]
pub struct FioResult {
    pub ios: u64,
    pub io_bytes: u64,
    pub bw_bytes: f64,
    pub iops: f64,
    pub runtime_ms: u64,
    pub latency: Option<Latency>,
}

/// Can this fio use libaio? (It lists the engines it was built with.)
pub fn has_libaio(fio: &Path) -> bool {
    Command::new(fio)
        .arg("--enghelp")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == "libaio"))
}

/// Parses fio's JSON output for the first job's `dir` side. fio may print
/// notes before the document, so parsing starts at the first line that
/// opens a JSON object.
pub fn parse_output(text: &str, dir: Dir) -> anyhow::Result<FioResult> {
    let start = text
        .lines()
        .scan(0usize, |off, l| {
            let here = *off;
            *off += l.len() + 1;
            Some((here, l))
        })
        .find(|(_, l)| l.starts_with('{'))
        .map(|(off, _)| off)
        .context("fio printed no JSON")?;
    let doc: Value = serde_json::Deserializer::from_str(&text[start..])
        .into_iter::<Value>()
        .next()
        .context("fio printed no JSON")?
        .context("fio's JSON does not parse")?;
    let job = doc["jobs"].get(0).context("fio's JSON has no job")?;
    if let Some(e) = job["error"].as_u64().filter(|&e| e != 0) {
        anyhow::bail!("fio job failed with error {e}");
    }
    let side = &job[dir.key()];
    let num = |v: &Value| v.as_f64().with_context(|| format!("fio's JSON lacks {}", dir.key()));
    let clat = &side["clat_ns"];
    let pct = |p: &str| clat["percentile"][p].as_f64().map(|ns| ns / 1000.0);
    // fio's percentiles are bucket bounds and can exceed the exact maximum:
    // clamp them, so p99 > max never shows.
    let latency = match (
        pct("50.000000"),
        pct("90.000000"),
        pct("99.000000"),
        clat["max"].as_f64(),
    ) {
        (Some(p50), Some(p90), Some(p99), Some(max)) => {
            let max = max / 1000.0;
            Some(Latency {
                p50: p50.min(max),
                p90: p90.min(max),
                p99: p99.min(max),
                max,
            })
        }
        _ => None,
    };
    Ok(FioResult {
        ios: side["total_ios"].as_u64().unwrap_or(0),
        io_bytes: num(&side["io_bytes"])? as u64,
        bw_bytes: num(&side["bw_bytes"])?,
        iops: num(&side["iops"])?,
        runtime_ms: side["runtime"].as_u64().unwrap_or(0),
        latency,
    })
}

/// Runs one job, showing progress: elapsed time for time-bounded jobs,
/// else the bytes fio's threads have moved so far.
pub fn run(fio: &Path, job: &Job, progress: &PhaseProgress) -> anyhow::Result<FioResult> {
    let mut cmd = Command::new(fio);
    cmd.args(job.args());
    let started = Instant::now();
    let dir = job.dir();
    let out = tool::run_monitored(cmd, |pid| match job.runtime_s {
        Some(_) => progress.set(started.elapsed().as_secs()),
        None => {
            if let Some((r, w)) = tool::proc_io(pid) {
                progress.set(if dir == Dir::Read { r } else { w }.min(job.size));
            }
        }
    })?;
    if !out.status.success() {
        anyhow::bail!("fio {} failed ({}): {}", job.name, out.status, out.last_words());
    }
    parse_output(&out.stdout, dir).with_context(|| format!("fio {}", job.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from a real `fio-3.33 --output-format=json` run (a 1 MiB
    /// sequential write), with a note before the document as fio prints
    /// some.
    const SAMPLE: &str = r#"note: both iodepth >= 1 and synchronous I/O engine are selected, queue depth will be capped at 1
{
  "fio version" : "fio-3.33",
  "timestamp" : 1795569174,
  "jobs" : [
    {
      "jobname" : "seq-write",
      "groupid" : 0,
      "error" : 0,
      "read" : {
        "io_bytes" : 0, "bw_bytes" : 0, "iops" : 0.000000, "runtime" : 0, "total_ios" : 0,
        "clat_ns" : { "min" : 0, "max" : 0, "mean" : 0.000000, "stddev" : 0.000000, "N" : 0 }
      },
      "write" : {
        "io_bytes" : 536870912,
        "io_kbytes" : 524288,
        "bw_bytes" : 349981037,
        "bw" : 341778,
        "iops" : 333.767927,
        "runtime" : 1534,
        "total_ios" : 512,
        "clat_ns" : {
          "min" : 164864, "max" : 2310144, "mean" : 912345.5, "stddev" : 100.0, "N" : 512,
          "percentile" : {
            "1.000000" : 164864, "50.000000" : 191488, "90.000000" : 2310144,
            "99.000000" : 2326528, "99.900000" : 2326528
          }
        }
      }
    }
  ]
}
"#;

    #[test]
    fn parses_write_side() {
        let r = parse_output(SAMPLE, Dir::Write).expect("parse");
        assert_eq!(r.io_bytes, 536_870_912);
        assert_eq!(r.ios, 512);
        assert_eq!(r.runtime_ms, 1534);
        assert!((r.bw_bytes - 349_981_037.0).abs() < 1.0);
        assert!((r.iops - 333.767927).abs() < 1e-6);
        let l = r.latency.expect("latency");
        // p99's bucket bound (2326528 ns) lies above the exact max: clamped.
        assert_eq!((l.p50, l.p90, l.p99, l.max), (191.488, 2310.144, 2310.144, 2310.144));
    }

    #[test]
    fn idle_side_has_no_latency() {
        let r = parse_output(SAMPLE, Dir::Read).expect("parse");
        assert_eq!((r.io_bytes, r.latency), (0, None));
    }

    #[test]
    fn rejects_non_json_and_failed_jobs() {
        assert!(parse_output("fio: no such option\n", Dir::Read).is_err());
        let failed = r#"{"jobs":[{"error":5,"read":{},"write":{}}]}"#;
        let e = parse_output(failed, Dir::Read).unwrap_err();
        assert!(e.to_string().contains("error 5"), "{e}");
    }

    #[test]
    fn command_line() {
        let job = Job {
            name: "rand-read".into(),
            file: PathBuf::from("/mnt/a:b/rand.dat"),
            rw: "randread",
            bs: 4096,
            size: 1 << 20,
            ioengine: "libaio",
            iodepth: 16,
            runtime_s: Some(20),
            end_fsync: false,
            direct: false,
        };
        let a = job.args();
        assert!(a.contains(&"--filename=/mnt/a\\:b/rand.dat".to_string()), "{a:?}");
        assert!(a.contains(&"--runtime=20".to_string()) && a.contains(&"--time_based=1".to_string()));
        assert!(a.contains(&"--output-format=json".to_string()));
        assert_eq!(job.dir(), Dir::Read);
        assert_eq!(job.describe(), "fio libaio iodepth=16");
    }
}
