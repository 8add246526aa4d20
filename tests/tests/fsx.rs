//! A randomized file-operation checker in the spirit of xfstests' fsx: random
//! writes, reads, truncates, fallocates, mmap I/O and copy_file_range on one
//! file through the mount, each mirrored on an in-memory model; after every
//! operation the size is checked, and periodically the whole content.
//!
//! `FSX_SEED` fixes the seed (printed on every run and in every failure),
//! `FSX_OPS` the number of operations.

use cairn_tests::{read_file, Cluster};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

const PAGE: u64 = 4096;
const HISTORY: usize = 20;

#[derive(Clone, Copy)]
struct Limits {
    /// Largest file the run grows.
    max_size: u64,
    /// Largest single transfer.
    max_len: u64,
    /// How far past EOF writes may start (making holes).
    max_gap: u64,
    /// Full-content comparison every this many operations.
    check_every: usize,
}

struct Fsx {
    seed: u64,
    /// The FSX_SEED value that reproduces this run.
    rerun_seed: u64,
    rng: StdRng,
    limits: Limits,
    path: PathBuf,
    file: File,
    model: Vec<u8>,
    /// A second, fixed file to copy from.
    src: File,
    src_model: Vec<u8>,
    op: usize,
    history: VecDeque<String>,
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn first_difference(got: &[u8], want: &[u8]) -> Option<usize> {
    got.iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .or_else(|| (got.len() != want.len()).then(|| got.len().min(want.len())))
}

impl Fsx {
    fn new(c: &Cluster, name: &str, seed: u64, rerun_seed: u64, limits: Limits) -> Fsx {
        let mut rng = StdRng::seed_from_u64(seed);
        let path = c.p(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .expect("create the fsx file");
        let mut src_model = vec![0u8; 1 << 20];
        rng.fill(&mut src_model[..]);
        let src_path = c.p(format!("{name}.src"));
        std::fs::write(&src_path, &src_model).expect("write the copy source");
        let src = File::open(&src_path).expect("open the copy source");
        Fsx {
            seed,
            rerun_seed,
            rng,
            limits,
            path,
            file,
            model: Vec::new(),
            src,
            src_model,
            op: 0,
            history: VecDeque::new(),
        }
    }

    fn log(&mut self, what: String) {
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(format!("#{} {what}", self.op));
    }

    fn fail(&self, msg: String) -> ! {
        let hist: Vec<&str> = self.history.iter().map(String::as_str).collect();
        panic!(
            "fsx failure (seed {}, op {}): {msg}\nlast {} operations:\n  {}\nrerun with FSX_SEED={}",
            self.seed,
            self.op,
            hist.len(),
            hist.join("\n  "),
            self.rerun_seed
        );
    }

    fn size(&self) -> u64 {
        self.model.len() as u64
    }

    fn check_io<T>(&self, r: std::io::Result<T>, what: &str) -> T {
        r.unwrap_or_else(|e| self.fail(format!("{what}: {e}")))
    }

    fn check_ret(&self, ret: i64, what: &str) {
        if ret < 0 {
            self.fail(format!("{what}: {}", std::io::Error::last_os_error()));
        }
    }

    /// An offset for a new range: mostly inside the file, sometimes past EOF,
    /// often page-aligned or just off a page boundary.
    fn offset(&mut self, allow_past_eof: bool) -> u64 {
        let limit = if allow_past_eof {
            (self.size() + self.limits.max_gap).min(self.limits.max_size)
        } else {
            self.size()
        };
        if limit == 0 {
            return 0;
        }
        let off = self.rng.random_range(0..limit);
        match self.rng.random_range(0..4) {
            0 => off & !(PAGE - 1),
            1 => (off | (PAGE - 1)).min(limit - 1),
            _ => off,
        }
    }

    fn length(&mut self, max: u64) -> u64 {
        let max = max.min(self.limits.max_len).max(1);
        match self.rng.random_range(0..5) {
            0 => self.rng.random_range(1..=max.min(16)),
            1 => PAGE.min(max),
            _ => self.rng.random_range(1..=max),
        }
    }

    fn read_all(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.model.len()];
        let mut done = 0;
        while done < out.len() {
            let n = self.check_io(
                self.file.read_at(&mut out[done..], done as u64),
                "read of the whole file",
            );
            if n == 0 {
                break;
            }
            done += n;
        }
        out.truncate(done);
        out
    }

