//! The heal reports, in gluster's layouts: `volume heal VOL info
//! [split-brain|summary]` and `volume heal VOL statistics [heal-count]`.

use cairn_common::proto::{AdminRequest, BrickHealInfo, BrickHealStats, CrawlKind, CrawlRecord};
use std::fmt::Write;

/// gluster's `volume heal VOL info [split-brain]` layout.
pub fn info(req: &AdminRequest, bricks: &[BrickHealInfo]) -> String {
    let split_only = matches!(req, AdminRequest::VolumeHealInfo { split_brain: true, .. });
    let mut s = String::new();
    for b in bricks {
        let _ = writeln!(s, "Brick {}", b.brick);
        match &b.entries {
            None => {
                let _ = writeln!(s, "Status: Transport endpoint is not connected");
                let _ = writeln!(s, "Number of entries: -");
            }
            Some(list) => {
                for e in list {
                    let name = e.path.clone().unwrap_or_else(|| format!("<gfid:{}>", e.gfid));
                    let mark = if e.split_brain && !split_only {
                        " - Is in split-brain"
                    } else {
                        ""
                    };
                    let _ = writeln!(s, "{name}{mark}");
                }
                let _ = writeln!(s, "Status: Connected");
                if split_only {
                    let _ = writeln!(s, "Number of entries in split-brain: {}", list.len());
                } else {
                    let _ = writeln!(s, "Number of entries: {}", list.len());
                }
            }
        }
        s.push('\n');
    }
    s
}

/// `volume heal VOL statistics` (crawl history) or `… heal-count`.
pub fn statistics(req: &AdminRequest, bricks: &[BrickHealStats]) -> String {
    let (name, count_only) = match req {
        AdminRequest::VolumeHealStatistics { name, count_only } => (name.as_str(), *count_only),
        _ => ("", false),
    };
    let mut s = String::new();
    if count_only {
        let _ = writeln!(
            s,
            "Gathering count of entries to be healed on volume {name} has been successful \n"
        );
        for b in bricks {
            let _ = writeln!(s, "Brick {}", b.brick);
            match b.pending {
                Some(n) => {
                    let _ = writeln!(s, "Number of entries: {n}");
                }
                None => {
                    let _ = writeln!(s, "Status: Transport endpoint is not connected");
                    let _ = writeln!(s, "Number of entries: -");
                }
            }
            s.push('\n');
        }
        return s;
    }
    let _ = writeln!(
        s,
        "Gathering crawl statistics on volume {name} has been successful \n------------------------------------------------"
    );
    for (k, b) in bricks.iter().enumerate() {
        let _ = writeln!(s, "\nCrawl statistics for brick no {k}");
        let _ = writeln!(s, "Hostname of brick {}", b.brick.split(':').next().unwrap_or(""));
        if b.pending.is_none() {
            let _ = writeln!(s, "Status: Transport endpoint is not connected");
            continue;
        }
        if b.crawls.is_empty() {
            let _ = writeln!(s, "No crawl yet (the index was empty)");
        }
        for c in &b.crawls {
            let _ = writeln!(s, "\nStarting time of crawl: {}\n", clock(c.started));
            match c.ended {
                Some(t) => {
                    let _ = writeln!(s, "Ending time of crawl: {}\n", clock(t));
                }
                None => {
                    let _ = writeln!(s, "Crawl is in progress\n");
                }
            }
            let kind = match c.kind {
                CrawlKind::Index => "INDEX",
                CrawlKind::Full => "FULL",
            };
            let _ = writeln!(s, "Type of crawl: {kind}");
            let _ = writeln!(s, "No. of entries healed: {}", c.healed);
            let _ = writeln!(s, "No. of entries in split-brain: {}", c.split_brain);
            let _ = writeln!(s, "No. of heal failed entries: {}", c.failed);
            let _ = writeln!(s, "Data healed: {}", mib(c.bytes));
        }
    }
    s
}

