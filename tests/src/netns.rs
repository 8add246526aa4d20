//! Multi-host test networks in network namespaces.
//!
//! A [`Network`] is a Linux bridge in a namespace of its own and N hosts,
//! each a namespace with one veth link (`eth0`) to that bridge, on a /24 of
//! 198.18.0.0/15 (the benchmarking range) picked from the pid. Nothing is
//! made in the test's own namespace, so concurrent test binaries cannot
//! collide on addresses, routes or interface names; only namespace names
//! are global, and they carry the pid and a sequence number. Everything is
//! deleted on drop (also while a test panics) and by the watchdog.
//!
//! Faults it injects:
//! - [`partition`](Network::partition) / [`isolate`](Network::isolate):
//!   hosts' bridge ports are moved to other bridges (or to none), so groups
//!   cannot reach each other at all. Plain kernel bridging, no firewall.
//! - [`drop_one_way`](Network::drop_one_way): an nftables rule in the
//!   sender's namespace (A→B lost, B→A delivered).
//! - [`delay_loss`](Network::delay_loss): tc netem on both ends of a
//!   host's link, where the kernel has `sch_netem`;
//!   [`loss_nft`](Network::loss_nft): random loss with nftables alone.
//!
//! Faults the kernel or the machine cannot make return [`Unsupported`],
//! for the test to print and skip that part.
//!
//! Processes join a host with `setns(CLONE_NEWNET)` between fork and exec
//! ([`Launch`]), not with `ip netns exec`: that one also gives the process
//! a private mount namespace, so a FUSE mount made under it would be
//! invisible to the test (checked: a tmpfs mounted under `ip netns exec`
//! does not show in the caller's /proc/self/mounts, one mounted after
//! `nsenter --net` does).
//!
//! [`NetPool`] puts a trusted pool of `cairnd` on the first hosts and
//! mounts on the others.

use crate::*;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Every test network's namespaces start with this, then `<pid>-<seq>`.
const NS_PREFIX: &str = "cairnnet-";

/// Where `ip netns add` keeps its namespace handles.
const NETNS_DIR: &str = "/run/netns";

/// The port every node listens on (each host has a port space of its own).
pub const CAIRND_PORT: u16 = 24007;

/// The nftables table the fault rules live in (one per host namespace).
const NFT_TABLE: &str = "cairn_faults";

/// A fault this machine cannot inject (a missing tool or kernel module).
#[derive(Debug, Clone)]
pub struct Unsupported(pub String);

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

// ---------------------------------------------------------------------------
// Starting processes in a host
// ---------------------------------------------------------------------------

/// How a harness process is started: in which network namespace (none:
/// the test's own) and with what extra environment (e.g. libfaketime's).
#[derive(Clone, Debug, Default)]
pub struct Launch {
    pub netns: Option<String>,
    pub env: Vec<(String, String)>,
}

impl Launch {
    /// In the test's own namespace, with its environment.
    pub fn here() -> Launch {
        Launch::default()
    }

    /// In the network namespace `ns`.
    pub fn in_netns(ns: &str) -> Launch {
        Launch {
            netns: Some(ns.to_string()),
            env: Vec::new(),
        }
    }