    fn compare(&self, got: &[u8], base: u64, what: &str) {
        let start = (base as usize).min(self.model.len());
        let want = &self.model[start..(start + got.len()).min(self.model.len())];
        if let Some(i) = first_difference(got, want) {
            self.fail(format!(
                "{what}: first difference at file offset {} (got {} bytes, expected {}); got {:02x?}, expected {:02x?}",
                base + i as u64,
                got.len(),
                want.len(),
                &got[i..(i + 16).min(got.len())],
                &want[i.min(want.len())..(i + 16).min(want.len())]
            ));
        }
    }

    fn check_size(&self) {
        let m = self.check_io(self.file.metadata(), "fstat");
        if m.len() != self.size() {
            self.fail(format!("fstat size {} but the model says {}", m.len(), self.size()));
        }
    }

    fn full_check(&self, what: &str) {
        let all = self.read_all();
        if all.len() != self.model.len() {
            self.fail(format!(
                "{what}: read {} bytes of a {}-byte file",
                all.len(),
                self.model.len()
            ));
        }
        self.compare(&all, 0, what);
    }

    fn step(&mut self) {
        let roll = self.rng.random_range(0..100);
        match roll {
            0..=24 => self.write(),
            25..=44 => self.read(),
            45..=51 => self.truncate(),
            52..=56 => self.punch_hole(),
            57..=62 => self.zero_range(),
            63..=65 => self.allocate(),
            66..=71 => self.mmap_read(),
            72..=77 => self.mmap_write(),
            78..=83 => self.copy_within(),
            84..=88 => self.copy_from_other(),
            89..=93 => self.fsync(),
            94..=95 => self.reopen(),
            _ => self.read(),
        }
        self.check_size();
    }

    fn write(&mut self) {
        let off = self.offset(true);
        let len = self.length(self.limits.max_size - off);
        let mut data = vec![0u8; len as usize];
        self.rng.fill(&mut data[..]);
        self.log(format!("write {off}+{len} (size {})", self.size()));
        self.check_io(self.file.write_all_at(&data, off), "pwrite");
        let end = (off + len) as usize;
        if end > self.model.len() {
            self.model.resize(end, 0);
        }
        self.model[off as usize..end].copy_from_slice(&data);
    }

    fn read(&mut self) {
        let off = self.offset(true);
        let len = self.length(self.limits.max_len);
        self.log(format!("read {off}+{len} (size {})", self.size()));
        let mut buf = vec![0u8; len as usize];
        let mut done = 0;
        while done < buf.len() {
            let n = self.check_io(self.file.read_at(&mut buf[done..], off + done as u64), "pread");
            if n == 0 {
                break;
            }
            done += n;
        }
        buf.truncate(done);
        let expect_len = self.size().saturating_sub(off).min(len) as usize;
        if done != expect_len {
            self.fail(format!(
                "pread {off}+{len} returned {done} bytes, expected {expect_len}"
            ));
        }
        self.compare(&buf, off, "pread");
    }

    fn truncate(&mut self) {
        let size = match self.rng.random_range(0..4) {
            0 => 0,
            1 => self.size() / 2,
            _ => self.rng.random_range(0..=self.limits.max_size),
        };
        self.log(format!("ftruncate {size} (size {})", self.size()));
        self.check_io(self.file.set_len(size), "ftruncate");
        self.model.resize(size as usize, 0);
    }

