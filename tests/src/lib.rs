//! End-to-end test harness for Cairn: starts real `cairnd` daemons, drives the
//! real `cairn` CLI and mounts volumes with the real `mount-cairn`, then tears
//! everything down (also when a test panics, and when the watchdog fires).
//!
//! Binaries come from `$CAIRN_BIN_DIR`, else `<workspace>/target/debug`
//! (`cargo build --bins` first). The tests need root and `/dev/fuse`; they
//! fail (never skip) without them. `$CAIRN_TEST_WATCHDOG_SECS` (default 170)
//! bounds each test binary; the fsx tests also read `FSX_SEED` and `FSX_OPS`.

use std::ffi::CString;
use std::io::{BufRead, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

pub mod netns;
pub use netns::{netem_available, Launch, NetPool, Network, Unsupported, CAIRND_PORT};

/// The unprivileged user of the permission tests (`nobody`).
pub const NOBODY: u32 = 65534;

/// How long one test binary may run before the watchdog aborts it.
const DEFAULT_WATCHDOG_SECS: u64 = 600;

/// Path of the helper binary of this crate (`src/bin/cairn-test-helper.rs`);
/// only usable from integration tests, where Cargo defines the variable.
#[macro_export]
macro_rules! helper_bin {
    () => {
        ::std::path::Path::new(env!("CARGO_BIN_EXE_cairn-test-helper"))
    };
}

// ---------------------------------------------------------------------------
// Binaries, preflight, watchdog
// ---------------------------------------------------------------------------

/// Where `cairnd`, `cairn` and `mount-cairn` live.
pub fn bin_dir() -> PathBuf {
    match std::env::var_os("CAIRN_BIN_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug"),
    }
}

/// The path of one product binary; panics if it has not been built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build --bins` first (or set CAIRN_BIN_DIR)",
        p.display()
    );
    p
}

/// Fails loudly (never skips) when the machine cannot run these tests.
pub fn preflight() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the Cairn end-to-end tests must run as root (they mount FUSE file systems)"
    );
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: the Cairn end-to-end tests need FUSE"
    );
    for b in ["cairnd", "cairn", "mount-cairn"] {
        bin(b);
    }
}

#[derive(Default)]
struct Registry {
    mounts: Vec<PathBuf>,
    pids: Vec<i32>,
    dirs: Vec<PathBuf>,
    /// Network namespaces of test networks (`netns.rs`).
    namespaces: Vec<String>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    mounts: Vec::new(),
    pids: Vec::new(),
    dirs: Vec::new(),
    namespaces: Vec::new(),
});
static WATCHDOG: Once = Once::new();

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts (once per test binary) a thread that aborts the whole process if it
/// runs longer than `$CAIRN_TEST_WATCHDOG_SECS` (default 170 s), after
/// detaching every mount and killing every daemon the harness started.
pub fn watchdog() {
    WATCHDOG.call_once(|| {
        let secs = std::env::var("CAIRN_TEST_WATCHDOG_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_WATCHDOG_SECS);
        std::thread::Builder::new()
            .name("cairn-watchdog".into())
            .spawn(move || {
                std::thread::sleep(Duration::from_secs(secs));
                eprintln!("WATCHDOG: test binary still running after {secs} s; cleaning up and aborting");
                let reg = registry();
                for m in &reg.mounts {
                    lazy_unmount(m);
                }
                for &pid in &reg.pids {
                    // SAFETY: plain signal to a process this harness started.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                for d in &reg.dirs {
                    if !mounts_below(d) {
                        let _ = std::fs::remove_dir_all(d);
                    }
                }
                for ns in &reg.namespaces {
                    netns::delete_namespace(ns);
                }
                std::process::abort();
            })
            .expect("spawning the watchdog");
    });
}

fn register_pid(pid: i32) {
    registry().pids.push(pid);
}

fn unregister_pid(pid: i32) {
    registry().pids.retain(|&p| p != pid);
}

/// Network namespaces the watchdog deletes if it has to abort.
fn register_namespace(ns: &str) {
    registry().namespaces.push(ns.to_string());
}

fn unregister_namespace(ns: &str) {
    registry().namespaces.retain(|n| n != ns);
}

/// Mount points the watchdog detaches if it has to abort.
pub fn register_mount(p: &Path) {
    registry().mounts.push(p.to_path_buf());
}

fn unregister_mount(p: &Path) {
    registry().mounts.retain(|m| m != p);
}

/// Temp dirs the watchdog removes if it has to abort (Drop never runs then).
pub fn register_dir(p: &Path) {
    registry().dirs.push(p.to_path_buf());
}

pub fn unregister_dir(p: &Path) {
    registry().dirs.retain(|d| d != p);
}

// ---------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------

fn cstring(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

/// `umount -l`: detaches a mount point; errors are ignored.
pub fn lazy_unmount(p: &Path) {
    let c = cstring(p);
    // SAFETY: valid C string.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
}

/// Is `p` a mount point of type fuse.cairn (per /proc/self/mounts)?
pub fn is_cairn_mount(p: &Path) -> bool {
    mounts_entry(p).is_some_and(|(_, fstype)| fstype == "fuse.cairn")
}

/// The (source, fstype) of the mount at `p`, if any.
pub fn mounts_entry(p: &Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let want = p.to_string_lossy().to_string();
    text.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.len() >= 3 && unescape_mount_field(f[1]) == want).then(|| (f[0].to_string(), f[2].to_string()))
    })
}