/// One brick's line of `heal info summary`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BrickSummary {
    pub brick: String,
    /// `None`: the brick's node did not answer.
    pub total: Option<u64>,
    pub split_brain: u64,
    /// Entries a running crawl has not reached yet.
    pub healing: u64,
    /// Bytes of file data behind the pending entries (at most what heal
    /// copies: it sends only blocks that differ).
    pub pending_bytes: u64,
    /// The running crawl, if any.
    pub crawl: Option<CrawlRecord>,
    /// Seconds a running crawl needs yet, at its pace so far.
    pub eta_seconds: Option<u64>,
}

pub fn summary(info: &[BrickHealInfo], stats: &[BrickHealStats]) -> Vec<BrickSummary> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    info.iter()
        .map(|b| {
            let st = stats.iter().find(|s| s.brick_id == b.brick_id);
            let crawl = st.and_then(|s| s.crawls.last()).filter(|c| c.ended.is_none()).cloned();
            let total = b.entries.as_ref().map(|e| e.len() as u64);
            let split_brain = b.entries.iter().flatten().filter(|e| e.split_brain).count() as u64;
            let eta_seconds = crawl.as_ref().and_then(|c| {
                let done = c.healed + c.split_brain + c.failed;
                let elapsed = (now - c.started).max(1) as u64;
                (done > 0).then(|| c.entries.saturating_sub(done) * elapsed / done)
            });
            // What the running crawl has not reached yet, of what the index
            // still holds (its own heals empty the index ahead of it).
            let not_reached = crawl
                .as_ref()
                .map_or(0, |c| c.entries.saturating_sub(c.healed + c.split_brain + c.failed));
            BrickSummary {
                brick: b.brick.clone(),
                total,
                split_brain,
                healing: not_reached.min(total.unwrap_or(0).saturating_sub(split_brain)),
                pending_bytes: st.map_or(0, |s| s.pending_bytes),
                crawl,
                eta_seconds,
            }
        })
        .collect()
}

/// gluster's `heal info summary` block per brick, with the running
/// crawl's progress under it.
pub fn summary_text(list: &[BrickSummary]) -> String {
    let mut s = String::new();
    for b in list {
        let _ = writeln!(s, "Brick {}", b.brick);
        match b.total {
            None => {
                let _ = writeln!(s, "Status: Transport endpoint is not connected");
                let _ = writeln!(s, "Total Number of entries: -");
            }
            Some(total) => {
                let _ = writeln!(s, "Status: Connected");
                let _ = writeln!(s, "Total Number of entries: {total}");
                let _ = writeln!(
                    s,
                    "Number of entries in heal pending: {}",
                    total.saturating_sub(b.split_brain + b.healing)
                );
                let _ = writeln!(s, "Number of entries in split-brain: {}", b.split_brain);
                let _ = writeln!(s, "Number of entries possibly healing: {}", b.healing);
                if b.pending_bytes > 0 {
                    let _ = writeln!(s, "Data to check: {}", mib(b.pending_bytes));
                }
                if let Some(c) = &b.crawl {
                    let done = c.healed + c.split_brain + c.failed;
                    let _ = writeln!(
                        s,
                        "Heal in progress: {done} of {} entries, {} copied{}",
                        c.entries,
                        mib(c.bytes),
                        b.eta_seconds.map_or(String::new(), |t| format!(", about {t} s left"))
                    );
                }
            }
        }
        s.push('\n');
    }
    s
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Unix seconds as `Wed Nov 25 05:41:00 2026` (UTC), gluster's ctime form.
fn clock(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} {year}",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        day,
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_gluster_ctime_in_utc() {
        assert_eq!(clock(0), "Thu Jan  1 00:00:00 1970");
        assert_eq!(clock(1_795_585_260), "Wed Nov 25 05:41:00 2026");
        assert_eq!(clock(951_782_400), "Tue Feb 29 00:00:00 2000");
    }
}
