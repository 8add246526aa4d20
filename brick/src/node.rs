//! The node: its identity and credentials in the state dir, and the bricks
//! it serves, kept in step with the pool configuration (see `pool`). The
//! management requests themselves are in `admin`.

use crate::pool::store::Applied;
use crate::pool::Pool;
use crate::store::Brick;
use anyhow::Context;
use cairn_common::addr;
use cairn_common::proto::{BrickSpec, VolumeSpec, VolumeState};
use cairn_common::state;
use cairn_common::tls::{self, Credentials, Role};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use uuid::Uuid;

#[derive(serde::Serialize, serde::Deserialize)]
struct NodeInfo {
    node_id: Uuid,
}

pub struct Node {
    pub id: Uuid,
    pub state_dir: PathBuf,
    /// Canonical `host:port` this node answers to.
    pub address: String,
    pub listen: SocketAddr,
    credentials: RwLock<Credentials>,
    /// Keys QUIC stateless resets; kept in the state dir across restarts.
    pub reset_secret: Vec<u8>,
    pool: OnceLock<Arc<Pool>>,
    /// The endpoint serving this node, to swap its TLS on join and leave.
    server: OnceLock<quinn::Endpoint>,
    served: RwLock<HashMap<Uuid, Arc<Brick>>>,
    /// Bricks this node has initialized, with the path each was made at
    /// (once: a brick that later lacks its marks is a disk that is not
    /// mounted, never a brick to make again). `replace-brick` moves a
    /// brick id to a new path, which is then prepared again.
    prepared: Mutex<BTreeMap<Uuid, String>>,
    /// I/O statistics of the bricks served here.
    pub stats: crate::stats::NodeStats,
    brick_errors: Mutex<HashMap<Uuid, String>>,
    /// Volumes profiled at the last reconcile, to reset counters when
    /// profiling starts.
    profiled: Mutex<BTreeSet<String>>,
    /// The self-heal daemon's workers for this node's bricks.
    pub shd: crate::shd::SelfHealDaemon,
    /// Rebalance and remove-brick workers for this node's bricks.
    pub rebalance: crate::rebalance::RebalanceDaemon,
}

fn prepared_file(dir: &Path) -> PathBuf {
    dir.join("prepared.json")
}

/// Makes (if missing) the node and client certificates signed by the CA in
/// the state dir.
fn issue_own_certificates(state_dir: &Path, id: Uuid, replace: bool) -> anyhow::Result<()> {
    let ca = std::fs::read_to_string(state::ca_cert(state_dir))?;
    for (cert, key, role) in [
        (
            state::node_cert(state_dir),
            state::node_key(state_dir),
            Role::Node(id.to_string()),
        ),
        (
            state::client_cert(state_dir),
            state::client_key(state_dir),
            Role::Client(format!("local-{}", &id.to_string()[..8])),
        ),
    ] {
        if replace || !cert.exists() || !key.exists() {
            let ca_key = std::fs::read_to_string(state::ca_key(state_dir)).context("reading the pool CA key")?;
            let (c, k) = tls::issue(&ca, &ca_key, &role)?;
            state::write_private(&key, k.as_bytes())?;
            state::write_private(&cert, c.as_bytes())?;
        }
    }
    Ok(())
}