fn unescape_mount_field(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Does any mount lie at or below `dir`?
fn mounts_below(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/self/mounts") else {
        return true;
    };
    text.lines().any(|l| {
        l.split(' ')
            .nth(1)
            .is_some_and(|m| Path::new(&unescape_mount_field(m)).starts_with(dir))
    })
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `limit`.
pub fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `f` on its own thread and waits at most `limit` for it: `None` means
/// it did not finish (the thread is left behind, blocked).
pub fn with_timeout<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).ok()
}

/// The last `n` lines of a text file (for failure reports).
pub fn tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// The errno of the last failed libc call.
pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The errno of an io::Error (0 if it carries none).
pub fn err_no(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// Asserts that an io result failed with `want`.
#[track_caller]
pub fn expect_errno<T: std::fmt::Debug>(r: std::io::Result<T>, want: i32, what: &str) {
    match r {
        Ok(v) => panic!("{what}: expected {} but it succeeded ({v:?})", errno_name(want)),
        Err(e) => assert_eq!(
            err_no(&e),
            want,
            "{what}: expected {} but got {e} ({})",
            errno_name(want),
            errno_name(err_no(&e))
        ),
    }
}

/// Asserts that a libc call returning -1 on error failed with `want`.
#[track_caller]
pub fn expect_libc_err(ret: i64, want: i32, what: &str) {
    let e = errno();
    assert_eq!(
        ret,
        -1,
        "{what}: expected {} but the call returned {ret}",
        errno_name(want)
    );
    assert_eq!(
        e,
        want,
        "{what}: expected {} but got {}",
        errno_name(want),
        errno_name(e)
    );
}

/// Asserts that a libc call succeeded (returned something other than -1).
#[track_caller]
pub fn check_libc(ret: i64, what: &str) -> i64 {
    if ret == -1 {
        let e = errno();
        panic!("{what}: failed with {} ({e})", errno_name(e));
    }
    ret
}

/// A readable name for common errnos.
pub fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::EACCES => "EACCES",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::ERANGE => "ERANGE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ENODATA => "ENODATA",
        libc::ENXIO => "ENXIO",
        libc::ESTALE => "ESTALE",
        libc::ENOTCONN => "ENOTCONN",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EPROTO => "EPROTO",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EMLINK => "EMLINK",
        libc::ELOOP => "ELOOP",
        libc::ETXTBSY => "ETXTBSY",
        libc::EFBIG => "EFBIG",
        libc::EROFS => "EROFS",
        libc::EDEADLK => "EDEADLK",
        libc::E2BIG => "E2BIG",
        0 => "no error",
        _ => return format!("errno {e}"),
    };
    name.to_string()
}

/// A C string for a path (panics on NUL).
pub fn c_path(p: &Path) -> CString {
    cstring(p)
}

/// Runs a program as `uid:gid` with no supplementary groups, from `/`.
pub fn run_as(uid: u32, gid: u32, program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .uid(uid)
        .gid(gid)
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {} as {uid}:{gid}: {e}", program.display()))
}

/// Picks a loopback address unique within this test binary (and, through
/// the pid, likely across concurrent binaries): 127.0.0.N.
pub fn unique_host() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let base = std::process::id() % 200;
    format!("127.0.0.{}", 2 + (base + n * 7) % 250)
}

