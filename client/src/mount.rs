//! `mount.cairn`: option parsing, the mount(2) call as `fuse.cairn`, and the
//! hand-off between the command the user ran and the background process
//! that serves the mount. The command returns only once the mount is ready
//! or has failed, with the reason on stderr.

use crate::fs::CairnFs;
use crate::fuse::{FuseAdapter, Timeouts};
use anyhow::{bail, Context};
use cairn_common::worker_threads;
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Environment variable naming the fd on which the background process
/// reports readiness to the command that started it.
const READY_FD_ENV: &str = "CAIRN_MOUNT_READY_FD";

#[derive(Debug, Clone)]
pub struct MountOptions {
    pub source: String,
    pub node: String,
    pub volume: String,
    pub mountpoint: PathBuf,
    pub backup_servers: Vec<String>,
    pub state_dir: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    pub timeouts: Timeouts,
    pub call_timeout: Duration,
    pub read_only: bool,
    /// `acl`: the kernel enforces POSIX ACLs (gluster's mount option).
    pub acl: bool,
    /// Serve Prometheus metrics on this address (`metrics=127.0.0.1:9325`).
    pub metrics: Option<std::net::SocketAddr>,
    /// Kernel readahead window for the mount; FUSE defaults to 128 KiB,
    /// which caps sequential reads at one 128 KiB request in flight.
    pub read_ahead_kb: u32,
    pub log_level: Option<String>,
    pub log_file: Option<PathBuf>,
    pub foreground: bool,
}

/// The options mount.cairn acts on (mount.cairn(8) documents each), as
/// `KEY` or `KEY=`; named in the error for an unknown one.
pub const OPTIONS: &[&str] = &[
    "ro",
    "acl",
    "backup-volfile-servers=",
    "log-level=",
    "log-file=",
    "state-dir=",
    "cert=",
    "key=",
    "ca=",
    "attribute-timeout=",
    "entry-timeout=",
    "negative-timeout=",
    "call-timeout=",
    "read-ahead-kb=",
    "metrics=",
    "foreground",
];

/// Options mount(8) passes through from fstab that are not ours to act on.
const GENERIC_OPTIONS: &[&str] = &[
    "defaults",
    "rw",
    "auto",
    "noauto",
    "_netdev",
    "nofail",
    "user",
    "nouser",
    "users",
    "owner",
    "group",
    "exec",
    "noexec",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "async",
    "sync",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "diratime",
    "nodiratime",
    "loud",
    "silent",
    "x-systemd.automount",
    "comment",
];

fn seconds(key: &str, v: &str) -> anyhow::Result<Duration> {
    let s: f64 = v
        .parse()
        .with_context(|| format!("option {key}={v}: expected seconds"))?;
    if !(0.0..=86400.0).contains(&s) {
        bail!("option {key}={v}: out of range 0-86400");
    }
    Ok(Duration::from_secs_f64(s))
}

/// `server2:server3[:port]` as gluster writes it; a numeric part is the
/// preceding server's port.
fn parse_servers(list: &str) -> anyhow::Result<Vec<String>> {
    let mut raw: Vec<String> = Vec::new();
    for part in list.split(':').filter(|p| !p.is_empty()) {
        if part.chars().all(|c| c.is_ascii_digit()) {
            let last = raw
                .last_mut()
                .context("backup-volfile-servers: a port without a server")?;
            last.push(':');
            last.push_str(part);
        } else {
            raw.push(part.to_string());
        }
    }
    raw.iter().map(|s| cairn_common::addr::canonical_node(s)).collect()
}