impl Node {
    /// Loads (or on first start creates) the node's state: id, pool CA,
    /// node and client certificates.
    pub fn load_or_init(state_dir: &Path, listen: &str) -> anyhow::Result<Node> {
        state::create_private_dir(state_dir)?;
        let info_path = state_dir.join("node.json");
        let id = match std::fs::read(&info_path) {
            Ok(bytes) => {
                serde_json::from_slice::<NodeInfo>(&bytes)
                    .with_context(|| format!("parsing {}", info_path.display()))?
                    .node_id
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = Uuid::new_v4();
                state::write_private(&info_path, &serde_json::to_vec_pretty(&NodeInfo { node_id: id })?)?;
                id
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", info_path.display())),
        };
        if !state::ca_cert(state_dir).exists() {
            let (ca, key) = tls::create_ca(&id.to_string())?;
            state::write_private(&state::ca_key(state_dir), key.as_bytes())?;
            state::write_private(&state::ca_cert(state_dir), ca.as_bytes())?;
            tracing::info!("created a new pool CA");
        }
        issue_own_certificates(state_dir, id, false)?;
        let credentials = state::node_credentials(state_dir)?;
        let reset_path = state_dir.join("reset.key");
        let reset_secret = match std::fs::read(&reset_path) {
            Ok(k) if k.len() == 32 => k,
            _ => {
                let k: Vec<u8> = uuid::Uuid::new_v4()
                    .as_bytes()
                    .iter()
                    .chain(uuid::Uuid::new_v4().as_bytes())
                    .copied()
                    .collect();
                state::write_private(&reset_path, &k)?;
                k
            }
        };
        if state_dir.join("volumes.json").exists() {
            tracing::warn!(
                "volumes.json (the single-node configuration of cairn 0.1 before pools) is ignored; \
                 volumes now live in the pool configuration"
            );
        }
        let prepared = match std::fs::read(prepared_file(state_dir)) {
            Ok(b) => parse_prepared(&b).context("parsing prepared.json")?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e).context("reading prepared.json"),
        };
        let address = addr::canonical_node(listen)?;
        let listen = addr::resolve_node(listen)?;
        state::write_private(&state::listen_file(state_dir), address.as_bytes())?;
        Ok(Node {
            id,
            state_dir: state_dir.to_path_buf(),
            address,
            listen,
            credentials: RwLock::new(credentials),
            reset_secret,
            pool: OnceLock::new(),
            server: OnceLock::new(),
            served: RwLock::new(HashMap::new()),
            prepared: Mutex::new(prepared),
            stats: crate::stats::NodeStats::default(),
            brick_errors: Mutex::new(HashMap::new()),
            profiled: Mutex::new(BTreeSet::new()),
            shd: crate::shd::SelfHealDaemon::default(),
            rebalance: crate::rebalance::RebalanceDaemon::default(),
        })
    }

    pub fn credentials(&self) -> Credentials {
        self.credentials.read().expect("credentials poisoned").clone()
    }

    /// Connects the node to its pool and its serving endpoint (once, at
    /// start, before serving).
    pub fn attach(&self, pool: Arc<Pool>, server: quinn::Endpoint) {
        if self.pool.set(pool).is_err() || self.server.set(server).is_err() {
            panic!("the pool is attached once");
        }
    }

    pub fn pool(&self) -> &Arc<Pool> {
        self.pool.get().expect("pool attached before serving")
    }

    /// The pool configuration as applied here.
    pub fn applied(&self) -> Arc<Applied> {
        self.pool().applied()
    }

    pub(crate) fn volume_spec(&self, name: &str) -> anyhow::Result<VolumeSpec> {
        self.applied()
            .state
            .volumes
            .get(name)
            .cloned()
            .with_context(|| format!("Volume {name} does not exist"))
    }

    /// Takes a new pool CA (joining a pool, or leaving one): new node and
    /// client certificates, and the endpoint's TLS swapped in place.
    pub(crate) fn adopt_ca(&self, ca_pem: &str, ca_key_pem: &str) -> anyhow::Result<()> {
        state::write_private(&state::ca_key(&self.state_dir), ca_key_pem.as_bytes())?;
        state::write_private(&state::ca_cert(&self.state_dir), ca_pem.as_bytes())?;
        issue_own_certificates(&self.state_dir, self.id, true)?;
        let creds = state::node_credentials(&self.state_dir)?;
        let endpoint = self.server.get().expect("attached before serving");
        endpoint.set_server_config(Some(cairn_common::transport::server_config(&creds)?));
        self.pool().peers.reset(cairn_common::transport::client_config(&creds)?);
        *self.credentials.write().expect("credentials poisoned") = creds;
        Ok(())
    }