/// A UDP port that was free on `host` a moment ago.
pub fn free_udp_port(host: &str) -> u16 {
    let s = std::net::UdpSocket::bind((host, 0)).unwrap_or_else(|e| panic!("binding a UDP socket on {host}: {e}"));
    s.local_addr().expect("local address").port()
}

/// Creates a temporary directory readable by everyone (so an unprivileged
/// user can reach mount points inside it), under `$TMPDIR`.
pub fn temp_dir(prefix: &str) -> tempfile::TempDir {
    temp_dir_in(&std::env::temp_dir(), prefix)
}

/// As [`temp_dir`], under `parent`.
pub fn temp_dir_in(parent: &Path, prefix: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(parent)
        .unwrap_or_else(|e| panic!("creating a temp dir in {}: {e}", parent.display()));
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
    d
}

// ---------------------------------------------------------------------------
// CLI output
// ---------------------------------------------------------------------------

/// What a CLI run printed.
#[derive(Debug, Clone)]
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn from(o: Output) -> CliOutput {
        CliOutput {
            status: o.status,
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    pub fn ok(&self) -> bool {
        self.status.success()
    }
}

// ---------------------------------------------------------------------------
// The daemon
// ---------------------------------------------------------------------------

/// One running `cairnd`.
pub struct Daemon {
    /// `host:port` it listens on.
    pub addr: String,
    pub host: String,
    pub port: u16,
    pub state_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    /// Where it runs (and where its CLI calls run): a test host's network
    /// namespace, or ours.
    launch: Launch,
}

impl Daemon {
    /// Starts a daemon on a fresh loopback address with `state_dir`,
    /// logging to `log`, and waits until it answers the CLI.
    pub fn start(state_dir: &Path, log: &Path) -> Daemon {
        let mut last = String::new();
        for _ in 0..4 {
            let host = unique_host();
            let port = free_udp_port(&host);
            match Daemon::try_start_at(state_dir, log, &host, port) {
                Ok(d) => return d,
                Err(e) => last = e,
            }
        }
        panic!("cairnd did not start: {last}");
    }

    /// Starts a daemon at a given address (e.g. to restart one).
    pub fn start_at(state_dir: &Path, log: &Path, host: &str, port: u16) -> Daemon {
        Daemon::try_start_at(state_dir, log, host, port).unwrap_or_else(|e| panic!("cairnd did not start: {e}"))
    }

    /// As [`start`](Self::start), passing `extra` arguments to cairnd.
    pub fn start_with(state_dir: &Path, log: &Path, extra: &[&str]) -> Daemon {
        let host = unique_host();
        let port = free_udp_port(&host);
        Daemon::try_start_with(state_dir, log, &host, port, extra)
            .unwrap_or_else(|e| panic!("cairnd did not start: {e}"))
    }

    fn try_start_at(state_dir: &Path, log: &Path, host: &str, port: u16) -> Result<Daemon, String> {
        Daemon::try_start_with(state_dir, log, host, port, &[])
    }

    fn try_start_with(state_dir: &Path, log: &Path, host: &str, port: u16, extra: &[&str]) -> Result<Daemon, String> {
        Daemon::try_start_in(&Launch::here(), state_dir, log, host, port, extra)
    }

    /// Starts a daemon as `launch` says (in a test host's network
    /// namespace, with extra environment) at `host:port`.
    pub fn start_in(launch: &Launch, state_dir: &Path, log: &Path, host: &str, port: u16) -> Daemon {
        Daemon::try_start_in(launch, state_dir, log, host, port, &[])
            .unwrap_or_else(|e| panic!("cairnd did not start: {e}"))
    }

    fn try_start_in(
        launch: &Launch,
        state_dir: &Path,
        log: &Path,
        host: &str,
        port: u16,
        extra: &[&str],
    ) -> Result<Daemon, String> {
        preflight();
        watchdog();
        let addr = format!("{host}:{port}");
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("log {}: {e}", log.display()))?;
        let child = launch
            .command(&bin("cairnd"))
            .arg("--listen")
            .arg(&addr)
            .arg("--state-dir")
            .arg(state_dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("dup log"))
            .stderr(logf)
            .spawn()
            .map_err(|e| format!("spawning cairnd: {e}"))?;
        register_pid(child.id() as i32);
        let mut d = Daemon {
            addr,
            host: host.to_string(),
            port,
            state_dir: state_dir.to_path_buf(),
            log: log.to_path_buf(),
            child: Some(child),
            launch: launch.clone(),
        };
        let ready = poll(Duration::from_secs(15), || {
            if !d.is_alive() {
                return Some(false);
            }
            d.cli_within(Duration::from_secs(5), &["volume", "info"])
                .is_some_and(|o| o.ok())
                .then_some(true)
        });
        match ready {
            Some(true) => Ok(d),
            Some(false) => {
                let status = d.wait_exit(Duration::from_secs(1));
                Err(format!(
                    "cairnd on {} exited early ({status:?}); log:\n{}",
                    d.addr,
                    tail(log, 30)
                ))
            }
            None => {
                d.kill();
                Err(format!(
                    "cairnd on {} not ready after 15 s; log:\n{}",
                    d.addr,
                    tail(log, 30)
                ))
            }
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Is the process still running?
    pub fn is_alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = poll(limit, || child.try_wait().ok().flatten());
        if status.is_some() {
            let pid = child.id() as i32;
            self.child = None;
            unregister_pid(pid);
        }
        status
    }

    /// SIGTERM, then SIGKILL after 10 s; returns how it exited.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let pid = self.child.as_ref()?.id() as i32;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        match self.wait_exit(Duration::from_secs(10)) {
            Some(s) => Some(s),
            None => {
                self.kill();
                None
            }
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            unregister_pid(c.id() as i32);
        }
    }

    /// Runs the CLI, killing it if it has not finished within `limit`
    /// (None then): a readiness probe must not wait out a node that died
    /// while it was being asked.
    pub fn cli_within(&self, limit: Duration, args: &[&str]) -> Option<CliOutput> {
        let mut cmd = self.launch.command_without_env(&bin("cairn"));
        cmd.arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--node")
            .arg(&self.addr)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd.spawn().unwrap_or_else(|e| panic!("running cairn: {e}"));
        let pid = child.id() as i32;
        let out = with_timeout(limit, move || child.wait_with_output());
        if out.is_none() {
            // SAFETY: signalling a process we started and have not reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        out.map(|o| CliOutput::from(o.unwrap_or_else(|e| panic!("running cairn: {e}"))))
    }

    /// Runs `cairn --state-dir DIR --node ADDR ARGS…`.
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        let out = with_timeout(Duration::from_secs(60), {
            let mut cmd = self.launch.command_without_env(&bin("cairn"));
            cmd.arg("--state-dir")
                .arg(&self.state_dir)
                .arg("--node")
                .arg(&self.addr)
                .args(args)
                .stdin(Stdio::null());
            move || cmd.output()
        })
        .unwrap_or_else(|| panic!("cairn {args:?} did not finish within 60 s"))
        .unwrap_or_else(|e| panic!("running cairn: {e}"));
        CliOutput::from(out)
    }

    /// Runs the CLI and panics (with its stderr) unless it succeeds.
    #[track_caller]
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert!(o.ok(), "cairn {args:?} failed ({}): {}{}", o.status, o.stderr, o.stdout);
        o.stdout
    }

    /// `volume info --json` parsed.
    pub fn info_json(&self) -> serde_json::Value {
        let out = self.cli_ok(&["--json", "volume", "info"]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("volume info --json: {e}: {out}"))
    }

    /// `volume status --json VOL` parsed.
    pub fn status_json(&self, vol: &str) -> serde_json::Value {
        let out = self.cli_ok(&["--json", "volume", "status", vol]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("volume status --json: {e}: {out}"))
    }

    /// A brick address on this node.
    pub fn brick_arg(&self, path: &Path) -> String {
        format!("{}:{}", self.addr, path.display())
    }

    /// Creates (with `force`) and starts `vol` on one brick.
    pub fn create_started_volume(&self, vol: &str, brick: &Path) {
        let b = self.brick_arg(brick);
        self.cli_ok(&["volume", "create", vol, &b, "force"]);
        self.cli_ok(&["volume", "start", vol]);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
    }
}

