//! Running an external benchmark tool (fio, iozone) as a child process:
//! finding it on PATH, feeding a progress callback while it runs, and
//! stopping it when the user interrupts the benchmark.

use anyhow::Context;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

/// What a finished tool printed.
pub struct ToolOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl ToolOutput {
    /// The last non-empty stderr line (or stdout's, if stderr is empty): the
    /// one that usually says what went wrong, for a one-line error.
    pub fn last_words(&self) -> String {
        let pick = |s: &str| s.lines().map(str::trim).rfind(|l| !l.is_empty()).map(str::to_string);
        pick(&self.stderr)
            .or_else(|| pick(&self.stdout))
            .unwrap_or_else(|| "no output".into())
    }
}

/// The first executable file called `name` in $PATH.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Bytes read and written through syscalls by `pid` (rchar, wchar of
/// /proc/PID/io). fio runs its jobs as threads (`--thread`), so this is
/// how far its job got: the progress of a phase that fio itself runs.
pub fn proc_io(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    Some((field("rchar:")?, field("wchar:")?))
}

/// Runs `cmd` to completion, calling `tick(pid)` about every 100 ms; kills
/// it and fails if the benchmark is interrupted meanwhile. Its output is
/// drained on separate threads so a chatty tool never blocks on a full pipe.
pub fn run_monitored(mut cmd: Command, mut tick: impl FnMut(u32)) -> anyhow::Result<ToolOutput> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {program}"))?;
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let pid = child.id();
    let status = loop {
        if let Some(status) = child.try_wait().with_context(|| format!("waiting for {program}"))? {
            break status;
        }
        if super::interrupted() {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("interrupted");
        }
        tick(pid);
        std::thread::sleep(Duration::from_millis(100));
    };
    Ok(ToolOutput {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_and_not_nonsense() {
        assert!(find_on_path("sh").is_some());
        assert!(find_on_path("no-such-tool-cairn-bench").is_none());
    }

    #[test]
    fn runs_and_collects_output() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo oops >&2; exit 3"]);
        let mut ticks = 0;
        let o = run_monitored(cmd, |_| ticks += 1).expect("run sh");
        assert_eq!(o.status.code(), Some(3));
        assert_eq!(o.stdout, "out\n");
        assert_eq!(o.last_words(), "oops");
    }

    #[test]
    fn own_io_counters() {
        assert!(proc_io(std::process::id()).is_some());
    }
}