    /// Is this `host:port` this node?
    pub(crate) fn is_local(&self, node: &str) -> bool {
        if node == self.address {
            return true;
        }
        if let Some((id, _)) = self.pool.get().and_then(|p| p.member_at(node)) {
            return id == self.id;
        }
        match addr::resolve_node(node) {
            Ok(a) if a == self.listen => true,
            Ok(a) if a.port() == self.listen.port() && self.listen.ip().is_unspecified() => {
                // Listening on every address: local if we can bind its IP.
                std::net::UdpSocket::bind((a.ip(), 0)).is_ok()
            }
            _ => false,
        }
    }

    pub(crate) fn is_local_brick(&self, b: &BrickSpec) -> bool {
        self.is_local(&b.node)
    }

    /// Brings the bricks served here in line with the configuration: makes
    /// new local bricks, serves those of started volumes, drops the rest.
    /// Runs after every applied change, on a blocking thread.
    pub fn reconcile(&self, applied: &Applied) {
        let volumes = &applied.state.volumes;
        let mut wanted = BTreeSet::new();
        for v in volumes.values() {
            for b in v.bricks.iter().filter(|b| self.is_local_brick(b)) {
                if !self.prepare(v, b, applied.state.forced.contains(&v.name)) {
                    continue;
                }
                if v.state == VolumeState::Started {
                    wanted.insert(b.id);
                    // A brick replaced on this node serves from its new path.
                    if self
                        .brick(&b.id)
                        .is_some_and(|served| served.path != Path::new(&b.path))
                    {
                        self.served.write().expect("served poisoned").remove(&b.id);
                    }
                    if self.brick(&b.id).is_none() {
                        self.open_brick(v, b);
                    }
                }
            }
        }
        self.served
            .write()
            .expect("served poisoned")
            .retain(|id, _| wanted.contains(id));
        self.note_profiling(volumes);
    }

    /// Initializes a local brick the first time this node sees it.
    fn prepare(&self, v: &VolumeSpec, b: &BrickSpec, force: bool) -> bool {
        let mut prepared = self.prepared.lock().expect("prepared poisoned");
        match prepared.get(&b.id) {
            Some(path) if *path == b.path => return true,
            // Recorded before paths were (the old set form): the brick was
            // made where the configuration still says.
            Some(path) if path.is_empty() => {
                prepared.insert(b.id, b.path.clone());
                self.save_prepared(&prepared);
                return true;
            }
            _ => {}
        }
        match Brick::initialize(Path::new(&b.path), b.id, v.id, &v.name, force) {
            Ok(()) => {
                prepared.insert(b.id, b.path.clone());
                self.save_prepared(&prepared);
                tracing::info!(volume = %v.name, brick = %b.path, "brick prepared");
                true
            }
            Err(e) => {
                tracing::error!(volume = %v.name, brick = %b.path, error = %format!("{e:#}"), "brick not prepared");
                self.brick_errors
                    .lock()
                    .expect("poisoned")
                    .insert(b.id, format!("preparing brick {}: {e:#}", b.label()));
                false
            }
        }
    }

    fn save_prepared(&self, prepared: &BTreeMap<Uuid, String>) {
        if let Err(e) = serde_json::to_vec(prepared)
            .map_err(anyhow::Error::from)
            .and_then(|bytes| state::write_private(&prepared_file(&self.state_dir), &bytes))
        {
            tracing::error!(error = %format!("{e:#}"), "could not record a prepared brick");
        }
    }