// ---------------------------------------------------------------------------
// Mounts
// ---------------------------------------------------------------------------

/// A volume mounted with `mount-cairn`; unmounted (lazily) on drop.
pub struct Mount {
    pub path: PathBuf,
    pub log: PathBuf,
    mounted: bool,
}

impl Mount {
    /// Takes charge of a mount made some other way (it is unmounted on drop).
    pub fn adopt(mountpoint: &Path, log: &Path) -> Mount {
        register_mount(mountpoint);
        Mount {
            path: mountpoint.to_path_buf(),
            log: log.to_path_buf(),
            mounted: true,
        }
    }

    /// Runs `mount-cairn NODE:/VOL MOUNTPOINT -o state-dir=…,log-file=…[,extra]`
    /// and returns the mount, or the command's output if it failed.
    pub fn try_new(
        daemon: &Daemon,
        vol: &str,
        mountpoint: &Path,
        log: &Path,
        extra_opts: &str,
    ) -> Result<Mount, CliOutput> {
        Mount::try_new_in(&Launch::here(), daemon, vol, mountpoint, log, extra_opts)
    }

    /// As [`try_new`](Self::try_new), with `mount-cairn` (and so the
    /// process serving the mount) started as `launch` says, e.g. in a
    /// client host's network namespace. Only the network namespace
    /// changes, so the mount is visible here.
    pub fn try_new_in(
        launch: &Launch,
        daemon: &Daemon,
        vol: &str,
        mountpoint: &Path,
        log: &Path,
        extra_opts: &str,
    ) -> Result<Mount, CliOutput> {
        std::fs::create_dir_all(mountpoint).expect("creating the mount point");
        let mut opts = format!("state-dir={},log-file={}", daemon.state_dir.display(), log.display());
        if !extra_opts.is_empty() {
            opts.push(',');
            opts.push_str(extra_opts);
        }
        let source = format!("{}:/{}", daemon.addr, vol);
        let mut cmd = launch.command(&bin("mount-cairn"));
        cmd.arg(&source)
            .arg(mountpoint)
            .arg("-o")
            .arg(&opts)
            .stdin(Stdio::null());
        // Register first: if the watchdog fires mid-mount it still detaches.
        register_mount(mountpoint);
        let out = with_timeout(Duration::from_secs(60), move || cmd.output())
            .unwrap_or_else(|| panic!("mount-cairn {source} did not return within 60 s"))
            .expect("running mount-cairn");
        let out = CliOutput::from(out);
        if !out.ok() {
            unregister_mount(mountpoint);
            return Err(out);
        }
        Ok(Mount {
            path: mountpoint.to_path_buf(),
            log: log.to_path_buf(),
            mounted: true,
        })
    }