impl MountOptions {
    /// Parses `SOURCE MOUNTPOINT [-o opts] [-f]` as mount(8) invokes helpers.
    pub fn parse(args: &[String]) -> anyhow::Result<MountOptions> {
        let mut positional = Vec::new();
        let mut opts = Vec::new();
        let mut foreground = false;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "-o" => opts.push(it.next().context("-o needs an option list")?.clone()),
                "-f" | "--foreground" => foreground = true,
                // mount(8) passes -n (no mtab), -s (sloppy), -v (verbose).
                "-n" | "-s" | "-v" => {}
                s if s.starts_with("-o") => opts.push(s[2..].to_string()),
                s if s.starts_with('-') => bail!("unknown flag {s}"),
                _ => positional.push(a.clone()),
            }
        }
        let [source, mountpoint] = positional.as_slice() else {
            bail!("usage: mount.cairn NODE:/VOLUME MOUNTPOINT [-o options]");
        };
        let (node, volume) = cairn_common::addr::parse_volume_source(source)?;
        let mut o = MountOptions {
            source: source.clone(),
            node,
            volume,
            mountpoint: PathBuf::from(mountpoint),
            backup_servers: Vec::new(),
            state_dir: None,
            cert: None,
            key: None,
            ca: None,
            timeouts: Timeouts {
                attr: Duration::from_secs(1),
                entry: Duration::from_secs(1),
                negative: Duration::ZERO,
            },
            call_timeout: Duration::from_secs(60),
            read_only: false,
            acl: false,
            metrics: None,
            read_ahead_kb: 4096,
            log_level: None,
            log_file: None,
            foreground,
        };
        for opt in opts.iter().flat_map(|s| s.split(',')).filter(|s| !s.is_empty()) {
            let (k, v) = opt.split_once('=').map_or((opt, None), |(k, v)| (k, Some(v)));
            let need = || v.with_context(|| format!("option {k} needs a value"));
            match k {
                "ro" => o.read_only = true,
                "acl" => o.acl = true,
                "metrics" => {
                    o.metrics = Some(
                        need()?
                            .parse()
                            .with_context(|| format!("option {opt}: expected HOST:PORT"))?,
                    )
                }
                "foreground" => o.foreground = true,
                "state-dir" => o.state_dir = Some(need()?.into()),
                "cert" => o.cert = Some(need()?.into()),
                "key" => o.key = Some(need()?.into()),
                "ca" => o.ca = Some(need()?.into()),
                "attribute-timeout" => o.timeouts.attr = seconds(k, need()?)?,
                "entry-timeout" => o.timeouts.entry = seconds(k, need()?)?,
                "negative-timeout" => o.timeouts.negative = seconds(k, need()?)?,
                "call-timeout" => o.call_timeout = seconds(k, need()?)?.max(Duration::from_secs(1)),
                "read-ahead-kb" => {
                    o.read_ahead_kb = need()?
                        .parse()
                        .ok()
                        .filter(|n| (4..=65536).contains(n))
                        .with_context(|| format!("option {opt}: expected 4-65536"))?
                }
                "backup-volfile-servers" => o.backup_servers = parse_servers(need()?)?,
                "log-level" => o.log_level = Some(need()?.to_string()),
                "log-file" => o.log_file = Some(need()?.into()),
                k if GENERIC_OPTIONS.contains(&k) || k.starts_with("x-") => {}
                _ => bail!(
                    "unknown mount option {opt:?}: use {} (see mount.cairn(8))",
                    OPTIONS.join(" ")
                ),
            }
        }
        if [&o.cert, &o.key, &o.ca].iter().filter(|p| p.is_some()).count() % 3 != 0 {
            bail!("options cert=, key= and ca= go together");
        }
        Ok(o)
    }

    fn credentials(&self) -> anyhow::Result<cairn_common::tls::Credentials> {
        match (&self.cert, &self.key, &self.ca) {
            (Some(c), Some(k), Some(ca)) => cairn_common::state::load_credentials(ca, c, k),
            _ => cairn_common::state::client_credentials(&cairn_common::state::resolve_state_dir(
                self.state_dir.as_deref(),
            )),
        }
    }
}