    /// `volume start VOL force`: a local brick of a started volume whose
    /// directory is now empty and unmarked (its disk was replaced) is made
    /// again and served, and the self-heal daemon rebuilds it from its
    /// replicas with a full crawl. A directory with anything in it is
    /// never touched: that may be a disk that is not mounted yet.
    pub(crate) fn revive_empty_bricks(&self, v: &VolumeSpec) -> Vec<String> {
        let mut revived = Vec::new();
        if v.state != VolumeState::Started {
            return revived;
        }
        for b in v
            .bricks
            .iter()
            .filter(|b| self.is_local_brick(b) && !self.is_served(&b.id))
        {
            let path = Path::new(&b.path);
            let empty =
                std::fs::read_dir(path).is_ok_and(|mut d| d.all(|e| e.is_ok_and(|e| e.file_name() == "lost+found")));
            if !empty {
                continue;
            }
            match Brick::initialize(path, b.id, v.id, &v.name, false) {
                Ok(()) => {
                    tracing::warn!(volume = %v.name, brick = %b.path, "empty brick made again; a full heal rebuilds it");
                    self.open_brick(v, b);
                    revived.push(b.label());
                }
                Err(e) => {
                    tracing::error!(volume = %v.name, brick = %b.path, error = %format!("{e:#}"), "could not make the brick again");
                }
            }
        }
        if !revived.is_empty() && v.replica >= 2 {
            self.shd.ask(&v.name, true);
        }
        revived
    }

    fn open_brick(&self, v: &VolumeSpec, b: &BrickSpec) {
        match Brick::open_existing(Path::new(&b.path), b.id, v.id) {
            Ok(brick) => {
                tracing::info!(volume = %v.name, brick = %b.path, "serving brick");
                self.served
                    .write()
                    .expect("served poisoned")
                    .insert(b.id, Arc::new(brick));
                self.brick_errors.lock().expect("poisoned").remove(&b.id);
            }
            Err(e) => {
                tracing::error!(volume = %v.name, brick = %b.path, error = %format!("{e:#}"), "brick not served");
                self.brick_errors
                    .lock()
                    .expect("poisoned")
                    .insert(b.id, format!("{e:#}"));
            }
        }
    }

    /// Profiling counters restart when `volume profile start` commits, on
    /// every node with bricks of the volume.
    fn note_profiling(&self, volumes: &BTreeMap<String, VolumeSpec>) {
        let now: BTreeSet<String> = volumes
            .values()
            .filter(|v| crate::diagnostics::profiling(v))
            .map(|v| v.name.clone())
            .collect();
        let mut before = self.profiled.lock().expect("profiled poisoned");
        for name in now.difference(&before) {
            for b in volumes[name].bricks.iter().filter(|b| self.is_local_brick(b)) {
                self.stats.brick(b.id).reset();
            }
        }
        *before = now;
    }

    pub(crate) fn brick_error(&self, id: &Uuid) -> Option<String> {
        self.brick_errors.lock().expect("poisoned").get(id).cloned()
    }

    /// `host:/path` of every brick served now, by id.
    pub fn brick_labels(&self) -> HashMap<Uuid, String> {
        let served = self.served.read().expect("served poisoned");
        self.applied()
            .state
            .volumes
            .values()
            .flat_map(|v| v.bricks.iter())
            .filter(|b| served.contains_key(&b.id))
            .map(|b| (b.id, b.label()))
            .collect()
    }

    pub fn is_revoked(&self, client: &str) -> bool {
        self.applied().state.clients_revoked.contains(client)
    }

    fn admits(options: &BTreeMap<String, String>, ip: std::net::IpAddr) -> bool {
        use cairn_common::options::{address_matches, effective};
        let addr = ip.to_string();
        address_matches(effective(options, "auth.allow"), &addr)
            && !address_matches(effective(options, "auth.reject"), &addr)
    }

    /// May a client at `ip` use the volume holding this brick?
    pub fn brick_admits(&self, brick: &Uuid, ip: std::net::IpAddr) -> bool {
        self.applied()
            .state
            .volumes
            .values()
            .find(|v| v.bricks.iter().any(|b| b.id == *brick))
            .is_none_or(|v| Self::admits(&v.options, ip))
    }