    /// As [`try_new`](Self::try_new), panicking on failure.
    pub fn new(daemon: &Daemon, vol: &str, mountpoint: &Path, log: &Path, extra: &str) -> Mount {
        Mount::new_in(&Launch::here(), daemon, vol, mountpoint, log, extra)
    }

    /// As [`try_new_in`](Self::try_new_in), panicking on failure.
    pub fn new_in(launch: &Launch, daemon: &Daemon, vol: &str, mountpoint: &Path, log: &Path, extra: &str) -> Mount {
        match Mount::try_new_in(launch, daemon, vol, mountpoint, log, extra) {
            Ok(m) => {
                assert!(
                    is_cairn_mount(mountpoint),
                    "mount-cairn succeeded but {} is not a fuse.cairn mount",
                    mountpoint.display()
                );
                m
            }
            Err(o) => panic!(
                "mount-cairn failed ({}): {}{}\nmount log:\n{}",
                o.status,
                o.stderr,
                o.stdout,
                tail(log, 30)
            ),
        }
    }

    /// `self.path.join(rel)`.
    pub fn p(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }

    /// The pid of the background process serving this mount.
    pub fn server_pid(&self) -> Option<i32> {
        server_pid_for(&self.path)
    }

    /// Unmounts (lazily) and waits up to 10 s for the serving process to end;
    /// returns whether it ended.
    pub fn unmount(&mut self) -> bool {
        if !self.mounted {
            return true;
        }
        let pid = self.server_pid();
        lazy_unmount(&self.path);
        self.mounted = false;
        unregister_mount(&self.path);
        match pid {
            None => true,
            Some(pid) => {
                let gone = poll(Duration::from_secs(10), || {
                    (!Path::new(&format!("/proc/{pid}")).exists() || proc_state(pid) == Some('Z')).then_some(())
                })
                .is_some();
                if !gone {
                    // SAFETY: the mount process this harness started.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                gone
            }
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.unmount();
    }
}

fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.trim_start().chars().next()
}

/// Finds the `mount-cairn --foreground` process serving `mountpoint`.
pub fn server_pid_for(mountpoint: &Path) -> Option<i32> {
    let want = mountpoint.as_os_str().as_bytes();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
        let is_mount = args
            .first()
            .is_some_and(|a| a.ends_with(b"mount-cairn") || a.ends_with(b"mount.cairn"));
        if is_mount && args.contains(&want) && args.contains(&&b"--foreground"[..]) {
            return Some(pid);
        }
    }
    None
}