/// Starts the background mount process and waits for its verdict.
pub fn mount_in_background(opts: &MountOptions, args: &[String]) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("pipe: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fresh fds we own.
    let (read_end, write_end) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let log = open_log(opts)?;
    let mut cmd = std::process::Command::new(std::env::current_exe().context("finding mount.cairn")?);
    cmd.args(args)
        .arg("--foreground")
        .env(READY_FD_ENV, "3")
        .stdin(std::process::Stdio::null());
    cmd.stdout(log.try_clone()?).stderr(log);
    let w = write_end.as_raw_fd();
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            if libc::dup2(w, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting the mount process")?;
    drop(write_end);
    let mut verdict = String::new();
    std::fs::File::from(read_end).read_to_string(&mut verdict)?;
    match verdict.strip_prefix("OK") {
        Some(_) => Ok(()),
        None => {
            let _ = child.wait();
            let log = log_path(opts).map_or("its log".to_string(), |p| p.display().to_string());
            let reason = match verdict.strip_prefix("ERR ") {
                Some(reason) => reason.trim().to_string(),
                None => format!("the mount process exited early (see {log})"),
            };
            bail!("{reason}")
        }
    }
}

/// Where a mount logs: `log-file=`, else
/// /var/log/cairn/mnt-<mount point, slashes as dashes>.log as gluster names
/// its mount logs. `None` when that directory cannot be made (a read-only
/// /var): the records are dropped rather than the mount refused.
pub fn log_path(opts: &MountOptions) -> Option<PathBuf> {
    if let Some(p) = &opts.log_file {
        return Some(p.clone());
    }
    let dir = Path::new(DEFAULT_LOG_DIR);
    std::fs::create_dir_all(dir).ok()?;
    let name: String = opts
        .mountpoint
        .to_string_lossy()
        .trim_matches('/')
        .chars()
        .map(|c| if c == '/' { '-' } else { c })
        .collect();
    let name = if name.is_empty() { "root".to_string() } else { name };
    Some(dir.join(format!("mnt-{name}.log")))
}

/// Default directory of mount logs (and of cairnd's, in the packaged unit).
pub const DEFAULT_LOG_DIR: &str = "/var/log/cairn";

/// The serving process's stdout and stderr (panics, stray prints), opened
/// by the command that starts it.
fn open_log(opts: &MountOptions) -> anyhow::Result<std::fs::File> {
    let Some(path) = log_path(opts) else {
        return Ok(std::fs::File::options().write(true).open("/dev/null")?);
    };
    std::fs::File::options()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening log file {}", path.display()))
}

/// Sets up logging in the process that serves the mount: to its log file
/// (reopened on SIGHUP, for logrotate) when started in the background or
/// given `log-file=`; to stderr for `mount.cairn -f` without one.
pub fn init_logging(opts: &MountOptions) -> Option<cairn_common::logging::LogFile> {
    let level = opts.log_level.clone().unwrap_or_else(|| "info".into());
    let in_background = std::env::var_os(READY_FD_ENV).is_some();
    let path = if in_background || opts.log_file.is_some() {
        log_path(opts)
    } else {
        None
    };
    match path.map(|p| (cairn_common::logging::init_file(&level, &p), p)) {
        Some((Ok(log), _)) => Some(log),
        Some((Err(e), p)) => {
            cairn_common::logging::init(&level);
            tracing::warn!(error = %e, path = %p.display(), "cannot open the log file: logging to stderr");
            None
        }
        None => {
            cairn_common::logging::init(&level);
            None
        }
    }
}

/// SIGHUP after logrotate moved the log: records, and stdout and stderr
/// (where a panic would go), continue in a fresh file of the same name.
fn reopen_log(log: &cairn_common::logging::LogFile, path: Option<&Path>) {
    if let Err(e) = log.reopen() {
        tracing::error!(error = %e, "could not reopen the log file");
        return;
    }
    if let Some(file) = path.and_then(|p| std::fs::File::options().append(true).open(p).ok()) {
        // SAFETY: dup2 onto our own standard descriptors.
        unsafe {
            libc::dup2(file.as_raw_fd(), 1);
            libc::dup2(file.as_raw_fd(), 2);
        }
    }
    tracing::info!("log file reopened");
}

/// Tells the waiting command how the mount went (no-op in foreground mode).
fn report(result: &anyhow::Result<()>) {
    let Some(fd) = std::env::var(READY_FD_ENV).ok().and_then(|v| v.parse::<i32>().ok()) else {
        return;
    };
    // SAFETY: the fd was set up for us by the parent; taken once.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    let msg = match result {
        Ok(()) => "OK\n".to_string(),
        Err(e) => format!("ERR {e:#}\n"),
    };
    let _ = f.write_all(msg.as_bytes());
}