    /// The same, with `key=value` added to the environment.
    pub fn with_env(mut self, key: &str, value: &str) -> Launch {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// A command for `program`, placed and with the environment.
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = self.command_without_env(program);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Placed only: what a CLI call on a host uses (the environment is for
    /// the daemon, e.g. a skewed clock).
    pub fn command_without_env(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        if let Some(ns) = &self.netns {
            enter_netns_at_exec(&mut cmd, ns);
        }
        cmd
    }
}

/// Makes `cmd`'s process join network namespace `ns` before it execs.
fn enter_netns_at_exec(cmd: &mut Command, ns: &str) {
    let path = Path::new(NETNS_DIR).join(ns);
    let handle = std::fs::File::open(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    // SAFETY: the closure runs between fork and exec and only makes the
    // setns system call (async-signal-safe, no allocation). It owns the
    // handle, so the descriptor stays open as long as the command.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// Moves the calling thread (only it: setns is per thread) into network
/// namespace `ns`; sockets it makes afterwards live there for good.
fn join_netns_this_thread(ns: &str) -> std::io::Result<()> {
    let handle = std::fs::File::open(Path::new(NETNS_DIR).join(ns))?;
    // SAFETY: plain system call on a descriptor we own.
    if unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Runs `program args…` in namespace `ns` (or here), returning its output;
/// `Err` only if it could not be started at all (not installed).
fn run_in(ns: Option<&str>, program: &str, args: &[&str], stdin: Option<&str>) -> std::io::Result<CliOutput> {
    let launch = Launch {
        netns: ns.map(str::to_string),
        env: Vec::new(),
    };
    let mut cmd = launch.command_without_env(Path::new(program));
    cmd.args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    if let Some(text) = stdin {
        use std::io::Write;
        child.stdin.take().expect("piped stdin").write_all(text.as_bytes())?;
    }
    Ok(CliOutput::from(child.wait_with_output()?))
}

/// `ip ARGS…` (iproute2 is a hard requirement: no namespaces without it).
#[track_caller]
fn ip(args: &[&str]) {
    let out = run_in(None, "ip", args, None).unwrap_or_else(|e| panic!("running ip (iproute2): {e}"));
    assert!(out.ok(), "ip {args:?}: {}", out.stderr.trim());
}

/// Deletes a namespace (and with it its interfaces); errors are ignored.
pub(crate) fn delete_namespace(ns: &str) {
    let _ = run_in(None, "ip", &["netns", "del", ns], None);
}

/// Deletes the namespaces of test binaries that died without cleaning up
/// (SIGKILL, power loss): their pid no longer runs.
fn sweep_stale_namespaces() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(NS_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            delete_namespace(&name);
        }
    }
}

// ---------------------------------------------------------------------------
// The network
// ---------------------------------------------------------------------------

/// One bridge and N hosts on it; see the module documentation.
pub struct Network {
    bridge_ns: String,
    hosts: Vec<String>,
    /// The first three octets of the hosts' /24, e.g. `198.18.7`.
    prefix: String,
    /// Bridges made so far in the bridge namespace (`br0` is the main one).
    bridges: usize,
}

impl Network {
    /// A network of `n` hosts (addresses `<prefix>.1` …), all connected.
    pub fn new(n: usize) -> Network {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        assert!((1..=250).contains(&n), "{n} hosts");
        sweep_stale_namespaces();
        let seq = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id() as usize;
        let tag = format!("{NS_PREFIX}{pid}-{seq}");
        // 512 /24s in 198.18.0.0/15; distinct per process and network, so
        // addresses in logs say which run they belong to.
        let subnet = (pid * 7 + seq * 131) % 512;
        let mut net = Network {
            bridge_ns: format!("{tag}-br"),
            hosts: Vec::new(),
            prefix: format!("198.{}.{}", 18 + subnet / 256, subnet % 256),
            bridges: 0,
        };
        add_namespace(&net.bridge_ns);
        net.add_bridge();
        for i in 0..n {
            net.add_host(&tag, i);
        }
        net
    }

    fn add_bridge(&mut self) -> usize {
        let b = self.bridges;
        let name = format!("br{b}");
        ip(&["-n", &self.bridge_ns, "link", "add", &name, "type", "bridge"]);
        ip(&["-n", &self.bridge_ns, "link", "set", &name, "up"]);
        self.bridges += 1;
        b
    }

    fn add_host(&mut self, tag: &str, i: usize) {
        let ns = format!("{tag}-h{i}");
        add_namespace(&ns);
        self.hosts.push(ns.clone());
        let port = port_name(i);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &ns,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            &self.bridge_ns,
        ]);
        ip(&["-n", &ns, "addr", "add", &format!("{}/24", self.ip(i)), "dev", "eth0"]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &self.bridge_ns, "link", "set", &port, "up"]);
        self.attach(i, 0);
    }

    /// How many hosts.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Host `i`'s address.
    pub fn ip(&self, i: usize) -> String {
        format!("{}.{}", self.prefix, i + 1)
    }

    /// Host `i`'s namespace name.
    pub fn ns(&self, i: usize) -> &str {
        &self.hosts[i]
    }

    /// How to start a process on host `i`.
    pub fn launch(&self, i: usize) -> Launch {
        Launch::in_netns(&self.hosts[i])
    }

    /// Runs a command on host `i` (diagnostics, tools).
    pub fn run(&self, i: usize, program: &str, args: &[&str]) -> CliOutput {
        run_in(Some(&self.hosts[i]), program, args, None).unwrap_or_else(|e| panic!("running {program}: {e}"))
    }