// ---------------------------------------------------------------------------
// A whole set-up: one daemon, one single-brick volume, one mount
// ---------------------------------------------------------------------------

/// How to build a [`Cluster`].
#[derive(Clone, Debug)]
pub struct ClusterOpts {
    /// Brick directory relative to the cluster's temp dir.
    pub brick_rel: PathBuf,
    /// Extra `-o` options for the mount.
    pub mount_opts: String,
    /// Create and start the volume `vol` at all (if not, `mount` is moot).
    pub volume: bool,
    /// Mount the volume.
    pub mount: bool,
}

impl Default for ClusterOpts {
    fn default() -> Self {
        ClusterOpts {
            brick_rel: PathBuf::from("brick"),
            mount_opts: String::new(),
            volume: true,
            mount: true,
        }
    }
}

/// A daemon with a started volume `vol` on `brick`, mounted on `mnt`.
/// Dropping it unmounts, stops the daemon and removes the temp dir (and, if
/// the test panicked, prints the daemon and mount logs).
pub struct Cluster {
    pub mount: Option<Mount>,
    pub daemon: Daemon,
    pub volume: String,
    pub brick: PathBuf,
    pub dir: PathBuf,
    tmp: Option<tempfile::TempDir>,
}

impl Cluster {
    pub fn new() -> Cluster {
        Cluster::with(ClusterOpts::default())
    }

    /// Just a daemon: no volume, no mount.
    pub fn bare() -> Cluster {
        Cluster::with(ClusterOpts {
            volume: false,
            mount: false,
            ..ClusterOpts::default()
        })
    }

    /// A started volume `vol`, not mounted.
    pub fn unmounted() -> Cluster {
        Cluster::with(ClusterOpts {
            mount: false,
            ..ClusterOpts::default()
        })
    }

    /// Stops the daemon (SIGTERM) and starts it again on the same address
    /// with the same state dir; returns how the old one exited.
    pub fn restart_daemon(&mut self) -> Option<ExitStatus> {
        let status = self.daemon.stop();
        let (host, port) = (self.daemon.host.clone(), self.daemon.port);
        self.daemon = Daemon::start_at(&self.daemon.state_dir, &self.daemon.log, &host, port);
        status
    }

    pub fn with(opts: ClusterOpts) -> Cluster {
        preflight();
        watchdog();
        let tmp = temp_dir("cairn-test-");
        let dir = tmp.path().to_path_buf();
        register_dir(&dir);
        let daemon = Daemon::start(&dir.join("state"), &dir.join("cairnd.log"));
        let brick = dir.join(&opts.brick_rel);
        let volume = "vol".to_string();
        let mut c = Cluster {
            mount: None,
            daemon,
            volume,
            brick,
            dir,
            tmp: Some(tmp),
        };
        if !opts.volume {
            return c;
        }
        c.daemon.create_started_volume(&c.volume, &c.brick);
        if opts.mount {
            c.mount = Some(c.new_mount("mnt", &opts.mount_opts));
        }
        c
    }

    /// Mounts the volume once more, on `<dir>/<name>`.
    pub fn new_mount(&self, name: &str, extra: &str) -> Mount {
        Mount::new(
            &self.daemon,
            &self.volume,
            &self.dir.join(name),
            &self.dir.join(format!("{name}.log")),
            extra,
        )
    }

    /// The main mount point.
    pub fn mnt(&self) -> &Path {
        &self.mount.as_ref().expect("cluster is mounted").path
    }

    /// A path inside the main mount.
    pub fn p(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.mnt().join(rel)
    }

    /// The same path on the brick.
    pub fn b(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.brick.join(rel)
    }

