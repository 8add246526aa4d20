//! The small-file workload, in plain Rust against the mounted directory:
//! what distributed file systems are slowest at (every operation is one or
//! more network round trips), timed one operation at a time so latency
//! percentiles can be reported, not just rates.

use super::progress::PhaseProgress;
use anyhow::Context;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The phases, in the order they must run (each needs the previous one's files).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Create,
    Stat,
    LsL,
    Read,
    Rename,
    Delete,
}

impl Op {
    pub const ALL: [Op; 6] = [Op::Create, Op::Stat, Op::LsL, Op::Read, Op::Rename, Op::Delete];

    pub fn name(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Stat => "stat",
            Op::LsL => "ls-l",
            Op::Read => "read",
            Op::Rename => "rename",
            Op::Delete => "delete",
        }
    }

    /// Phases that should find nothing in the page, dentry and inode
    /// caches, so they measure the file system rather than the kernel.
    pub fn wants_cold_cache(self) -> bool {
        matches!(self, Op::Stat | Op::LsL | Op::Read)
    }
}

/// What one phase measured.
pub struct Timings {
    /// Duration of every operation, in nanoseconds.
    pub samples_ns: Vec<u64>,
    pub wall: Duration,
    /// File data written or read.
    pub bytes: u64,
}

/// `files` files of `file_size` bytes spread round-robin over `dirs`
/// subdirectories of `root`.
pub struct SmallFiles {
    root: PathBuf,
    files: u64,
    dirs: u64,
    file_size: usize,
    /// Whether the files currently carry their renamed names.
    renamed: bool,
}

impl SmallFiles {
    /// Creates `root` and its subdirectories (not part of any measurement).
    pub fn setup(root: &Path, files: u64, file_size: u64, dirs: u64) -> anyhow::Result<SmallFiles> {
        for d in 0..dirs {
            let p = root.join(format!("d{d:04}"));
            std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        }
        Ok(SmallFiles {
            root: root.to_path_buf(),
            files,
            dirs,
            file_size: usize::try_from(file_size).context("--file-size is too large")?,
            renamed: false,
        })
    }

    fn dir(&self, d: u64) -> PathBuf {
        self.root.join(format!("d{d:04}"))
    }

    fn path(&self, i: u64, renamed: bool) -> PathBuf {
        let prefix = if renamed { 'r' } else { 'f' };
        self.dir(i % self.dirs).join(format!("{prefix}{i:08}"))
    }

    /// Runs one phase over every file (or directory entry).
    pub fn run(&mut self, op: Op, progress: &PhaseProgress) -> anyhow::Result<Timings> {
        let mut samples = Vec::with_capacity(self.files as usize);
        let mut bytes = 0u64;
        let started = Instant::now();
        if op == Op::LsL {
            self.ls_l(&mut samples, progress)?;
        } else {
            let data = vec![0x5au8; self.file_size];
            // One byte more than a file holds, so a too-long file shows.
            let mut buf = Vec::with_capacity(self.file_size + 1);
            for i in 0..self.files {
                super::check_interrupted()?;
                let p = self.path(i, self.renamed);
                let t = Instant::now();
                match op {
                    Op::Create => {
                        // O_CREAT|O_EXCL: a leftover file is an error, not a silent overwrite.
                        let mut f = std::fs::OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .open(&p)
                            .with_context(|| format!("creating {}", p.display()))?;
                        f.write_all(&data).with_context(|| format!("writing {}", p.display()))?;
                        drop(f); // close() is part of the operation: FUSE flushes there.
                        bytes += data.len() as u64;
                    }
                    Op::Stat => {
                        std::fs::metadata(&p).with_context(|| format!("stat {}", p.display()))?;
                    }
                    Op::Read => {
                        buf.clear();
                        let mut f = std::fs::File::open(&p).with_context(|| format!("opening {}", p.display()))?;
                        f.read_to_end(&mut buf)
                            .with_context(|| format!("reading {}", p.display()))?;
                        drop(f);
                        anyhow::ensure!(
                            buf.len() == self.file_size,
                            "{} holds {} bytes, expected {}",
                            p.display(),
                            buf.len(),
                            self.file_size
                        );
                        bytes += buf.len() as u64;
                    }
                    Op::Rename => {
                        let to = self.path(i, true);
                        std::fs::rename(&p, &to)
                            .with_context(|| format!("renaming {} to {}", p.display(), to.display()))?;
                    }
                    Op::Delete => {
                        std::fs::remove_file(&p).with_context(|| format!("deleting {}", p.display()))?;
                    }
                    Op::LsL => unreachable!("handled above"),
                }
                samples.push(t.elapsed().as_nanos() as u64);
                progress.inc();
            }
        }
        let wall = started.elapsed();
        if op == Op::Rename {
            self.renamed = true;
        }
        Ok(Timings {
            samples_ns: samples,
            wall,
            bytes,
        })
    }

    /// `ls -l` of every directory: each sample is fetching one entry
    /// (readdir, batched by the kernel) plus its lstat, so the cost of the
    /// readdir calls is spread over the entries they return.
    fn ls_l(&self, samples: &mut Vec<u64>, progress: &PhaseProgress) -> anyhow::Result<()> {
        for d in 0..self.dirs {
            let dir = self.dir(d);
            let mut t = Instant::now();
            let entries = std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?;
            // The iterator's next() (a getdents when its batch runs out) falls
            // inside each sample: `t` restarts at the end of the body.
            for e in entries {
                super::check_interrupted()?;
                let e = e.with_context(|| format!("listing {}", dir.display()))?;
                let p = e.path();
                std::fs::symlink_metadata(&p).with_context(|| format!("lstat {}", p.display()))?;
                samples.push(t.elapsed().as_nanos() as u64);
                progress.inc();
                t = Instant::now();
            }
        }
        anyhow::ensure!(
            samples.len() as u64 == self.files,
            "listing found {} entries, expected {}",
            samples.len(),
            self.files
        );
        Ok(())
    }

    /// Removes the (now empty) subdirectories.
    pub fn teardown(self) -> anyhow::Result<()> {
        for d in 0..self.dirs {
            let p = self.dir(d);
            std::fs::remove_dir(&p).with_context(|| format!("removing {}", p.display()))?;
        }
        std::fs::remove_dir(&self.root).with_context(|| format!("removing {}", self.root.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::progress::{Progress, Total};

    #[test]
    fn all_phases_on_a_local_dir() {
        let tmp = std::env::temp_dir().join(format!("cairn-smallfile-test-{}", std::process::id()));
        let root = tmp.join("sf");
        let mut sf = SmallFiles::setup(&root, 30, 100, 4).expect("setup");
        let quiet = Progress::new(true);
        for op in Op::ALL {
            let t = sf
                .run(op, &quiet.phase(op.name(), Total::Items(30)))
                .unwrap_or_else(|e| panic!("{}: {e:#}", op.name()));
            assert_eq!(t.samples_ns.len(), 30, "{}", op.name());
            let want_bytes = if matches!(op, Op::Create | Op::Read) { 3000 } else { 0 };
            assert_eq!(t.bytes, want_bytes, "{}", op.name());
        }
        sf.teardown().expect("teardown");
        assert!(!root.exists());
        std::fs::remove_dir(&tmp).expect("remove tmp");
    }
}
