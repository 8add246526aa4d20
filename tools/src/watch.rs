//! Watching a long-running task: `volume rebalance VOL status --watch`,
//! `volume remove-brick VOL BRICK... status --watch` and `volume heal VOL
//! info summary --watch`.
//!
//! On a terminal the refreshes are one indicatif progress bar (on stderr)
//! and the final report prints once at the end. Anywhere else (a pipe, a
//! log, `--json`) every refresh prints the whole gluster-style report
//! followed by a refresh line, so scripts reading the text see exactly what
//! the one-shot command prints.

use super::heal_report::BrickSummary;
use cairn_common::proto::{RebalanceStatus, TaskState};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// How often a watch asks again.
pub const REFRESH: Duration = Duration::from_secs(2);

/// One refresh's progress, as a bar shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Units done of `total`.
    pub done: u64,
    /// `None`: no measure of the end yet (a spinner instead of a bar).
    pub total: Option<u64>,
    pub message: String,
}

/// Where a watch's refreshes go.
pub struct Watch {
    bar: Option<ProgressBar>,
    /// `--json`: each refresh is one JSON document, nothing between them.
    json: bool,
}

impl Watch {
    /// A bar only when a person is looking: text output, and both stdout
    /// (the report) and stderr (the bar) on a terminal.
    pub fn new(json: bool, what: &str) -> Watch {
        let terminal = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
        let bar = (!json && terminal).then(|| make_bar(what));
        Watch { bar, json }
    }

    /// Shows one refresh of a task that is still running: the bar moves,
    /// or (no terminal) the full report and a refresh line print.
    pub fn refresh(&self, progress: &Progress, report: &str, footer: &str) {
        match &self.bar {
            Some(bar) => show(bar, progress),
            None if self.json => print!("{report}"),
            None => {
                print!("{report}");
                println!(
                    "-- {footer}; refreshing every {} s (Ctrl-C stops) --\n",
                    REFRESH.as_secs()
                );
            }
        }
    }
}

