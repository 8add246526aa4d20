//! The node: its identity and credentials in the state dir, the volume
//! configuration it holds, and the bricks it currently serves.

use crate::store::Brick;
use anyhow::{bail, Context};
use cairn_common::addr::{self, BrickAddr};
use cairn_common::proto::{AdminReply, AdminRequest, BrickSpec, BrickStatus, VolumeSpec, VolumeState, VolumeStatus};
use cairn_common::state;
use cairn_common::tls::{self, Credentials, Role};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
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
    pub credentials: Credentials,
    /// Keys QUIC stateless resets; kept in the state dir across restarts.
    pub reset_secret: Vec<u8>,
    volumes: Mutex<BTreeMap<String, VolumeSpec>>,
    served: RwLock<HashMap<Uuid, Arc<Brick>>>,
    /// Client certificate names refused from now on (`client-cert revoke`).
    revoked: RwLock<std::collections::BTreeSet<String>>,
    /// I/O statistics of the bricks served here.
    pub stats: crate::stats::NodeStats,
    brick_errors: Mutex<HashMap<Uuid, String>>,
}

fn volumes_file(dir: &Path) -> PathBuf {
    dir.join("volumes.json")
}

fn clients_file(dir: &Path) -> PathBuf {
    dir.join("clients.json")
}

/// Client certificates this node issued, and those revoked.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct ClientRegistry {
    issued: std::collections::BTreeSet<String>,
    revoked: std::collections::BTreeSet<String>,
}