/// Mounts and serves until unmounted; SIGHUP reopens `log` (if any).
pub fn run_foreground(mut opts: MountOptions, log: Option<cairn_common::logging::LogFile>) -> anyhow::Result<()> {
    // Named from the mount point as given, as the starting command did.
    let log_path = log.as_ref().and_then(|_| log_path(&opts));
    // Resolve the mount point now: once mounted, looking at it is a FUSE
    // request this process itself has to answer.
    opts.mountpoint = opts
        .mountpoint
        .canonicalize()
        .with_context(|| format!("mount point {}", opts.mountpoint.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads())
        .enable_all()
        .thread_name("cairn-mount")
        .build()?;
    // Handlers from the start, before readiness is reported: a SIGHUP
    // (logrotate) must never find the default action, which ends the mount.
    let signals = {
        use tokio::signal::unix::{signal, SignalKind};
        let _context = runtime.enter();
        (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
            signal(SignalKind::hangup())?,
        )
    };
    let prepared = runtime.block_on(prepare(&opts));
    let session = prepared.and_then(|fs| {
        let adapter = FuseAdapter::new(fs, runtime.handle().clone(), opts.timeouts).with_posix_acl(opts.acl);
        mount_session(&opts, adapter)
    });
    let session = match session {
        Ok(s) => {
            // Recorded before readiness is reported, so whoever waited for
            // the mount finds the record in the log (a test reads it at once).
            tracing::info!(source = %opts.source, mountpoint = %opts.mountpoint.display(), "mounted");
            report(&Ok(()));
            s
        }
        Err(e) => {
            report(&Err(anyhow::anyhow!("{e:#}")));
            return Err(e);
        }
    };
    if let Err(e) = set_read_ahead(&opts.mountpoint, opts.read_ahead_kb) {
        tracing::warn!(error = %e, "could not set the mount's readahead");
    }
    let target = opts.mountpoint.clone();
    let (mut term, mut int, mut hup) = signals;
    runtime.spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => match &log {
                    Some(log) => reopen_log(log, log_path.as_deref()),
                    // A terminal's hang-up must not end a mount either.
                    None => tracing::info!("SIGHUP ignored: logging to stderr"),
                },
            }
        }
        tracing::info!("signal received: unmounting");
        let _ = lazy_unmount(&target);
    });
    let result = session.run();
    // Changes answered before their post-op: let those land first.
    if !runtime.block_on(crate::afr::background_ends::settled(Duration::from_secs(5))) {
        tracing::warn!("post-ops still running at exit; heal will settle their marks");
    }
    tracing::info!("session ended");
    runtime.shutdown_timeout(Duration::from_secs(1));
    result.context("FUSE session")
}

async fn prepare(opts: &MountOptions) -> anyhow::Result<Arc<CairnFs>> {
    let creds = opts.credentials()?;
    let endpoint = cairn_common::transport::client_endpoint(&creds)?;
    let mut servers = vec![opts.node.clone()];
    servers.extend(opts.backup_servers.iter().cloned());
    let spec = crate::volume::fetch_spec(&endpoint, &servers, &opts.volume, opts.call_timeout).await?;
    let graph = crate::volume::Graph::build(&endpoint, &spec, opts.call_timeout, opts.timeouts.attr)?;
    let counting = Arc::new(crate::counting::Counting::new(graph.top.clone()));
    // Write-behind above the counting layer, so metrics show the bricks' latency.
    let write_behind = crate::write_behind::WriteBehind::new(counting.clone(), Some(graph.top.clone()));
    let top: Arc<dyn crate::layer::Subvolume> = write_behind.clone();
    top.reconfigure(&spec.options);
    let links = graph.clone();
    tokio::spawn(crate::volume::follow_spec(
        endpoint.clone(),
        servers,
        spec,
        top.clone(),
        graph,
        opts.call_timeout,
    ));
    let fs = Arc::new(CairnFs::new(top, opts.timeouts.attr).with_write_behind(write_behind));
    if let Some(addr) = opts.metrics {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("metrics listener on {addr}"))?;
        let (source, fs) = (opts.source.clone(), Arc::downgrade(&fs));
        let render = move || {
            let inodes = fs.upgrade().map_or(0, |f| f.known_inodes());
            counting.render(&source, inodes, &links.node_links())
        };
        tokio::spawn(cairn_common::metrics::serve(listener, Arc::new(render)));
    }
    fs.getattr(1).await.map_err(|e| {
        anyhow::anyhow!(
            "volume {} is not reachable: {}",
            opts.volume,
            std::io::Error::from_raw_os_error(e.0)
        )
    })?;
    Ok(fs)
}