impl Drop for Watch {
    /// The final report prints after the watch: the bar must be gone.
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

fn make_bar(what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_prefix(what.to_string());
    bar.set_style(spinner_style());
    // Redraws (the spinner, the elapsed time) between the 2 s refreshes.
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix} {spinner} {elapsed} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix} [{bar:30}] {percent:>3}% {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

fn show(bar: &ProgressBar, progress: &Progress) {
    match progress.total {
        Some(total) => {
            if bar.length() != Some(total) {
                bar.set_style(bar_style());
                bar.set_length(total);
            }
            bar.set_position(progress.done.min(total));
        }
        None => {
            if bar.length().is_some() {
                bar.set_style(spinner_style());
                bar.unset_length();
            }
        }
    }
    bar.set_message(progress.message.clone());
}

/// A rebalance or remove-brick in progress, measured in run time: the
/// longest-running node's seconds so far, out of those plus the largest
/// estimate of time left (no bar before any node can estimate).
pub fn rebalance_progress(st: &RebalanceStatus) -> Progress {
    let sum = |f: fn(&cairn_common::proto::NodeRebalance) -> u64| st.nodes.iter().map(f).sum::<u64>();
    let running: Vec<_> = st.nodes.iter().filter(|n| n.state == TaskState::InProgress).collect();
    let elapsed = running.iter().map(|n| n.run_time_s).max().unwrap_or(0);
    let left = running.iter().filter_map(|n| n.estimate_s).max();
    let mut message = format!(
        "{} files moved ({}), {} scanned, {} failures; {} of {} nodes finished",
        sum(|n| n.files),
        super::rebalance::human_size(sum(|n| n.bytes)),
        sum(|n| n.scanned),
        sum(|n| n.failures),
        st.nodes.len() - running.len(),
        st.nodes.len()
    );
    if let Some(left) = left {
        message.push_str(&format!(", about {left} s left"));
    }
    Progress {
        done: elapsed,
        total: left.map(|l| elapsed + l),
        message,
    }
}

/// Entries a heal can still work on: every brick's pending entries except
/// those in split-brain (which wait for `heal VOL split-brain …`).
pub fn healable(summary: &[BrickSummary]) -> u64 {
    summary
        .iter()
        .map(|b| b.total.unwrap_or(0).saturating_sub(b.split_brain))
        .sum()
}

/// A heal in progress, measured in entries: of the most ever seen pending
/// during this watch (`most`), how many are gone.
pub fn heal_progress(summary: &[BrickSummary], most: u64) -> Progress {
    let left = healable(summary);
    let split_brain: u64 = summary.iter().map(|b| b.split_brain).sum();
    let copied: u64 = summary.iter().filter_map(|b| b.crawl.as_ref()).map(|c| c.bytes).sum();
    let unreachable = summary.iter().filter(|b| b.total.is_none()).count();
    let mut message = format!(
        "{left} entries left, {split_brain} in split-brain, {:.1} MiB copied",
        copied as f64 / (1 << 20) as f64
    );
    if let Some(eta) = summary.iter().filter_map(|b| b.eta_seconds).max() {
        message.push_str(&format!(", about {eta} s left"));
    }
    if unreachable > 0 {
        message.push_str(&format!(", {unreachable} bricks not connected"));
    }
    Progress {
        done: most.saturating_sub(left),
        total: Some(most.max(left)),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_common::proto::{CrawlKind, CrawlRecord, NodeRebalance};

    fn node(state: TaskState, run_time_s: u64, estimate_s: Option<u64>) -> NodeRebalance {
        NodeRebalance {
            node: "127.0.0.2:24007".into(),
            files: 10,
            bytes: 3 << 20,
            scanned: 40,
            failures: 1,
            skipped: 0,
            fixed_dirs: 0,
            state,
            run_time_s,
            estimate_s,
            reachable: true,
        }
    }

    fn status(nodes: Vec<NodeRebalance>) -> RebalanceStatus {
        RebalanceStatus {
            volume: "gv0".into(),
            task: None,
            nodes,
        }
    }

    #[test]
    fn rebalance_bar_runs_on_time_with_the_slowest_estimate() {
        let st = status(vec![
            node(TaskState::InProgress, 30, Some(90)),
            node(TaskState::InProgress, 20, Some(10)),
            node(TaskState::Completed, 50, None),
        ]);
        let p = rebalance_progress(&st);
        assert_eq!((p.done, p.total), (30, Some(120)));
        assert_eq!(
            p.message,
            "30 files moved (9.0MB), 120 scanned, 3 failures; 1 of 3 nodes finished, about 90 s left"
        );
    }

    #[test]
    fn rebalance_without_estimates_is_a_spinner() {
        let p = rebalance_progress(&status(vec![node(TaskState::InProgress, 5, None)]));
        assert_eq!(p.total, None);
        assert!(p.message.ends_with("0 of 1 nodes finished"), "{}", p.message);
    }

    fn brick(total: Option<u64>, split_brain: u64, crawl_bytes: Option<u64>) -> BrickSummary {
        BrickSummary {
            brick: "127.0.0.2:/b0".into(),
            total,
            split_brain,
            healing: 0,
            pending_bytes: 0,
            crawl: crawl_bytes.map(|bytes| CrawlRecord {
                kind: CrawlKind::Index,
                started: 0,
                ended: None,
                entries: 10,
                healed: 5,
                split_brain: 0,
                failed: 0,
                bytes,
            }),
            eta_seconds: crawl_bytes.map(|_| 7),
        }
    }

    #[test]
    fn heal_bar_counts_entries_gone_since_the_most_seen() {
        let summary = [brick(Some(6), 2, Some(1 << 20)), brick(None, 0, None)];
        assert_eq!(healable(&summary), 4);
        let p = heal_progress(&summary, 10);
        assert_eq!((p.done, p.total), (6, Some(10)));
        assert_eq!(
            p.message,
            "4 entries left, 2 in split-brain, 1.0 MiB copied, about 7 s left, 1 bricks not connected"
        );
    }

    #[test]
    fn split_brain_entries_alone_leave_nothing_to_heal() {
        let summary = [brick(Some(3), 3, None)];
        assert_eq!(healable(&summary), 0);
        let p = heal_progress(&summary, 8);
        assert_eq!((p.done, p.total), (8, Some(8)));
    }
}