impl Node {
    /// Loads (or on first start creates) the node's state: id, pool CA,
    /// node and client certificates, volume configuration.
    pub fn load_or_init(state_dir: &Path, listen: &str) -> anyhow::Result<Node> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .with_context(|| format!("creating state dir {}", state_dir.display()))?;
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
            if !cert.exists() || !key.exists() {
                let ca_key = std::fs::read_to_string(state::ca_key(state_dir)).context("reading the pool CA key")?;
                let (c, k) = tls::issue(&ca, &ca_key, &role)?;
                state::write_private(&key, k.as_bytes())?;
                state::write_private(&cert, c.as_bytes())?;
            }
        }
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
        let volumes = match std::fs::read(volumes_file(state_dir)) {
            Ok(bytes) => serde_json::from_slice(&bytes).context("parsing volumes.json")?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e).context("reading volumes.json"),
        };
        let address = addr::canonical_node(listen)?;
        let listen = addr::resolve_node(listen)?;
        state::write_private(&state::listen_file(state_dir), address.as_bytes())?;
        Ok(Node {
            id,
            state_dir: state_dir.to_path_buf(),
            address,
            listen,
            credentials,
            reset_secret,
            volumes: Mutex::new(volumes),
            served: RwLock::new(HashMap::new()),
            stats: crate::stats::NodeStats::default(),
            revoked: RwLock::new(
                std::fs::read(clients_file(state_dir))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<ClientRegistry>(&b).ok())
                    .map(|r| r.revoked)
                    .unwrap_or_default(),
            ),
            brick_errors: Mutex::new(HashMap::new()),
        })
    }

    fn save(&self, volumes: &BTreeMap<String, VolumeSpec>) -> anyhow::Result<()> {
        state::write_private(&volumes_file(&self.state_dir), &serde_json::to_vec_pretty(volumes)?)
    }

    /// Is this brick address served by this node?
    fn is_local(&self, node: &str) -> bool {
        if node == self.address {
            return true;
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

    /// Opens and serves the bricks of every started volume (at start-up).
    pub fn serve_started_volumes(&self) {
        let volumes = self.volumes.lock().expect("volumes poisoned").clone();
        for spec in volumes.values().filter(|v| v.state == VolumeState::Started) {
            self.open_bricks(spec);
        }
    }

    fn open_bricks(&self, spec: &VolumeSpec) {
        for b in spec.bricks.iter().filter(|b| self.is_local(&b.node)) {
            match Brick::open_existing(Path::new(&b.path), b.id, spec.id) {
                Ok(brick) => {
                    tracing::info!(volume = %spec.name, brick = %b.path, "serving brick");
                    self.served
                        .write()
                        .expect("served poisoned")
                        .insert(b.id, Arc::new(brick));
                    self.brick_errors.lock().expect("poisoned").remove(&b.id);
                }
                Err(e) => {
                    tracing::error!(volume = %spec.name, brick = %b.path, error = %format!("{e:#}"), "brick not served");
                    self.brick_errors
                        .lock()
                        .expect("poisoned")
                        .insert(b.id, format!("{e:#}"));
                }
            }
        }
    }

    fn close_bricks(&self, spec: &VolumeSpec) {
        let mut served = self.served.write().expect("served poisoned");
        for b in &spec.bricks {
            served.remove(&b.id);
        }
    }

    /// `host:/path` of every brick served now, by id.
    pub fn brick_labels(&self) -> HashMap<Uuid, String> {
        let served = self.served.read().expect("served poisoned");
        let vols = self.volumes.lock().expect("volumes poisoned");
        vols.values()
            .flat_map(|v| v.bricks.iter())
            .filter(|b| served.contains_key(&b.id))
            .map(|b| (b.id, b.label()))
            .collect()
    }

    pub fn is_revoked(&self, client: &str) -> bool {
        self.revoked.read().expect("revoked poisoned").contains(client)
    }

    fn admits(options: &BTreeMap<String, String>, ip: std::net::IpAddr) -> bool {
        use cairn_common::options::{address_matches, effective};
        let addr = ip.to_string();
        address_matches(effective(options, "auth.allow"), &addr)
            && !address_matches(effective(options, "auth.reject"), &addr)
    }

    /// May a client at `ip` use the volume holding this brick?
    pub fn brick_admits(&self, brick: &Uuid, ip: std::net::IpAddr) -> bool {
        let vols = self.volumes.lock().expect("volumes poisoned");
        vols.values()
            .find(|v| v.bricks.iter().any(|b| b.id == *brick))
            .is_none_or(|v| Self::admits(&v.options, ip))
    }

    pub fn volume_admits(&self, name: &str, ip: std::net::IpAddr) -> bool {
        let vols = self.volumes.lock().expect("volumes poisoned");
        vols.get(name).is_none_or(|v| Self::admits(&v.options, ip))
    }

    /// Issues a client certificate signed by the pool CA.
    fn client_cert_issue(&self, name: &str) -> anyhow::Result<AdminReply> {
        let mut registry = self.clients()?;
        if registry.revoked.contains(name) {
            bail!("client name {name} was revoked; issue a certificate under another name");
        }
        let ca = std::fs::read_to_string(state::ca_cert(&self.state_dir))?;
        let ca_key = std::fs::read_to_string(state::ca_key(&self.state_dir))
            .context("this node does not hold the pool CA key")?;
        let (cert_pem, key_pem) = tls::issue(&ca, &ca_key, &Role::Client(name.to_string()))?;
        registry.issued.insert(name.to_string());
        state::write_private(&clients_file(&self.state_dir), &serde_json::to_vec_pretty(&registry)?)?;
        Ok(AdminReply::ClientCert {
            ca_pem: ca,
            cert_pem,
            key_pem,
        })
    }

    fn client_cert_revoke(&self, name: &str) -> anyhow::Result<AdminReply> {
        let mut registry = self.clients()?;
        if !registry.issued.contains(name) {
            bail!("no client certificate {name} was issued here");
        }
        registry.revoked.insert(name.to_string());
        state::write_private(&clients_file(&self.state_dir), &serde_json::to_vec_pretty(&registry)?)?;
        self.revoked.write().expect("revoked poisoned").insert(name.to_string());
        Ok(AdminReply::Done {
            message: format!("client-cert revoke: {name}: success"),
        })
    }

    fn clients(&self) -> anyhow::Result<ClientRegistry> {
        match std::fs::read(clients_file(&self.state_dir)) {
            Ok(b) => serde_json::from_slice(&b).context("parsing clients.json"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ClientRegistry::default()),
            Err(e) => Err(e).context("reading clients.json"),
        }
    }

    pub fn brick(&self, id: &Uuid) -> Option<Arc<Brick>> {
        self.served.read().expect("served poisoned").get(id).cloned()
    }

    /// Handles a management request; errors become one-line CLI messages.
    pub fn admin(&self, req: AdminRequest) -> anyhow::Result<AdminReply> {
        match req {
            AdminRequest::VolumeCreate { name, bricks, force } => self.volume_create(&name, &bricks, force),
            AdminRequest::VolumeStart { name, force } => self.volume_start(&name, force),
            AdminRequest::VolumeStop { name, force: _ } => self.volume_stop(&name),
            AdminRequest::VolumeDelete { name } => self.volume_delete(&name),
            AdminRequest::VolumeInfo { name } => Ok(AdminReply::Volumes(self.selected(name.as_deref())?)),
            AdminRequest::VolumeStatus { name } => {
                let vols = self.selected(name.as_deref())?;
                if let Some(v) = vols
                    .iter()
                    .find(|v| v.state != VolumeState::Started)
                    .filter(|_| name.is_some())
                {
                    bail!("Volume {} is not started", v.name);
                }
                Ok(AdminReply::Status(
                    vols.iter()
                        .filter(|v| v.state == VolumeState::Started)
                        .map(|v| self.status_of(v))
                        .collect(),
                ))
            }
            AdminRequest::VolumeSet { name, key, value } => self.volume_set(&name, &key, &value),
            AdminRequest::VolumeGet { name, key } => {
                let vols = self.volumes.lock().expect("volumes poisoned");
                let spec = vols
                    .get(&name)
                    .with_context(|| format!("Volume {name} does not exist"))?;
                let keys: Vec<&str> = match &key {
                    Some(k) => {
                        cairn_common::options::find(k).with_context(|| format!("option {k} does not exist"))?;
                        vec![k.as_str()]
                    }
                    None => cairn_common::options::OPTIONS.iter().map(|o| o.key).collect(),
                };
                Ok(AdminReply::Options(
                    keys.into_iter()
                        .map(|k| {
                            let v = cairn_common::options::effective(&spec.options, k).to_string();
                            (k.to_string(), v, !spec.options.contains_key(k))
                        })
                        .collect(),
                ))
            }
            AdminRequest::VolumeReset { name, key } => self.volume_reset(&name, key.as_deref()),
            AdminRequest::VolumeProfile { name, action } => self.volume_profile(&name, action),
            AdminRequest::ClientCertIssue { name } => self.client_cert_issue(&name),
            AdminRequest::ClientCertRevoke { name } => self.client_cert_revoke(&name),
            AdminRequest::VolumeTop {
                name,
                metric,
                brick,
                count,
                block_size,
                blocks,
            } => self.volume_top(&name, &metric, brick.as_deref(), count, block_size, blocks),
            AdminRequest::GetVolume { name } => {
                let vols = self.volumes.lock().expect("volumes poisoned");
                let spec = vols
                    .get(&name)
                    .with_context(|| format!("Volume {name} does not exist"))?;
                if spec.state != VolumeState::Started {
                    bail!("Volume {name} is not started");
                }
                Ok(AdminReply::Spec(spec.clone()))
            }
        }
    }

    fn selected(&self, name: Option<&str>) -> anyhow::Result<Vec<VolumeSpec>> {
        let vols = self.volumes.lock().expect("volumes poisoned");
        match name {
            Some(n) => Ok(vec![vols
                .get(n)
                .with_context(|| format!("Volume {n} does not exist"))?
                .clone()]),
            None => Ok(vols.values().cloned().collect()),
        }
    }

    fn status_of(&self, spec: &VolumeSpec) -> VolumeStatus {
        let served = self.served.read().expect("served poisoned");
        VolumeStatus {
            name: spec.name.clone(),
            state: spec.state,
            bricks: spec
                .bricks
                .iter()
                .map(|b| {
                    let online = served.contains_key(&b.id);
                    BrickStatus {
                        brick: b.clone(),
                        port: online.then_some(self.listen.port()),
                        online,
                        pid: online.then(std::process::id),
                        detail: self
                            .is_local(&b.node)
                            .then(|| brick_detail(Path::new(&b.path)))
                            .flatten(),
                        clients: self
                            .stats
                            .connections_of(&b.id)
                            .into_iter()
                            .map(|c| cairn_common::proto::BrickClient {
                                address: c.address,
                                identity: c.identity,
                                bytes_read: c.bytes_read,
                                bytes_written: c.bytes_written,
                            })
                            .collect(),
                        memory: online.then(process_memory).flatten(),
                    }
                })
                .collect(),
        }
    }

    fn volume_create(&self, name: &str, bricks: &[String], force: bool) -> anyhow::Result<AdminReply> {
        cairn_common::names::check_volume_name(name)?;
        let mut vols = self.volumes.lock().expect("volumes poisoned");
        if vols.contains_key(name) {
            bail!("Volume {name} already exists");
        }
        if bricks.is_empty() {
            bail!("volume create needs at least one brick (NODE:/path)");
        }
        if bricks.len() > 127 {
            bail!("a volume holds at most 127 bricks");
        }
        let mut specs = Vec::new();
        for text in bricks {
            let b = BrickAddr::parse(text)?;
            if !self.is_local(&b.node) {
                bail!(
                    "Host {} is not in 'Peer in Cluster' state (only this node, {}, is in the pool)",
                    b.node,
                    self.address
                );
            }
            self.check_brick_path(&b, &vols, force)?;
            if let Some(other) = specs.iter().find(|o: &&BrickSpec| {
                o.node == b.node && (addr::path_within(&b.path, &o.path) || addr::path_within(&o.path, &b.path))
            }) {
                bail!("Brick: {b} overlaps brick {} of the same command", other.label());
            }
            specs.push(BrickSpec {
                id: Uuid::new_v4(),
                node: b.node,
                path: b.path,
            });
        }
        let volume_id = Uuid::new_v4();
        for b in &specs {
            Brick::initialize(Path::new(&b.path), b.id, volume_id, name, force)
                .with_context(|| format!("preparing brick {}", b.label()))?;
        }
        let spec = VolumeSpec {
            name: name.to_string(),
            id: volume_id,
            state: VolumeState::Created,
            bricks: specs,
            options: BTreeMap::new(),
            version: 1,
        };
        vols.insert(name.to_string(), spec);
        self.save(&vols)?;
        Ok(AdminReply::Done {
            message: format!("volume create: {name}: success: please start the volume to access data"),
        })
    }

    fn check_brick_path(&self, b: &BrickAddr, vols: &BTreeMap<String, VolumeSpec>, force: bool) -> anyhow::Result<()> {
        if b.path == "/" {
            bail!("{b}: the root directory cannot be a brick");
        }
        for v in vols.values() {
            for other in &v.bricks {
                if addr::canonical_node(&other.node).ok().as_deref() == Some(b.node.as_str())
                    && (addr::path_within(&b.path, &other.path) || addr::path_within(&other.path, &b.path))
                {
                    bail!("Brick: {b} overlaps brick {} of volume {}", other.label(), v.name);
                }
            }
        }
        if !force && on_root_filesystem(Path::new(&b.path))? {
            bail!(
                "The brick {b} is being created in the root partition. It is recommended that you don't use the system's root partition for storage backend. Or use 'force' at the end of the command if you want to override this behavior."
            );
        }
        Ok(())
    }

    fn volume_start(&self, name: &str, force: bool) -> anyhow::Result<AdminReply> {
        let mut vols = self.volumes.lock().expect("volumes poisoned");
        let spec = vols
            .get_mut(name)
            .with_context(|| format!("Volume {name} does not exist"))?;
        if spec.state == VolumeState::Started && !force {
            bail!("Volume {name} already started");
        }
        spec.state = VolumeState::Started;
        spec.version += 1;
        let spec = spec.clone();
        self.open_bricks(&spec);
        self.save(&vols)?;
        let errors = self.brick_errors.lock().expect("poisoned");
        if let Some(err) = spec.bricks.iter().find_map(|b| errors.get(&b.id)) {
            bail!("volume start: {name}: failed: {err}");
        }
        Ok(AdminReply::Done {
            message: format!("volume start: {name}: success"),
        })
    }

    fn volume_set(&self, name: &str, key: &str, value: &str) -> anyhow::Result<AdminReply> {
        let value = cairn_common::options::validate(key, value).map_err(|e| anyhow::anyhow!(e))?;
        let mut vols = self.volumes.lock().expect("volumes poisoned");
        let spec = vols
            .get_mut(name)
            .with_context(|| format!("Volume {name} does not exist"))?;
        spec.options.insert(key.to_string(), value);
        spec.version += 1;
        self.save(&vols)?;
        Ok(AdminReply::Done {
            message: "volume set: success".to_string(),
        })
    }

    pub(crate) fn volume_spec(&self, name: &str) -> anyhow::Result<VolumeSpec> {
        let vols = self.volumes.lock().expect("volumes poisoned");
        Ok(vols
            .get(name)
            .with_context(|| format!("Volume {name} does not exist"))?
            .clone())
    }

    pub(crate) fn is_local_brick(&self, b: &BrickSpec) -> bool {
        self.is_local(&b.node)
    }

    /// Sets (Some) or resets (None) several options in one change.
    pub(crate) fn set_options(&self, name: &str, changes: &[(&str, Option<&str>)]) -> anyhow::Result<()> {
        let mut vols = self.volumes.lock().expect("volumes poisoned");
        let spec = vols
            .get_mut(name)
            .with_context(|| format!("Volume {name} does not exist"))?;
        for (k, v) in changes {
            match v {
                Some(v) => spec.options.insert(k.to_string(), v.to_string()),
                None => spec.options.remove(*k),
            };
        }
        spec.version += 1;
        self.save(&vols)
    }

    fn volume_reset(&self, name: &str, key: Option<&str>) -> anyhow::Result<AdminReply> {
        let mut vols = self.volumes.lock().expect("volumes poisoned");
        let spec = vols
            .get_mut(name)
            .with_context(|| format!("Volume {name} does not exist"))?;
        match key {
            Some(k) => {
                cairn_common::options::find(k).with_context(|| format!("option {k} does not exist"))?;
                spec.options.remove(k);
            }
            None => spec.options.clear(),
        }
        spec.version += 1;
        self.save(&vols)?;
        Ok(AdminReply::Done {
            message: "volume reset: success: reset volume successful".to_string(),
        })
    }

    fn volume_stop(&self, name: &str) -> anyhow::Result<AdminReply> {
        let mut vols = self.volumes.lock().expect("volumes poisoned");
        let spec = vols
            .get_mut(name)
            .with_context(|| format!("Volume {name} does not exist"))?;
        if spec.state != VolumeState::Started {
            bail!("Volume {name} is not in the started state");
        }
        spec.state = VolumeState::Stopped;
        spec.version += 1;
        let spec = spec.clone();
        self.close_bricks(&spec);
        self.save(&vols)?;
        Ok(AdminReply::Done {
            message: format!("volume stop: {name}: success"),
        })
    }

    fn volume_delete(&self, name: &str) -> anyhow::Result<AdminReply> {
        let mut vols = self.volumes.lock().expect("volumes poisoned");
        let spec = vols
            .get(name)
            .with_context(|| format!("Volume {name} does not exist"))?;
        if spec.state == VolumeState::Started {
            bail!("Volume {name} has been started.Volume needs to be stopped before deletion.");
        }
        vols.remove(name);
        self.save(&vols)?;
        Ok(AdminReply::Done {
            message: format!("volume delete: {name}: success"),
        })
    }
}

/// This process's memory from /proc/self/status.
fn process_memory() -> Option<cairn_common::proto::ProcessMemory> {
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
fn brick_detail(path: &Path) -> Option<cairn_common::proto::BrickDetail> {
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
fn on_root_filesystem(path: &Path) -> anyhow::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::metadata("/")?.dev();
    for p in path.ancestors() {
        if let Ok(m) = std::fs::metadata(p) {
            return Ok(m.dev() == root);
        }
    }
    Ok(true)
}