    /// Does a UDP datagram from host `from` reach host `to` now? (A few
    /// tries within about half a second; for checking that a fault is in
    /// place or gone.)
    pub fn can_send(&self, from: usize, to: usize) -> bool {
        let (to_ns, from_ns, to_ip) = (self.hosts[to].clone(), self.hosts[from].clone(), self.ip(to));
        let listener = std::thread::spawn(move || -> std::io::Result<(u16, std::net::UdpSocket)> {
            join_netns_this_thread(&to_ns)?;
            let s = std::net::UdpSocket::bind((to_ip.as_str(), 0))?;
            Ok((s.local_addr()?.port(), s))
        });
        let (port, socket) = listener
            .join()
            .expect("listener thread")
            .expect("binding a probe socket on the receiving host");
        let to_ip = self.ip(to);
        std::thread::spawn(move || -> std::io::Result<bool> {
            join_netns_this_thread(&from_ns)?;
            let sender = std::net::UdpSocket::bind("0.0.0.0:0")?;
            socket.set_read_timeout(Some(std::time::Duration::from_millis(100)))?;
            let mut buf = [0u8; 16];
            for _ in 0..5 {
                // Unreachable hosts may answer with an error: that is a "no".
                let _ = sender.send_to(b"probe", (to_ip.as_str(), port));
                if socket.recv(&mut buf).is_ok() {
                    return Ok(true);
                }
            }
            Ok(false)
        })
        .join()
        .expect("probe thread")
        .expect("probing")
    }

    fn attach(&self, host: usize, bridge: usize) {
        ip(&[
            "-n",
            &self.bridge_ns,
            "link",
            "set",
            &port_name(host),
            "master",
            &format!("br{bridge}"),
        ]);
    }

    /// Cuts host `i` off from every other host (its link stays up: its
    /// packets go nowhere, as when a switch port dies).
    pub fn isolate(&self, i: usize) {
        ip(&["-n", &self.bridge_ns, "link", "set", &port_name(i), "nomaster"]);
    }

    /// Splits the network into `groups`: each group on a bridge of its own,
    /// hosts not named stay with the first group. Hosts within a group
    /// still reach each other.
    pub fn partition(&mut self, groups: &[&[usize]]) {
        for h in 0..self.len() {
            self.attach(h, 0);
        }
        for (g, members) in groups.iter().enumerate() {
            while self.bridges <= g {
                self.add_bridge();
            }
            for &h in *members {
                self.attach(h, g);
            }
        }
    }

    /// Undoes every fault: all hosts back on the main bridge, fault rules
    /// and queueing disciplines removed.
    pub fn heal_network(&self) {
        for i in 0..self.len() {
            self.attach(i, 0);
            let _ = run_in(
                Some(&self.hosts[i]),
                "nft",
                &["delete", "table", "inet", NFT_TABLE],
                None,
            );
            let _ = run_in(
                Some(&self.hosts[i]),
                "tc",
                &["qdisc", "del", "dev", "eth0", "root"],
                None,
            );
            let _ = run_in(
                Some(&self.bridge_ns),
                "tc",
                &["qdisc", "del", "dev", &port_name(i), "root"],
                None,
            );
        }
    }

    /// Packets from host `from` to host `to` are dropped; the other
    /// direction still flows (nftables in `from`'s namespace).
    pub fn drop_one_way(&self, from: usize, to: usize) -> Result<(), Unsupported> {
        let rule = format!("add rule inet {NFT_TABLE} output ip daddr {} drop\n", self.ip(to));
        self.nft(from, &rule)
    }

    /// Drops `pct` % of host `i`'s packets each way, at random (nftables'
    /// `numgen`), for kernels without netem.
    pub fn loss_nft(&self, i: usize, pct: u32) -> Result<(), Unsupported> {
        let rules = format!(
            "add rule inet {NFT_TABLE} output numgen random mod 100 < {pct} drop\n\
             add rule inet {NFT_TABLE} input numgen random mod 100 < {pct} drop\n"
        );
        self.nft(i, &rules)
    }

