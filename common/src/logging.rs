//! One tracing set-up for every binary: `RUST_LOG` filters; output to stderr
//! or to a log file that can be reopened (SIGHUP after logrotate moved it).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tracing_subscriber::EnvFilter;

fn filter(default_level: &str) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level))
}

/// Logs to stderr.
pub fn init(default_level: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter(default_level))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(true)
        .try_init();
}

/// A log file shared by every tracing writer, swapped for a fresh open of
/// the same path by [`LogFile::reopen`].
#[derive(Clone)]
pub struct LogFile {
    path: PathBuf,
    file: Arc<Mutex<File>>,
}

fn open_append(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new().create(true).append(true).open(path)
}

impl LogFile {
    /// Reopens the path (a rotated file keeps its old name's data; new
    /// records go to the new file).
    pub fn reopen(&self) -> std::io::Result<()> {
        let fresh = open_append(&self.path)?;
        *self.file.lock().expect("log file poisoned") = fresh;
        Ok(())
    }
}

/// One write of a record; holding the lock per record keeps lines whole.
pub struct LogWriter(Arc<Mutex<File>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log file poisoned").write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().expect("log file poisoned").flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogFile {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> LogWriter {
        LogWriter(self.file.clone())
    }
}

/// Logs to `path` (created with its directory, appended to).
pub fn init_file(default_level: &str, path: &Path) -> std::io::Result<LogFile> {
    let log = LogFile {
        path: path.to_path_buf(),
        file: Arc::new(Mutex::new(open_append(path)?)),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter(default_level))
        .with_writer(log.clone())
        .with_ansi(false)
        .with_target(true)
        .try_init();
    Ok(log)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopen_follows_a_rotated_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/d.log");
        let log = LogFile {
            path: path.clone(),
            file: Arc::new(Mutex::new(open_append(&path).unwrap())),
        };
        LogWriter(log.file.clone()).write_all(b"before\n").unwrap();
        std::fs::rename(&path, dir.path().join("d.log.1")).unwrap();
        log.reopen().unwrap();
        LogWriter(log.file.clone()).write_all(b"after\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n");
        assert_eq!(std::fs::read_to_string(dir.path().join("d.log.1")).unwrap(), "before\n");
    }
}