    fn fallocate(&self, mode: i32, off: u64, len: u64, what: &str) {
        // SAFETY: plain syscall on our fd.
        let r = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, off as i64, len as i64) };
        self.check_ret(r.into(), what);
    }

    fn punch_hole(&mut self) {
        if self.size() == 0 {
            return self.write();
        }
        let off = self.offset(false);
        let len = self.length(self.size() - off + PAGE);
        self.log(format!("punch_hole {off}+{len} (size {})", self.size()));
        self.fallocate(
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off,
            len,
            "fallocate PUNCH_HOLE|KEEP_SIZE",
        );
        let end = ((off + len) as usize).min(self.model.len());
        self.model[off as usize..end].fill(0);
    }

    fn zero_range(&mut self) {
        let off = self.offset(true);
        let len = self.length(self.limits.max_size - off);
        let keep = self.rng.random_bool(0.5);
        self.log(format!(
            "zero_range {off}+{len}{} (size {})",
            if keep { " KEEP_SIZE" } else { "" },
            self.size()
        ));
        let mode = libc::FALLOC_FL_ZERO_RANGE | if keep { libc::FALLOC_FL_KEEP_SIZE } else { 0 };
        self.fallocate(mode, off, len, "fallocate ZERO_RANGE");
        let end = (off + len) as usize;
        if !keep && end > self.model.len() {
            self.model.resize(end, 0);
        }
        let end = end.min(self.model.len());
        if (off as usize) < end {
            self.model[off as usize..end].fill(0);
        }
    }

    fn allocate(&mut self) {
        let off = self.offset(true);
        let len = self.length(self.limits.max_size - off);
        let keep = self.rng.random_bool(0.5);
        self.log(format!(
            "fallocate {off}+{len}{} (size {})",
            if keep { " KEEP_SIZE" } else { "" },
            self.size()
        ));
        let mode = if keep { libc::FALLOC_FL_KEEP_SIZE } else { 0 };
        self.fallocate(mode, off, len, "fallocate");
        let end = (off + len) as usize;
        if !keep && end > self.model.len() {
            self.model.resize(end, 0);
        }
    }

    /// Maps `[off, off+len)` (inside the file) and returns the mapping, the
    /// mapped length and the offset of `off` inside it.
    fn map(&self, off: u64, len: u64, prot: i32) -> (*mut libc::c_void, usize, usize) {
        let base = off & !(PAGE - 1);
        let map_len = (off + len - base) as usize;
        // SAFETY: a fresh shared mapping of our fd; unmapped by the caller.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                prot,
                libc::MAP_SHARED,
                self.file.as_raw_fd(),
                base as i64,
            )
        };
        if p == libc::MAP_FAILED {
            self.fail(format!("mmap {base}+{map_len}: {}", std::io::Error::last_os_error()));
        }
        (p, map_len, (off - base) as usize)
    }

    fn mmap_read(&mut self) {
        if self.size() == 0 {
            return self.write();
        }
        let off = self.offset(false);
        let len = self.length(self.size() - off);
        self.log(format!("mmap_read {off}+{len} (size {})", self.size()));
        let (p, map_len, skip) = self.map(off, len, libc::PROT_READ);
        // SAFETY: the mapping covers skip..skip+len, all inside the file.
        let got = unsafe { std::slice::from_raw_parts((p as *const u8).add(skip), len as usize) }.to_vec();
        // SAFETY: unmapping what we mapped.
        unsafe { libc::munmap(p, map_len) };
        self.compare(&got, off, "mmap read");
    }

    fn mmap_write(&mut self) {
        if self.size() == 0 {
            return self.write();
        }
        let off = self.offset(false);
        let len = self.length(self.size() - off);
        let mut data = vec![0u8; len as usize];
        self.rng.fill(&mut data[..]);
        self.log(format!("mmap_write {off}+{len} (size {})", self.size()));
        let (p, map_len, skip) = self.map(off, len, libc::PROT_READ | libc::PROT_WRITE);
        // SAFETY: the mapping covers skip..skip+len, all inside the file.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), (p as *mut u8).add(skip), data.len());
        }
        // SAFETY: syncing and unmapping what we mapped.
        let r = unsafe { libc::msync(p, map_len, libc::MS_SYNC) };
        // SAFETY: as above.
        unsafe { libc::munmap(p, map_len) };
        self.check_ret(r.into(), "msync");
        self.model[off as usize..(off + len) as usize].copy_from_slice(&data);
    }

    /// copy_file_range until `len` bytes are copied or the source ends;
    /// returns the bytes copied.
    fn copy_range(&self, from: &File, mut src: u64, to_off: u64, len: u64) -> u64 {
        let mut dst = to_off;
        let mut done = 0;
        while done < len {
            let mut s = src as i64;
            let mut d = dst as i64;
            // SAFETY: valid fds and offsets.
            let n = unsafe {
                libc::copy_file_range(
                    from.as_raw_fd(),
                    &mut s,
                    self.file.as_raw_fd(),
                    &mut d,
                    (len - done) as usize,
                    0,
                )
            };
            self.check_ret(n as i64, "copy_file_range");
            if n == 0 {
                break;
            }
            if s as u64 != src + n as u64 || d as u64 != dst + n as u64 {
                self.fail(format!(
                    "copy_file_range returned {n} but moved the offsets by {} and {}",
                    s as u64 - src,
                    d as u64 - dst
                ));
            }
            src += n as u64;
            dst += n as u64;
            done += n as u64;
        }
        done
    }

    fn apply_copy(&mut self, data: &[u8], dst: u64) {
        let end = dst as usize + data.len();
        if end > self.model.len() {
            self.model.resize(end, 0);
        }
        self.model[dst as usize..end].copy_from_slice(data);
    }

    fn copy_within(&mut self) {
        if self.size() == 0 {
            return self.write();
        }
        let src = self.offset(false);
        let len = self.length(self.size() - src);
        let mut dst = self.offset(true);
        // Same-file ranges must not overlap.
        if dst < src + len && src < dst + len {
            dst = src + len + self.rng.random_range(0..PAGE);
        }
        if dst + len > self.limits.max_size {
            return self.read();
        }
        self.log(format!(
            "copy_file_range self {src}+{len} -> {dst} (size {})",
            self.size()
        ));
        let file = self.check_io(self.file.try_clone(), "dup");
        let n = self.copy_range(&file, src, dst, len);
        let expect = self.size().saturating_sub(src).min(len);
        if n != expect {
            self.fail(format!("copy_file_range copied {n} bytes, expected {expect}"));
        }
        let data = self.model[src as usize..(src + n) as usize].to_vec();
        self.apply_copy(&data, dst);
    }

    fn copy_from_other(&mut self) {
        let src_len = self.src_model.len() as u64;
        let src = self.rng.random_range(0..src_len);
        let len = self.length(src_len - src);
        let dst = self.offset(true);
        if dst + len > self.limits.max_size {
            return self.read();
        }
        self.log(format!(
            "copy_file_range other {src}+{len} -> {dst} (size {})",
            self.size()
        ));
        let from = self.check_io(self.src.try_clone(), "dup");
        let n = self.copy_range(&from, src, dst, len);
        if n != len {
            self.fail(format!("copy_file_range copied {n} bytes, expected {len}"));
        }
        let data = self.src_model[src as usize..(src + len) as usize].to_vec();
        self.apply_copy(&data, dst);
    }

    fn fsync(&mut self) {
        if self.rng.random_bool(0.5) {
            self.log("fsync".into());
            self.check_io(self.file.sync_all(), "fsync");
        } else {
            self.log("fdatasync".into());
            self.check_io(self.file.sync_data(), "fdatasync");
        }
    }

    fn reopen(&mut self) {
        self.log("close+reopen".into());
        let f = OpenOptions::new().read(true).write(true).open(&self.path);
        self.file = self.check_io(f, "reopen");
    }

    fn run(&mut self, ops: usize) {
        for i in 0..ops {
            self.op = i;
            self.step();
            if (i + 1) % self.limits.check_every == 0 {
                self.full_check("periodic full comparison");
            }
        }
        self.op = ops;
        self.log("final check".into());
        self.check_io(self.file.sync_all(), "final fsync");
        self.full_check("final full comparison");
    }
}