    fn dump_logs(&self) {
        eprintln!(
            "---- cairnd log ({}) ----\n{}",
            self.daemon.log.display(),
            tail(&self.daemon.log, 60)
        );
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "log") && p != self.daemon.log {
                    eprintln!("---- {} ----\n{}", p.display(), tail(&p, 40));
                }
            }
        }
    }
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster::new()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        if let Some(mut m) = self.mount.take() {
            m.unmount();
        }
        self.daemon.stop();
        if let Some(tmp) = self.tmp.take() {
            unregister_dir(tmp.path());
            if mounts_below(tmp.path()) {
                eprintln!(
                    "leaving {} in place: something is still mounted below it",
                    tmp.path().display()
                );
                let _ = tmp.keep();
            }
        }
    }
}

// ---------------------------------------------------------------------------
// A trusted pool of several daemons
// ---------------------------------------------------------------------------

/// Several `cairnd` on distinct loopback addresses, probed into one pool
/// from node 0. Each node keeps its address across restarts. Dropping it
/// unmounts `mounts`, stops every node and removes the temp dir (printing
/// the logs if the test panicked).
pub struct Pool {
    pub nodes: Vec<Option<Daemon>>,
    pub mounts: Vec<Mount>,
    pub dir: PathBuf,
    addrs: Vec<(String, u16)>,
    tmp: Option<tempfile::TempDir>,
}

impl Pool {
    /// `n` nodes in one pool.
    pub fn new(n: usize) -> Pool {
        let pool = Pool::unjoined(n);
        for i in 1..n {
            let out = pool.node(0).cli_ok(&["peer", "probe", &pool.node(i).addr]);
            assert!(out.contains("peer probe: success"), "{out}");
        }
        pool
    }

    /// `n` nodes, each a pool of its own.
    pub fn unjoined(n: usize) -> Pool {
        preflight();
        watchdog();
        let tmp = temp_dir("cairn-pool-");
        let dir = tmp.path().to_path_buf();
        register_dir(&dir);
        let mut pool = Pool {
            nodes: Vec::new(),
            mounts: Vec::new(),
            dir,
            addrs: Vec::new(),
            tmp: Some(tmp),
        };
        for i in 0..n {
            let d = Daemon::start(&pool.state_dir(i), &pool.log(i));
            pool.addrs.push((d.host.clone(), d.port));
            pool.nodes.push(Some(d));
        }
        pool
    }

