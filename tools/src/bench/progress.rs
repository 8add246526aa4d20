//! Progress on stderr while phases run: an indicatif bar on a terminal, one
//! plain line per phase start and finish otherwise (logs, CI), nothing with
//! `--quiet`. stdout stays reserved for the report.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Bar,
    Lines,
    Quiet,
}

/// What a phase counts towards its end.
#[derive(Clone, Copy, Debug)]
pub enum Total {
    Items(u64),
    Bytes(u64),
    Seconds(u64),
    /// No measure of progress: a spinner with the elapsed time.
    Unknown,
}

pub struct Progress {
    mode: Mode,
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Lines
        };
        Progress { mode }
    }

    /// Warnings are shown even with `--quiet`: they change what the numbers mean.
    pub fn warn(&self, msg: &str) {
        eprintln!("warning: {msg}");
    }

    /// A remark that is neither progress nor a warning (a skipped phase).
    pub fn note(&self, msg: &str) {
        if self.mode != Mode::Quiet {
            eprintln!("bench: {msg}");
        }
    }

    /// Announces a phase and returns its handle.
    pub fn phase(&self, name: &str, total: Total) -> PhaseProgress {
        let bar = match self.mode {
            Mode::Quiet => None,
            Mode::Lines => {
                eprintln!("bench: {name}: started");
                None
            }
            Mode::Bar => Some(make_bar(name, total)),
        };
        PhaseProgress {
            bar,
            name: name.to_string(),
            lines: self.mode == Mode::Lines,
            started: Instant::now(),
        }
    }
}

fn make_bar(name: &str, total: Total) -> ProgressBar {
    let (len, template) = match total {
        Total::Items(n) => (Some(n), "{prefix:<12} [{bar:30}] {pos}/{len} {elapsed} (eta {eta})"),
        Total::Bytes(n) => (
            Some(n),
            "{prefix:<12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} (eta {eta})",
        ),
        Total::Seconds(n) => (Some(n), "{prefix:<12} [{bar:30}] {pos}/{len} s"),
        Total::Unknown => (None, "{prefix:<12} {spinner} {elapsed}"),
    };
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr())
        .with_style(style)
        .with_prefix(name.to_string());
    // Redraws even while a slow operation (or an external tool) blocks.
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// One phase's progress; cleared if dropped unfinished (on an error).
pub struct PhaseProgress {
    bar: Option<ProgressBar>,
    name: String,
    lines: bool,
    started: Instant,
}

impl PhaseProgress {
    pub fn inc(&self) {
        if let Some(b) = &self.bar {
            b.inc(1);
        }
    }

    pub fn set(&self, pos: u64) {
        if let Some(b) = &self.bar {
            b.set_position(pos);
        }
    }

    /// Ends the phase with a one-line summary (e.g. "4000 ops/s").
    pub fn finish(mut self, summary: &str) {
        let secs = self.started.elapsed().as_secs_f64();
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
            eprintln!("{:<12} done in {secs:.1} s: {summary}", self.name);
        } else if self.lines {
            eprintln!("bench: {}: done in {secs:.1} s: {summary}", self.name);
        }
    }
}

impl Drop for PhaseProgress {
    fn drop(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