fn seed_and_ops(default_ops: usize, salt: u64) -> (u64, usize) {
    let seed = env_u64("FSX_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos() as u64
    }) ^ salt;
    let ops = env_u64("FSX_OPS").map_or(default_ops, |n| n as usize);
    (seed, ops)
}

fn run_fsx(name: &str, salt: u64, default_ops: usize, limits: Limits) {
    let (seed, ops) = seed_and_ops(default_ops, salt);
    eprintln!("fsx {name}: seed {seed} (FSX_SEED={}), {ops} operations", seed ^ salt);
    let c = Cluster::new();
    let mut fsx = Fsx::new(&c, name, seed, seed ^ salt, limits);
    fsx.run(ops);
    // What the brick stores is exactly the model.
    let on_brick = read_file(&c.b(name));
    if let Some(i) = first_difference(&on_brick, &fsx.model) {
        fsx.fail(format!(
            "the brick's copy differs at offset {i} (brick {} bytes, model {})",
            on_brick.len(),
            fsx.model.len()
        ));
    }
}

#[test]
fn fsx_random_operations() {
    run_fsx(
        "fsx-big",
        0,
        3000,
        Limits {
            max_size: 4 << 20,
            max_len: 256 << 10,
            max_gap: 512 << 10,
            check_every: 100,
        },
    );
}

#[test]
fn fsx_small_file_page_boundaries() {
    run_fsx(
        "fsx-small",
        0x5eed,
        2000,
        Limits {
            max_size: 64 << 10,
            max_len: 9000,
            max_gap: 3 * PAGE,
            check_every: 25,
        },
    );
}
