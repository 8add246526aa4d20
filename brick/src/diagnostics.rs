//! `volume profile` and `volume top`: reports drawn from the bricks' I/O
//! statistics, and the brick throughput tests of `top read-perf|write-perf`.

use crate::node::Node;
use crate::stats::Window;
use anyhow::{bail, Context};
use cairn_common::proto::{AdminReply, BrickProfile, BrickTop, FopProfile, ProfileAction, ProfileWindow, VolumeSpec};
use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

const PROFILE_KEYS: [&str; 2] = ["diagnostics.latency-measurement", "diagnostics.count-fop-hits"];

fn window(w: &Window) -> ProfileWindow {
    let mut fops: Vec<FopProfile> = w
        .fops
        .iter()
        .map(|(op, f)| FopProfile {
            op: op.to_uppercase(),
            calls: f.calls,
            errors: f.errors,
            avg_ns: (f.total.as_nanos() / u128::from(f.calls.max(1))) as u64,
            min_ns: f.min.map_or(0, |m| m.as_nanos() as u64),
            max_ns: f.max.as_nanos() as u64,
            total_ns: f.total.as_nanos() as u64,
        })
        .collect();
    // gluster lists the costliest last.
    fops.sort_by_key(|f| f.total_ns);
    ProfileWindow {
        duration_s: w.started.elapsed().as_secs(),
        fops,
        reads: w.reads.to_vec(),
        writes: w.writes.to_vec(),
        bytes_read: w.bytes_read,
        bytes_written: w.bytes_written,
    }
}

/// Is `volume profile VOL start` in effect?
pub fn profiling(spec: &VolumeSpec) -> bool {
    PROFILE_KEYS
        .iter()
        .all(|k| spec.options.get(*k).map(String::as_str) == Some("on"))
}

impl Node {
    pub(crate) fn volume_profile(&self, name: &str, action: ProfileAction) -> anyhow::Result<AdminReply> {
        let spec = self.volume_spec(name)?;
        let on = profiling(&spec);
        match action {
            ProfileAction::Start => {
                if on {
                    bail!("Profile on Volume {name} is already started");
                }
                // Each node resets its bricks' counters as the change
                // applies there (Node::reconcile).
                self.set_options(name, &PROFILE_KEYS.map(|k| (k, Some("on"))))?;
                Ok(AdminReply::Done {
                    message: format!("Starting volume profile on {name} has been successful "),
                })
            }
            ProfileAction::Stop => {
                if !on {
                    bail!("Profile on Volume {name} is not started");
                }
                self.set_options(name, &PROFILE_KEYS.map(|k| (k, None)))?;
                Ok(AdminReply::Done {
                    message: format!("Stopping volume profile on {name} has been successful "),
                })
            }
            ProfileAction::Info => {
                if !on {
                    bail!("Profile on Volume {name} is not started");
                }
                let mut out = Vec::new();
                for b in spec.bricks.iter().filter(|b| self.is_local_brick(b)) {
                    let (cumulative, n, interval) = self.stats.brick(b.id).profile();
                    out.push(BrickProfile {
                        brick: b.label(),
                        cumulative: window(&cumulative),
                        interval_number: n,
                        interval: window(&interval),
                    });
                }
                Ok(AdminReply::Profile(out))
            }
        }
    }

    pub(crate) fn volume_top(
        &self,
        name: &str,
        metric: &str,
        brick: Option<&str>,
        count: u32,
        block_size: u64,
        blocks: u64,
    ) -> anyhow::Result<AdminReply> {
        let spec = self.volume_spec(name)?;
        let wanted = match brick {
            Some(b) => Some(cairn_common::addr::BrickAddr::parse(b)?),
            None => None,
        };
        let mut out = Vec::new();
        for b in spec.bricks.iter().filter(|b| self.is_local_brick(b)) {
            if let Some(w) = &wanted {
                if !cairn_common::addr::same_node(&w.node, &b.node) || w.path != b.path {
                    continue;
                }
            }
            let mut top = BrickTop {
                brick: b.label(),
                entries: Vec::new(),
                throughput_mbps: None,
                seconds: None,
            };
            match metric {
                "read-perf" | "write-perf" => {
                    let (mbps, secs) = perf_test(Path::new(&b.path), metric == "write-perf", block_size, blocks)
                        .with_context(|| format!("{metric} on {}", b.label()))?;
                    top.throughput_mbps = Some(mbps);
                    top.seconds = Some(secs);
                }
                _ => {
                    let mut counts: Vec<(u64, cairn_common::Gfid)> = self
                        .stats
                        .brick(b.id)
                        .files()
                        .into_iter()
                        .map(|(g, c)| {
                            let n = match metric {
                                "open" => c.opens,
                                "read" => c.reads,
                                "write" => c.writes,
                                "opendir" => c.opendirs,
                                _ => c.readdirs,
                            };
                            (n, g)
                        })
                        .filter(|(n, _)| *n > 0)
                        .collect();
                    counts.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
                    counts.truncate(count as usize);
                    // Paths are looked up now, so renames since show.
                    let served = self.brick(&b.id);
                    let entries = counts
                        .into_iter()
                        .map(|(n, g)| {
                            let path = served.as_ref().and_then(|brick| brick.path_of(&g));
                            (n, path.unwrap_or_else(|| format!("<gfid:{g}>")))
                        })
                        .collect();
                    top.entries = entries;
                }
            }
            out.push(top);
        }
        if wanted.is_some() && out.is_empty() {
            bail!(
                "brick {} is not a brick of volume {name} on this node",
                brick.unwrap_or("")
            );
        }
        Ok(AdminReply::Top(out))
    }
}

/// A dd-style throughput test on the brick's file system, in its private
/// directory: `blocks` writes of `block_size` bytes then fsync, or a read of
/// such a file after dropping it from the page cache.
fn perf_test(brick: &Path, write: bool, block_size: u64, blocks: u64) -> anyhow::Result<(f64, f64)> {
    if block_size == 0 || blocks == 0 || block_size > (64 << 20) || block_size.saturating_mul(blocks) > (4 << 30) {
        bail!("bs must be 1 B-64 MiB and bs x count at most 4 GiB");
    }
    let path = brick.join(".cairn").join(format!("perf-test.{}", std::process::id()));
    let buf = vec![0x5au8; block_size as usize];
    let result = (|| -> anyhow::Result<(f64, f64)> {
        let started = Instant::now();
        let mut f = std::fs::File::create(&path)?;
        for _ in 0..blocks {
            f.write_all(&buf)?;
        }
        f.sync_all()?;
        let mut elapsed = started.elapsed();
        if !write {
            // SAFETY: plain advisory call on an open fd.
            unsafe { libc::posix_fadvise(std::os::fd::AsRawFd::as_raw_fd(&f), 0, 0, libc::POSIX_FADV_DONTNEED) };
            let started = Instant::now();
            let mut r = std::fs::File::open(&path)?;
            let mut rb = vec![0u8; block_size as usize];
            for _ in 0..blocks {
                r.read_exact(&mut rb)?;
            }
            elapsed = started.elapsed();
        }
        let secs = elapsed.as_secs_f64().max(1e-9);
        Ok(((block_size * blocks) as f64 / secs / 1e6, secs))
    })();
    let _ = std::fs::remove_file(&path);
    result
}