fn mount_session(opts: &MountOptions, adapter: FuseAdapter) -> anyhow::Result<fuser::Session<FuseAdapter>> {
    let meta =
        std::fs::metadata(&opts.mountpoint).with_context(|| format!("mount point {}", opts.mountpoint.display()))?;
    if !meta.is_dir() {
        bail!("mount point {} is not a directory", opts.mountpoint.display());
    }
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .context("opening /dev/fuse")?;
    let fd = OwnedFd::from(dev);
    let data = format!(
        "fd={},rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions,max_read={}",
        fd.as_raw_fd(),
        crate::fuse::MAX_WRITE
    );
    let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
    if opts.read_only {
        flags |= libc::MS_RDONLY;
    }
    let c = |s: &str| CString::new(s).context("NUL in mount argument");
    let target = CString::new(opts.mountpoint.as_os_str().as_encoded_bytes()).context("NUL in mount point")?;
    // SAFETY: all pointers are valid NUL-terminated strings for the call.
    let rc = unsafe {
        libc::mount(
            c(&opts.source)?.as_ptr(),
            target.as_ptr(),
            c("fuse.cairn")?.as_ptr(),
            flags,
            c(&data)?.as_ptr().cast(),
        )
    };
    if rc != 0 {
        bail!(
            "mount {}: {}",
            opts.mountpoint.display(),
            std::io::Error::last_os_error()
        );
    }
    let mut config = fuser::Config::default();
    config.acl = fuser::SessionACL::All;
    config.n_threads = Some(2);
    config.clone_fd = true;
    match fuser::Session::from_fd(adapter, fd, fuser::SessionACL::All, config) {
        Ok(s) => Ok(s),
        Err(e) => {
            let _ = lazy_unmount(&opts.mountpoint);
            Err(e).context("FUSE handshake")
        }
    }
}

/// Sets the readahead of the mount's backing device info
/// (`/sys/class/bdi/MAJOR:MINOR/read_ahead_kb`). The device number comes
/// from /proc/self/mountinfo: a stat of the mount point would be a FUSE
/// request, and the session is not serving yet.
fn set_read_ahead(mountpoint: &Path, kb: u32) -> anyhow::Result<()> {
    let target = mountpoint.to_string_lossy().replace(' ', "\\040");
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let dev = info
        .lines()
        .rev()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() > 4 && f[4] == target).then(|| f[2].to_string())
        })
        .next()
        .context("mount not found in /proc/self/mountinfo")?;
    std::fs::write(format!("/sys/class/bdi/{dev}/read_ahead_kb"), kb.to_string())?;
    Ok(())
}

fn lazy_unmount(target: &Path) -> std::io::Result<()> {
    let t = CString::new(target.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: valid C string.
    if unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> anyhow::Result<MountOptions> {
        MountOptions::parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    /// Every option the error message and the man page name is accepted.
    #[test]
    fn every_listed_option_parses() {
        for key in OPTIONS {
            let sample = match *key {
                "backup-volfile-servers=" => "backup-volfile-servers=127.0.0.3".to_string(),
                "metrics=" => "metrics=127.0.0.1:9325".to_string(),
                "read-ahead-kb=" => "read-ahead-kb=128".to_string(),
                // Only together, by design.
                "cert=" | "key=" | "ca=" => "cert=c,key=k,ca=a".to_string(),
                k if k.ends_with("-timeout=") => format!("{k}1"),
                k if k.ends_with('=') => format!("{k}x"),
                k => k.to_string(),
            };
            parse(&format!("127.0.0.2:/gv0 /mnt -o {sample}")).unwrap_or_else(|e| panic!("{sample}: {e:#}"));
        }
    }

    #[test]
    fn options() {
        let o = parse(
            "127.0.0.2:/gv0 /mnt -o ro,attribute-timeout=0.5,_netdev,backup-volfile-servers=127.0.0.3:127.0.0.4:7000",
        )
        .unwrap();
        assert_eq!(o.node, "127.0.0.2:24007");
        assert_eq!(o.volume, "gv0");
        assert!(o.read_only);
        assert_eq!(o.timeouts.attr, Duration::from_millis(500));
        assert_eq!(
            o.backup_servers,
            vec!["127.0.0.3:24007".to_string(), "127.0.0.4:7000".to_string()]
        );
        let err = parse("127.0.0.2:/gv0 /mnt -o bogus").unwrap_err().to_string();
        assert!(
            err.contains("bogus") && err.contains("backup-volfile-servers="),
            "{err}"
        );
        assert!(parse("127.0.0.2:/gv0 /mnt -o acl,log-level=debug,log-file=/tmp/m.log")
            .is_ok_and(|o| o.acl && o.log_level.as_deref() == Some("debug")));
        assert!(parse("127.0.0.2:/gv0 /mnt -o cert=/a").is_err());
        assert!(parse("127.0.0.2:/gv0").is_err());
        assert!(parse("127.0.0.2:/gv0 /mnt -o attribute-timeout=x").is_err());
    }
}