    /// Loads `rules` into host `i`'s fault table (made on first use, with
    /// an input and an output chain).
    fn nft(&self, i: usize, rules: &str) -> Result<(), Unsupported> {
        let script = format!(
            "add table inet {NFT_TABLE}\n\
             add chain inet {NFT_TABLE} output {{ type filter hook output priority 0; policy accept; }}\n\
             add chain inet {NFT_TABLE} input {{ type filter hook input priority 0; policy accept; }}\n\
             {rules}"
        );
        let out = run_in(Some(&self.hosts[i]), "nft", &["-f", "-"], Some(&script))
            .map_err(|e| Unsupported(format!("nft (package nftables) cannot run: {e}")))?;
        if out.ok() {
            Ok(())
        } else {
            Err(Unsupported(format!(
                "nftables rules refused (kernel without nf_tables?): {}",
                out.stderr.trim()
            )))
        }
    }

    /// Delays host `i`'s packets by `ms` and loses `pct` % of them, each
    /// way (netem on both ends of its link: a round trip gains 2 × `ms`).
    pub fn delay_loss(&self, i: usize, ms: u32, pct: f32) -> Result<(), Unsupported> {
        netem_available()?;
        let (delay, loss) = (format!("{ms}ms"), format!("{pct}%"));
        let args = |dev: &str| -> Vec<String> {
            [
                "qdisc", "replace", "dev", dev, "root", "netem", "delay", &delay, "loss", &loss,
            ]
            .map(String::from)
            .to_vec()
        };
        for (ns, dev) in [(&self.hosts[i], "eth0".to_string()), (&self.bridge_ns, port_name(i))] {
            let a = args(&dev);
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            let out = run_in(Some(ns), "tc", &a, None).map_err(|e| Unsupported(format!("tc cannot run: {e}")))?;
            if !out.ok() {
                return Err(Unsupported(format!("tc netem refused: {}", out.stderr.trim())));
            }
        }
        Ok(())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain(std::iter::once(&self.bridge_ns)) {
            delete_namespace(ns);
            unregister_namespace(ns);
        }
    }
}

fn add_namespace(ns: &str) {
    // Registered first: a watchdog abort in between still deletes it.
    register_namespace(ns);
    ip(&["netns", "add", ns]);
}

/// Host `i`'s end of its link, in the bridge namespace.
fn port_name(i: usize) -> String {
    format!("p{i}")
}