    pub fn state_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("state{i}"))
    }

    pub fn log(&self, i: usize) -> PathBuf {
        self.dir.join(format!("cairnd{i}.log"))
    }

    /// A running node.
    #[track_caller]
    pub fn node(&self, i: usize) -> &Daemon {
        self.nodes[i]
            .as_ref()
            .unwrap_or_else(|| panic!("node {i} is not running"))
    }

    /// `host:port` of node `i` (running or not).
    pub fn addr(&self, i: usize) -> String {
        format!("{}:{}", self.addrs[i].0, self.addrs[i].1)
    }

    pub fn port(&self, i: usize) -> u16 {
        self.addrs[i].1
    }

    /// A brick argument `NODE:/path` on node `i`, under the pool's dir.
    pub fn brick(&self, i: usize, name: &str) -> String {
        format!("{}:{}", self.addr(i), self.brick_dir(name).display())
    }

    pub fn brick_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// SIGKILL node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut d) = self.nodes[i].take() {
            d.kill();
        }
    }

    /// SIGTERM node `i`.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut d) = self.nodes[i].take() {
            d.stop();
        }
    }

    /// Starts node `i` again on its address with its state dir.
    pub fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "node {i} is running");
        let (host, port) = self.addrs[i].clone();
        self.nodes[i] = Some(Daemon::start_at(&self.state_dir(i), &self.log(i), &host, port));
    }

    /// Mounts `vol` from node `i` on `<dir>/<name>`; kept until the pool
    /// is dropped.
    pub fn mount(&mut self, i: usize, vol: &str, name: &str, extra: &str) -> PathBuf {
        let m = Mount::new(
            self.node(i),
            vol,
            &self.dir.join(name),
            &self.dir.join(format!("{name}.log")),
            extra,
        );
        let path = m.path.clone();
        self.mounts.push(m);
        path
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for i in 0..self.addrs.len() {
                eprintln!("---- node {i} log ----\n{}", tail(&self.log(i), 40));
            }
            for m in &self.mounts {
                eprintln!("---- mount {} log ----\n{}", m.path.display(), tail(&m.log, 30));
            }
        }
        for mut m in self.mounts.drain(..) {
            m.unmount();
        }
        for d in self.nodes.iter_mut() {
            if let Some(mut d) = d.take() {
                d.stop();
            }
        }
        if let Some(tmp) = self.tmp.take() {
            unregister_dir(tmp.path());
            if mounts_below(tmp.path()) {
                let _ = tmp.keep();
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The helper process (src/bin/cairn-test-helper.rs)
// ---------------------------------------------------------------------------

/// Runs the helper binary as `uid:gid` and returns its one-line verdict:
/// `OK …` or `ERR <errno>`.
pub fn helper_as(helper: &Path, uid: u32, gid: u32, args: &[&str]) -> String {
    let o = run_as(uid, gid, helper, args);
    assert!(
        o.status.success(),
        "helper {args:?} as {uid}:{gid} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Runs the helper as root.
pub fn helper(helper: &Path, args: &[&str]) -> String {
    helper_as(helper, 0, 0, args)
}

/// `ERR <errno>` as the helper prints it.
pub fn helper_err(errno: i32) -> String {
    format!("ERR {errno}")
}

/// A helper process holding a lock until released.
pub struct LockHolder {
    child: Child,
}

impl LockHolder {
    /// Starts `helper hold-… args`, waiting until it reports `LOCKED`.
    pub fn start(helper: &Path, args: &[&str]) -> LockHolder {
        let mut child = Command::new(helper)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning the lock holder");
        register_pid(child.id() as i32);
        let stdout = child.stdout.take().expect("stdout");
        let line = with_timeout(Duration::from_secs(20), move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            line
        });
        let mut h = LockHolder { child };
        match line {
            Some(l) if l.trim() == "LOCKED" => h,
            other => {
                h.release();
                panic!("lock holder {args:?} did not report LOCKED: {other:?}");
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Closes its stdin (it then exits, dropping its locks) and reaps it.
    pub fn release(&mut self) {
        drop(self.child.stdin.take());
        let child = &mut self.child;
        if poll(Duration::from_secs(20), || child.try_wait().ok().flatten()).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        unregister_pid(self.child.id() as i32);
    }
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.release();
        }
    }
}

/// Writes `data` to `path` (create/truncate), panicking with context.
pub fn write_file(path: &Path, data: &[u8]) {
    let mut f = std::fs::File::create(path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    f.write_all(data)
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Reads `path`, panicking with context.
pub fn read_file(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Deterministic pseudo-random bytes (for content checks).
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A tmpfs of `mb` MiB mounted at a directory (a small disk to fill, or two
/// bricks of chosen sizes); unmounted (lazily) on drop.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(dir: &Path, mb: u32) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("creating the tmpfs mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "mount tmpfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        lazy_unmount(&self.0);
    }
}

/// A brick's tree as the volume sees it (the private `.cairn` dir left
/// out): per path its type, mode, owner, size, content hash (files),
/// target (symlinks) — to compare replicas. Times are left out: each
/// brick stamps its own writes, microseconds apart.
pub fn brick_tree(root: &Path) -> std::collections::BTreeMap<String, String> {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::MetadataExt;
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display())) {
            let e = e.expect("directory entry");
            let path = e.path();
            let rel = path.strip_prefix(root).expect("below root").display().to_string();
            if rel == ".cairn" {
                continue;
            }
            let m = std::fs::symlink_metadata(&path).expect("stat");
            let what = if m.is_dir() {
                stack.push(path.clone());
                format!("dir {:o} {}:{}", m.mode(), m.uid(), m.gid())
            } else if m.file_type().is_symlink() {
                format!("link -> {}", std::fs::read_link(&path).expect("readlink").display())
            } else {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                std::fs::read(&path).expect("read").hash(&mut h);
                format!(
                    "file {:o} {}:{} {} bytes #{:016x}",
                    m.mode(),
                    m.uid(),
                    m.gid(),
                    m.len(),
                    h.finish()
                )
            };
            out.insert(rel, what);
        }
    }
    out
}

/// The first difference between two trees, for an assertion message.
pub fn tree_difference(
    a: &std::collections::BTreeMap<String, String>,
    b: &std::collections::BTreeMap<String, String>,
) -> Option<String> {
    for (k, v) in a {
        match b.get(k) {
            None => return Some(format!("{k} only in the first ({v})")),
            Some(w) if w != v => return Some(format!("{k}: {v} vs {w}")),
            _ => {}
        }
    }
    b.keys()
        .find(|k| !a.contains_key(*k))
        .map(|k| format!("{k} only in the second ({})", b[k]))
}