    /// `server.root-squash` of the volume holding this brick, if on.
    pub fn root_squash(&self, brick: &Uuid) -> Option<crate::access::Squash> {
        use cairn_common::options::{effective, parse_bool};
        let applied = self.applied();
        let volume = applied
            .state
            .volumes
            .values()
            .find(|v| v.bricks.iter().any(|b| b.id == *brick))?;
        let id = |key| effective(&volume.options, key).parse::<u32>().ok();
        match parse_bool(effective(&volume.options, "server.root-squash")) {
            Some(true) => Some(crate::access::Squash {
                // Stored values were validated; a default is the fallback
                // only for a spec written by hand.
                anon_uid: id("server.anonuid").unwrap_or(65534),
                anon_gid: id("server.anongid").unwrap_or(65534),
            }),
            _ => None,
        }
    }

    pub fn volume_admits(&self, name: &str, ip: std::net::IpAddr) -> bool {
        self.applied()
            .state
            .volumes
            .get(name)
            .is_none_or(|v| Self::admits(&v.options, ip))
    }

    pub fn brick(&self, id: &Uuid) -> Option<Arc<Brick>> {
        self.served.read().expect("served poisoned").get(id).cloned()
    }

    pub(crate) fn is_served(&self, id: &Uuid) -> bool {
        self.served.read().expect("served poisoned").contains_key(id)
    }
}

/// `prepared.json`: brick id → path, or (before `replace-brick`) a set
/// of ids, read as paths not yet known (empty).
fn parse_prepared(bytes: &[u8]) -> serde_json::Result<BTreeMap<Uuid, String>> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Form {
        Paths(BTreeMap<Uuid, String>),
        Ids(BTreeSet<Uuid>),
    }
    Ok(match serde_json::from_slice(bytes)? {
        Form::Paths(m) => m,
        Form::Ids(ids) => ids.into_iter().map(|id| (id, String::new())).collect(),
    })
}

/// This process's memory from /proc/self/status.
pub(crate) fn process_memory() -> Option<cairn_common::proto::ProcessMemory> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |key: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    Some(cairn_common::proto::ProcessMemory {
        rss_kib: field("VmRSS:")?,
        peak_rss_kib: field("VmHWM:")?,
        virtual_kib: field("VmSize:")?,
        threads: field("Threads:")?,
    })
}

/// The file system under a brick: statvfs figures and its mount entry.
pub(crate) fn brick_detail(path: &Path) -> Option<cairn_common::proto::BrickDetail> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: valid C string and out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs succeeded.
    let st = unsafe { st.assume_init() };
    let canonical = path.canonicalize().ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // The mount whose mount point is the longest prefix of the brick path.
    let (fs_type, device, options) = mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            let point = f.get(4)?.replace("\\040", " ");
            (canonical.starts_with(&point) && r.len() >= 2).then(|| {
                (
                    point.len(),
                    r[0].to_string(),
                    r[1].to_string(),
                    f.get(5).copied().unwrap_or("").to_string(),
                )
            })
        })
        .max_by_key(|m| m.0)
        .map(|(_, t, d, o)| (t, d, o))?;
    let frsize = st.f_frsize;
    Some(cairn_common::proto::BrickDetail {
        fs_type,
        device,
        mount_options: options,
        free_bytes: st.f_bavail * frsize,
        total_bytes: st.f_blocks * frsize,
        inodes: st.f_files,
        free_inodes: st.f_ffree,
    })
}

/// Is `path` (or, if it does not exist yet, its nearest existing ancestor)
/// on the same file system as `/`?
pub(crate) fn on_root_filesystem(path: &Path) -> anyhow::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::metadata("/")?.dev();
    for p in path.ancestors() {
        if let Ok(m) = std::fs::metadata(p) {
            return Ok(m.dev() == root);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepared_json_reads_both_forms() {
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        let old = serde_json::to_vec(&BTreeSet::from([a, b])).unwrap();
        let m = parse_prepared(&old).unwrap();
        assert_eq!(m.len(), 2);
        assert!(m.values().all(String::is_empty));
        let new = serde_json::to_vec(&BTreeMap::from([(a, "/b/1".to_string())])).unwrap();
        assert_eq!(parse_prepared(&new).unwrap()[&a], "/b/1");
        assert!(parse_prepared(b"{\"x\": 1}").is_err());
        assert!(parse_prepared(b"[]").unwrap().is_empty());
    }
}