/// Whether the kernel can make a netem queue (loading `sch_netem` first if
/// `modprobe` exists); tried once, in a scratch namespace.
pub fn netem_available() -> Result<(), Unsupported> {
    static VERDICT: std::sync::OnceLock<Result<(), Unsupported>> = std::sync::OnceLock::new();
    VERDICT
        .get_or_init(|| {
            let _ = run_in(None, "modprobe", &["sch_netem"], None);
            let ns = format!("{NS_PREFIX}{}-netem-probe", std::process::id());
            add_namespace(&ns);
            let out = run_in(
                Some(&ns),
                "tc",
                &["qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
                None,
            );
            delete_namespace(&ns);
            unregister_namespace(&ns);
            match out {
                Err(e) => Err(Unsupported(format!("tc (iproute2) cannot run: {e}"))),
                Ok(o) if o.ok() => Ok(()),
                Ok(o) => Err(Unsupported(format!(
                    "the kernel has no netem queueing discipline (sch_netem): tc said `{}`",
                    o.stderr.trim()
                ))),
            }
        })
        .clone()
}

// ---------------------------------------------------------------------------
// A pool of nodes on a network, with client hosts
// ---------------------------------------------------------------------------

/// `servers` hosts each running a `cairnd` (probed into one pool from node
/// 0) and `clients` more hosts for mounts, on one [`Network`]. Node `i` is
/// host `i`; client `c` is host `servers + c`. Dropping it unmounts, stops
/// every node (thawing frozen ones), deletes the network and the temp dir,
/// and prints the logs if the test panicked.
pub struct NetPool {
    pub net: Network,
    pub nodes: Vec<Option<Daemon>>,
    pub mounts: Vec<Mount>,
    pub dir: PathBuf,
    servers: usize,
    /// How each node's daemon is started (its environment survives restarts).
    launches: Vec<Launch>,
    tmp: Option<tempfile::TempDir>,
}

impl NetPool {
    /// A pool of `servers` nodes and `clients` client hosts.
    pub fn new(servers: usize, clients: usize) -> NetPool {
        NetPool::with_env(servers, clients, |_| Vec::new())
    }

    /// As [`new`](Self::new), node `i`'s daemon getting `env(i)` added to
    /// its environment.
    pub fn with_env(servers: usize, clients: usize, env: impl Fn(usize) -> Vec<(String, String)>) -> NetPool {
        preflight();
        watchdog();
        let tmp = temp_dir("cairn-netpool-");
        let dir = tmp.path().to_path_buf();
        register_dir(&dir);
        let net = Network::new(servers + clients);
        let launches = (0..servers)
            .map(|i| env(i).iter().fold(net.launch(i), |l, (k, v)| l.with_env(k, v)))
            .collect();
        let mut pool = NetPool {
            net,
            nodes: Vec::new(),
            mounts: Vec::new(),
            dir,
            servers,
            launches,
            tmp: Some(tmp),
        };
        for i in 0..servers {
            pool.nodes.push(None);
            pool.restart(i);
        }
        for i in 1..servers {
            let out = pool.node(0).cli_ok(&["peer", "probe", &pool.addr(i)]);
            assert!(out.contains("peer probe: success"), "{out}");
        }
        pool
    }

    pub fn state_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("state{i}"))
    }

    pub fn log(&self, i: usize) -> PathBuf {
        self.dir.join(format!("cairnd{i}.log"))
    }

    /// `host:port` of node `i`.
    pub fn addr(&self, i: usize) -> String {
        format!("{}:{CAIRND_PORT}", self.net.ip(i))
    }

    /// The host index of client `c`.
    pub fn client_host(&self, c: usize) -> usize {
        self.servers + c
    }

    /// A running node.
    #[track_caller]
    pub fn node(&self, i: usize) -> &Daemon {
        self.nodes[i]
            .as_ref()
            .unwrap_or_else(|| panic!("node {i} is not running"))
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

    /// Starts node `i` (again) on its host, address and state dir.
    pub fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "node {i} is running");
        let d = Daemon::start_in(
            &self.launches[i],
            &self.state_dir(i),
            &self.log(i),
            &self.net.ip(i),
            CAIRND_PORT,
        );
        self.nodes[i] = Some(d);
    }

    /// SIGSTOP node `i`: it holds its connections and answers nothing.
    pub fn freeze(&self, i: usize) {
        self.signal(i, libc::SIGSTOP);
    }

    /// SIGCONT node `i`.
    pub fn thaw(&self, i: usize) {
        self.signal(i, libc::SIGCONT);
    }

    fn signal(&self, i: usize, sig: i32) {
        let pid = self.node(i).pid().expect("a running node has a pid") as i32;
        // SAFETY: a plain signal to a daemon this harness started.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "signal {sig} to node {i}: {}", std::io::Error::last_os_error());
    }

    /// Mounts `vol` on client `c`'s host, from node `from`, on
    /// `<dir>/<name>`; kept until the pool is dropped.
    pub fn mount(&mut self, c: usize, from: usize, vol: &str, name: &str, extra: &str) -> PathBuf {
        let launch = self.net.launch(self.client_host(c));
        let m = Mount::new_in(
            &launch,
            self.node(from),
            vol,
            &self.dir.join(name),
            &self.dir.join(format!("{name}.log")),
            extra,
        );
        let path = m.path.clone();
        self.mounts.push(m);
        path
    }

    fn dump_logs(&self) {
        for i in 0..self.servers {
            eprintln!("---- node {i} log ----\n{}", tail(&self.log(i), 40));
        }
        for m in &self.mounts {
            eprintln!("---- mount {} log ----\n{}", m.path.display(), tail(&m.log, 30));
        }
    }
}

impl Drop for NetPool {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for mut m in self.mounts.drain(..) {
            m.unmount();
        }
        for d in self.nodes.iter_mut() {
            if let Some(mut d) = d.take() {
                // A frozen daemon cannot act on SIGTERM.
                if let Some(pid) = d.pid() {
                    // SAFETY: a plain signal to a daemon this harness started.
                    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
                }
                d.stop();
            }
        }
        if let Some(tmp) = self.tmp.take() {
            unregister_dir(tmp.path());
            let keep_for_study = std::thread::panicking() && std::env::var_os("CAIRN_KEEP_FAILED").is_some();
            if keep_for_study {
                eprintln!("CAIRN_KEEP_FAILED: logs and bricks kept in {}", tmp.path().display());
            }
            if keep_for_study || mounts_below(tmp.path()) {
                let _ = tmp.keep();
            }
        }
        // `net` is dropped after this, with every process of it gone.
    }
}
