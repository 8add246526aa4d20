//! Management requests (the CLI's verbs) as the node that receives them
//! carries them out: validate on every node concerned, commit the change
//! through the pool, then report, asking the other members for their part
//! where a report spans the pool (status, profile, top).
//!
//! Runs on a blocking thread; pool calls are awaited with `block_on`.

use crate::node::{brick_detail, on_root_filesystem, process_memory, Node};
use crate::pool::state::{busy_message, remove_brick_pending, task_running, Command, MAX_BRICKS};
use anyhow::{bail, Context};
use cairn_common::addr::{self, BrickAddr};
use cairn_common::proto::{
    AdminReply, AdminRequest, BrickSpec, BrickStatus, PeerInfo, PoolReply, PoolRequest, RebalanceAction, RebalanceKind,
    RebalanceStatus, RebalanceTask, RemoveBrickAction, TaskState, VolumeSpec, VolumeState, VolumeStatus,
};
use cairn_common::tls;
use cairn_common::transport::RpcError;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long a report waits for another member's part.
const FAN_OUT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `volume start` waits for every reachable brick to come online.
const START_WAIT: Duration = Duration::from_secs(15);

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Handle::current().block_on(f)
}

/// The self-heal daemon's name in `volume status`, as gluster's.
const SHD_NAME: &str = "Self-heal Daemon";

/// Does the volume have self-heal daemons (replicated, and not turned off)?
fn shd_configured(spec: &VolumeSpec) -> bool {
    spec.replica >= 2 && cairn_common::options::effective(&spec.options, "cluster.self-heal-daemon") == "on"
}

fn done(message: impl Into<String>) -> anyhow::Result<AdminReply> {
    Ok(AdminReply::Done {
        message: message.into(),
    })
}

impl Node {
    /// Handles a management request; errors become one-line CLI messages.
    pub fn admin(&self, req: AdminRequest) -> anyhow::Result<AdminReply> {
        match req {
            AdminRequest::VolumeCreate {
                name,
                bricks,
                force,
                replica,
                arbiter,
            } => self.volume_create(&name, &bricks, force, replica, arbiter),
            AdminRequest::VolumeStart { name, force } => self.volume_start(&name, force),
            AdminRequest::VolumeStop { name, force: _ } => self.volume_stop(&name),
            AdminRequest::VolumeDelete { name } => {
                self.volume_spec(&name)?;
                self.commit(Command::DeleteVolume { name: name.clone() })?;
                done(format!("volume delete: {name}: success"))
            }
            AdminRequest::VolumeInfo { name } => Ok(AdminReply::Volumes(self.selected(name.as_deref())?)),
            AdminRequest::VolumeStatus { name } => self.volume_status(name.as_deref()),
            AdminRequest::VolumeSet { name, key, value } => {
                let value = cairn_common::options::validate(&key, &value).map_err(|e| anyhow::anyhow!(e))?;
                self.set_options(&name, &[(&key, Some(&value))])?;
                done("volume set: success")
            }
            AdminRequest::VolumeGet { name, key } => self.volume_get(&name, key.as_deref()),
            AdminRequest::VolumeReset { name, key } => {
                match key {
                    Some(k) => {
                        cairn_common::options::find(&k).with_context(|| format!("option {k} does not exist"))?;
                        self.set_options(&name, &[(&k, None)])?;
                    }
                    None => {
                        self.volume_spec(&name)?;
                        self.commit(Command::ClearOptions { name })?;
                    }
                }
                done("volume reset: success: reset volume successful")
            }
            AdminRequest::VolumeProfile { name, action } => {
                if action == cairn_common::proto::ProfileAction::Info {
                    let spec = self.volume_spec(&name)?;
                    if !crate::diagnostics::profiling(&spec) {
                        bail!("Profile on Volume {name} is not started");
                    }
                    return self.gather(&spec, None, AdminRequest::VolumeProfile { name, action });
                }
                self.volume_profile(&name, action)
            }
            AdminRequest::VolumeTop {
                ref name, ref brick, ..
            } => {
                let spec = self.volume_spec(name)?;
                let only = match brick {
                    Some(b) => {
                        let b = BrickAddr::parse(b)?;
                        let owner = spec
                            .bricks
                            .iter()
                            .find(|x| x.path == b.path && addr::same_node(&x.node, &b.node))
                            .with_context(|| format!("brick {b} is not a brick of volume {name}"))?;
                        Some(owner.node.clone())
                    }
                    None => None,
                };
                self.gather(&spec, only, req.clone())
            }
            AdminRequest::ClientCertIssue { name } => self.client_cert_issue(&name),
            AdminRequest::ClientCertRevoke { name } => {
                self.commit(Command::RevokeClient { name: name.clone() })?;
                done(format!("client-cert revoke: {name}: success"))
            }
            AdminRequest::GetVolume { name } => {
                let spec = self.volume_spec(&name)?;
                if spec.state != VolumeState::Started {
                    bail!("Volume {name} is not started");
                }
                Ok(AdminReply::Spec(spec))
            }
            AdminRequest::PeerProbe { host } => self.peer_probe(&host),
            AdminRequest::PeerDetach { host, force } => self.peer_detach(&host, force),
            AdminRequest::PeerList => Ok(AdminReply::Peers(self.peer_list())),
            AdminRequest::VolumeHealInfo { name, split_brain } => self.heal_info(&name, split_brain),
            AdminRequest::VolumeHeal { name, full } => self.heal_launch(&name, full),
            AdminRequest::VolumeHealStatistics { name, .. } => self.heal_statistics(&name),
            AdminRequest::VolumeAddBrick {
                name,
                bricks,
                replica,
                force,
            } => self.volume_add_brick(&name, &bricks, replica, force),
            AdminRequest::VolumeRemoveBrick { name, bricks, action } => {
                self.volume_remove_brick(&name, &bricks, action)
            }
            AdminRequest::VolumeReplaceBrick { name, old, new } => self.volume_replace_brick(&name, &old, &new),
            AdminRequest::VolumeRebalance { name, action } => self.volume_rebalance(&name, action),
        }
    }

    /// This node's part of a pool-wide report.
    pub fn admin_local(&self, req: AdminRequest) -> anyhow::Result<AdminReply> {
        match req {
            AdminRequest::VolumeStatus { name: Some(name) } => {
                let spec = self.volume_spec(&name)?;
                Ok(AdminReply::Status(vec![self.local_status(&spec)]))
            }
            AdminRequest::VolumeProfile { name, action } => self.volume_profile(&name, action),
            AdminRequest::VolumeTop {
                name,
                metric,
                brick,
                count,
                block_size,
                blocks,
            } => self.volume_top(&name, &metric, brick.as_deref(), count, block_size, blocks),
            AdminRequest::VolumeHealInfo { name, .. } => {
                let spec = self.volume_spec(&name)?;
                let mut out = Vec::new();
                for b in spec.bricks.iter().filter(|b| self.is_local_brick(b)) {
                    let entries = match self.brick(&b.id) {
                        Some(brick) => Some(
                            brick
                                .pending_heal()
                                .map_err(|e| anyhow::anyhow!("{}: {}", b.label(), e.context))?
                                .into_iter()
                                .map(|(gfid, path, counters)| cairn_common::proto::HealEntry {
                                    gfid,
                                    path,
                                    counters,
                                    split_brain: false,
                                })
                                .collect(),
                        ),
                        None => None,
                    };
                    out.push(cairn_common::proto::BrickHealInfo {
                        brick: b.label(),
                        brick_id: b.id,
                        entries,
                    });
                }
                Ok(AdminReply::HealInfo(out))
            }
            AdminRequest::VolumeHeal { name, full } => {
                if !self.shd.ask(&name, full) {
                    bail!("the self-heal daemon is not running on {}", self.address);
                }
                done("launched")
            }
            AdminRequest::VolumeHealStatistics { name, .. } => self.local_heal_statistics(&name),
            AdminRequest::VolumeStart { name, .. } => {
                let spec = self.volume_spec(&name)?;
                let revived = self.revive_empty_bricks(&spec);
                done(format!("revived: {}", revived.join(", ")))
            }
            AdminRequest::VolumeRebalance {
                name,
                action: RebalanceAction::Status,
            } => {
                let spec = self.volume_spec(&name)?;
                Ok(AdminReply::Rebalance(Box::new(RebalanceStatus {
                    volume: name,
                    task: spec.task.clone(),
                    nodes: vec![self.rebalance.local_status(self, &spec)],
                })))
            }
            other => bail!("{other:?} is not a per-node report"),
        }
    }

    /// Commits a change through the pool and waits until it applies here.
    fn commit(&self, cmd: Command) -> anyhow::Result<()> {
        block_on(self.pool().propose(cmd))
    }

    /// Sets (Some) or resets (None) several options in one change.
    pub(crate) fn set_options(&self, name: &str, changes: &[(&str, Option<&str>)]) -> anyhow::Result<()> {
        self.volume_spec(name)?;
        self.commit(Command::SetOptions {
            name: name.to_string(),
            changes: changes
                .iter()
                .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
                .collect(),
        })
    }

    fn selected(&self, name: Option<&str>) -> anyhow::Result<Vec<VolumeSpec>> {
        match name {
            Some(n) => Ok(vec![self.volume_spec(n)?]),
            None => Ok(self.applied().state.volumes.values().cloned().collect()),
        }
    }

    fn volume_get(&self, name: &str, key: Option<&str>) -> anyhow::Result<AdminReply> {
        let spec = self.volume_spec(name)?;
        let keys: Vec<&str> = match key {
            Some(k) => {
                cairn_common::options::find(k).with_context(|| format!("option {k} does not exist"))?;
                vec![k]
            }
            None => cairn_common::options::OPTIONS.iter().map(|o| o.key).collect(),
        };
        Ok(AdminReply::Options(
            keys.into_iter()
                .map(|k| {
                    let mut v = cairn_common::options::effective(&spec.options, k).to_string();
                    if k == "cluster.quorum-type" && v.is_empty() {
                        // gluster's default depends on the replica count.
                        v = if spec.replica >= 3 || spec.arbiter {
                            "auto"
                        } else {
                            "none"
                        }
                        .to_string();
                    }
                    (k.to_string(), v, !spec.options.contains_key(k))
                })
                .collect(),
        ))
    }

    fn volume_create(
        &self,
        name: &str,
        bricks: &[String],
        force: bool,
        replica: u32,
        arbiter: bool,
    ) -> anyhow::Result<AdminReply> {
        cairn_common::names::check_volume_name(name)?;
        let applied = self.applied();
        if applied.state.volumes.contains_key(name) {
            bail!("Volume {name} already exists");
        }
        if bricks.is_empty() {
            bail!("volume create needs at least one brick (NODE:/path)");
        }
        if bricks.len() > 127 {
            bail!("a volume holds at most 127 bricks");
        }
        let specs = self.new_bricks(bricks)?;
        check_replica_sets(&specs, replica, arbiter, force)?;
        let spec = VolumeSpec {
            name: name.to_string(),
            id: Uuid::new_v4(),
            state: VolumeState::Created,
            bricks: specs,
            options: BTreeMap::new(),
            version: 1,
            replica,
            arbiter,
            layout_commit: cairn_common::layout::INITIAL_COMMIT,
            decommissioned: Vec::new(),
            task: None,
        };
        if let Some(msg) = applied.state.overlap(&spec) {
            bail!(msg);
        }
        self.check_on_nodes(&spec.bricks, force)?;
        self.commit(Command::CreateVolume { spec, force })?;
        done(format!(
            "volume create: {name}: success: please start the volume to access data"
        ))
    }

    /// Bricks as the CLI names them (`NODE:/path`), each placed on the pool
    /// member NODE names, with new ids; bricks of one command may not nest.
    fn new_bricks(&self, bricks: &[String]) -> anyhow::Result<Vec<BrickSpec>> {
        let pool = self.pool();
        let mut specs: Vec<BrickSpec> = Vec::new();
        for text in bricks {
            let b = BrickAddr::parse(text)?;
            if b.path == "/" {
                bail!("{b}: the root directory cannot be a brick");
            }
            let Some((_, member)) = pool.member_at(&b.node) else {
                bail!("Host {} is not in 'Peer in Cluster' state", b.node);
            };
            if let Some(other) = specs.iter().find(|o| {
                o.node == member.address && (addr::path_within(&b.path, &o.path) || addr::path_within(&o.path, &b.path))
            }) {
                bail!("Brick: {b} overlaps brick {} of the same command", other.label());
            }
            specs.push(BrickSpec {
                id: Uuid::new_v4(),
                node: member.address,
                path: b.path,
            });
        }
        Ok(specs)
    }

    /// Every node checks its own new bricks (`CheckBricks`) before anything
    /// is committed.
    fn check_on_nodes(&self, bricks: &[BrickSpec], force: bool) -> anyhow::Result<()> {
        let mut by_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for b in bricks {
            by_node.entry(b.node.clone()).or_default().push(b.path.clone());
        }
        for (node, paths) in by_node {
            if self.is_local(&node) {
                self.check_bricks(&paths, force)?;
            } else {
                self.ask(&node, PoolRequest::CheckBricks { paths, force })
                    .with_context(|| format!("checking bricks on {node}"))?;
            }
        }
        Ok(())
    }

    /// The brick checks of `volume create` for bricks on this node.
    pub fn check_bricks(&self, paths: &[String], force: bool) -> anyhow::Result<()> {
        for path in paths {
            let p = Path::new(path);
            if !force && on_root_filesystem(p)? {
                bail!(
                    "The brick {}:{path} is being created in the root partition. It is recommended that you don't use the system's root partition for storage backend. Or use 'force' at the end of the command if you want to override this behavior.",
                    addr::split_host_port(&self.address).map(|(h, _)| h).unwrap_or_default()
                );
            }
            crate::store::Brick::check_unclaimed(p, None, force)?;
        }
        Ok(())
    }

    /// One pool request to another member, its error as the member said it.
    fn ask(&self, node: &str, req: PoolRequest) -> anyhow::Result<PoolReply> {
        block_on(self.pool().peers.call(node, req, FAN_OUT_TIMEOUT)).map_err(|e| match e {
            RpcError::Remote { message, .. } => anyhow::anyhow!(message),
            other => anyhow::anyhow!("{node} is not reachable: {other}"),
        })
    }

    fn volume_start(&self, name: &str, force: bool) -> anyhow::Result<AdminReply> {
        let spec = self.volume_spec(name)?;
        if spec.state == VolumeState::Started && !force {
            bail!("Volume {name} already started");
        }
        self.commit(Command::SetVolumeState {
            name: name.to_string(),
            state: VolumeState::Started,
        })?;
        if force {
            // Bricks on replaced (empty) disks are made again everywhere.
            for part in self.per_node(
                &spec,
                None,
                AdminRequest::VolumeStart {
                    name: name.to_string(),
                    force,
                },
            ) {
                if let Err(e) = part {
                    tracing::warn!(volume = %name, error = %format!("{e:#}"), "a node did not check its bricks");
                }
            }
        }
        // As gluster's start waits for its brick processes: wait until every
        // brick on a reachable node is served, or one reports why not.
        let deadline = Instant::now() + START_WAIT;
        loop {
            let status = self.pool_status(&self.volume_spec(name)?);
            if let Some(err) = status.bricks.iter().find_map(|b| b.error.clone()) {
                bail!("volume start: {name}: failed: {err}");
            }
            let waiting: Vec<String> = status
                .bricks
                .iter()
                .filter(|b| !b.online && b.reachable)
                .map(|b| b.brick.label())
                .collect();
            if waiting.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "volume start: {name}: failed: bricks not online in time: {}",
                    waiting.join(", ")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        done(format!("volume start: {name}: success"))
    }

    fn volume_stop(&self, name: &str) -> anyhow::Result<AdminReply> {
        let spec = self.volume_spec(name)?;
        if spec.state != VolumeState::Started {
            bail!("Volume {name} is not in the started state");
        }
        self.commit(Command::SetVolumeState {
            name: name.to_string(),
            state: VolumeState::Stopped,
        })?;
        // Local bricks stop before the answer; other nodes' as they apply.
        let deadline = Instant::now() + Duration::from_secs(5);
        while spec.bricks.iter().any(|b| self.is_served(&b.id)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        done(format!("volume stop: {name}: success"))
    }

    fn volume_status(&self, name: Option<&str>) -> anyhow::Result<AdminReply> {
        let vols = self.selected(name)?;
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
                .map(|v| self.pool_status(v))
                .collect(),
        ))
    }

    /// The status of this node's bricks of `spec` (others left offline).
    fn local_status(&self, spec: &VolumeSpec) -> VolumeStatus {
        VolumeStatus {
            name: spec.name.clone(),
            state: spec.state,
            bricks: spec
                .bricks
                .iter()
                .filter(|b| self.is_local_brick(b))
                .map(|b| {
                    let online = self.is_served(&b.id);
                    BrickStatus {
                        brick: b.clone(),
                        port: online.then_some(self.listen.port()),
                        online,
                        pid: online.then(std::process::id),
                        detail: brick_detail(Path::new(&b.path)),
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
                        reachable: true,
                        error: (!online).then(|| self.brick_error(&b.id)).flatten(),
                    }
                })
                .collect(),
            daemons: self.local_daemons(spec),
        }
    }

    /// This node's self-heal daemon line, if the volume has one here.
    fn local_daemons(&self, spec: &VolumeSpec) -> Vec<cairn_common::proto::DaemonStatus> {
        if !shd_configured(spec) || !spec.bricks.iter().any(|b| self.is_local_brick(b)) {
            return Vec::new();
        }
        let online = self.shd.running(&spec.name);
        vec![cairn_common::proto::DaemonStatus {
            name: SHD_NAME.to_string(),
            node: self.address.clone(),
            online,
            pid: online.then(std::process::id),
        }]
    }

    /// Every brick's status, asking each node for its own.
    fn pool_status(&self, spec: &VolumeSpec) -> VolumeStatus {
        let mut found: HashMap<Uuid, BrickStatus> = HashMap::new();
        let mut daemons: HashMap<String, cairn_common::proto::DaemonStatus> = HashMap::new();
        for part in self.per_node(
            spec,
            None,
            AdminRequest::VolumeStatus {
                name: Some(spec.name.clone()),
            },
        ) {
            if let Ok(AdminReply::Status(list)) = part {
                for v in list {
                    for b in v.bricks {
                        found.insert(b.brick.id, b);
                    }
                    for d in v.daemons {
                        daemons.insert(d.node.clone(), d);
                    }
                }
            }
        }
        // One line per node with bricks, in brick order; a node that did
        // not answer shows its daemon offline.
        let mut daemon_lines = Vec::new();
        if shd_configured(spec) {
            for b in &spec.bricks {
                if daemon_lines
                    .iter()
                    .any(|d: &cairn_common::proto::DaemonStatus| d.node == b.node)
                {
                    continue;
                }
                daemon_lines.push(daemons.remove(&b.node).unwrap_or(cairn_common::proto::DaemonStatus {
                    name: SHD_NAME.to_string(),
                    node: b.node.clone(),
                    online: false,
                    pid: None,
                }));
            }
        }
        VolumeStatus {
            name: spec.name.clone(),
            state: spec.state,
            bricks: spec
                .bricks
                .iter()
                .map(|b| {
                    found.remove(&b.id).unwrap_or_else(|| BrickStatus {
                        brick: b.clone(),
                        port: None,
                        online: false,
                        pid: None,
                        detail: None,
                        clients: Vec::new(),
                        memory: None,
                        reachable: false,
                        error: None,
                    })
                })
                .collect(),
            daemons: daemon_lines,
        }
    }

    /// Asks every node holding bricks of `spec` (or only `only`) for its
    /// part of `req`, in parallel; this node answers its own part directly.
    fn per_node(&self, spec: &VolumeSpec, only: Option<String>, req: AdminRequest) -> Vec<anyhow::Result<AdminReply>> {
        let mut nodes: Vec<String> = spec.bricks.iter().map(|b| b.node.clone()).collect();
        nodes.sort();
        nodes.dedup();
        if let Some(o) = &only {
            nodes.retain(|n| n == o);
        }
        let (local, remote): (Vec<String>, Vec<String>) = nodes.into_iter().partition(|n| self.is_local(n));
        let peers = self.pool().peers.clone();
        let remote_parts = block_on(async {
            let calls = remote.into_iter().map(|node| {
                let peers = peers.clone();
                let req = PoolRequest::Local(req.clone());
                async move {
                    match peers.call(&node, req, FAN_OUT_TIMEOUT).await {
                        Ok(PoolReply::Report(r)) => Ok(r),
                        Ok(other) => Err(anyhow::anyhow!("unexpected reply from {node}: {other:?}")),
                        Err(RpcError::Remote { message, .. }) => Err(anyhow::anyhow!(message)),
                        Err(e) => Err(anyhow::anyhow!("{node} is not reachable: {e}")),
                    }
                }
            });
            futures::future::join_all(calls).await
        });
        let mut parts = remote_parts;
        if !local.is_empty() {
            parts.push(self.admin_local(req));
        }
        parts
    }

    /// A profile or top report over the whole volume.
    fn gather(&self, spec: &VolumeSpec, only: Option<String>, req: AdminRequest) -> anyhow::Result<AdminReply> {
        let is_profile = matches!(req, AdminRequest::VolumeProfile { .. });
        let mut profiles = Vec::new();
        let mut tops = Vec::new();
        for part in self.per_node(spec, only, req) {
            match part? {
                AdminReply::Profile(p) => profiles.extend(p),
                AdminReply::Top(t) => tops.extend(t),
                other => bail!("unexpected report {other:?}"),
            }
        }
        Ok(if is_profile {
            AdminReply::Profile(profiles)
        } else {
            AdminReply::Top(tops)
        })
    }

    /// Each brick's part of a per-node report, in the volume's brick
    /// order; `missing(brick)` stands for a brick whose node did not
    /// answer.
    fn per_brick<T>(
        &self,
        spec: &VolumeSpec,
        req: AdminRequest,
        unpack: impl Fn(AdminReply) -> Option<Vec<T>>,
        brick_of: impl Fn(&T) -> Uuid,
        missing: impl Fn(&BrickSpec) -> T,
    ) -> Vec<T> {
        let mut found: HashMap<Uuid, T> = HashMap::new();
        for part in self.per_node(spec, None, req).into_iter().flatten() {
            for b in unpack(part).into_iter().flatten() {
                found.insert(brick_of(&b), b);
            }
        }
        spec.bricks
            .iter()
            .map(|b| found.remove(&b.id).unwrap_or_else(|| missing(b)))
            .collect()
    }

    /// A started replicated volume, or gluster's refusal.
    fn replicated_started(&self, name: &str) -> anyhow::Result<VolumeSpec> {
        let spec = self.volume_spec(name)?;
        if spec.replica < 2 {
            bail!("Volume {name} is not of type replicate");
        }
        if spec.state != VolumeState::Started {
            bail!("Volume {name} is not started");
        }
        Ok(spec)
    }

    /// `volume heal VOL [full]`: every node's self-heal daemon crawls now.
    fn heal_launch(&self, name: &str, full: bool) -> anyhow::Result<AdminReply> {
        let spec = self.replicated_started(name)?;
        let what = if full { "full" } else { "index" };
        if !shd_configured(&spec) {
            bail!(
                "Launching heal operation to perform {what} self heal on volume {name} has been unsuccessful: \
                 Self-heal-daemon is disabled. Heal will not be triggered on volume {name}"
            );
        }
        let parts = self.per_node(
            &spec,
            None,
            AdminRequest::VolumeHeal {
                name: name.to_string(),
                full,
            },
        );
        let failures: Vec<String> = parts
            .iter()
            .filter_map(|p| p.as_ref().err().map(|e| format!("{e:#}")))
            .collect();
        if failures.len() == parts.len() {
            bail!(
                "Launching heal operation to perform {what} self heal on volume {name} has been unsuccessful: {}",
                failures.join("; ")
            );
        }
        let mut message = format!(
            "Launching heal operation to perform {what} self heal on volume {name} has been successful \n\
             Use heal info commands to check status."
        );
        for f in failures {
            message.push_str(&format!("\n(not launched: {f})"));
        }
        done(message)
    }

    /// `volume heal VOL statistics`: every brick's crawl history and what
    /// its index still holds.
    fn heal_statistics(&self, name: &str) -> anyhow::Result<AdminReply> {
        let spec = self.replicated_started(name)?;
        let req = AdminRequest::VolumeHealStatistics {
            name: name.to_string(),
            count_only: false,
        };
        let unpack = |r| match r {
            AdminReply::HealStats(list) => Some(list),
            _ => None,
        };
        let missing = |b: &BrickSpec| cairn_common::proto::BrickHealStats {
            brick: b.label(),
            brick_id: b.id,
            pending: None,
            pending_bytes: 0,
            crawls: Vec::new(),
        };
        Ok(AdminReply::HealStats(self.per_brick(
            &spec,
            req,
            unpack,
            |b| b.brick_id,
            missing,
        )))
    }

    fn local_heal_statistics(&self, name: &str) -> anyhow::Result<AdminReply> {
        let spec = self.volume_spec(name)?;
        let mut out = Vec::new();
        for b in spec.bricks.iter().filter(|b| self.is_local_brick(b)) {
            let (pending, pending_bytes) = match self.brick(&b.id) {
                Some(brick) => {
                    let list = brick
                        .pending_heal()
                        .map_err(|e| anyhow::anyhow!("{}: {}", b.label(), e.context))?;
                    // Data a heal may copy: the size of each file whose data
                    // some replica missed.
                    let bytes = list
                        .iter()
                        .filter(|(_, _, c)| c.iter().any(|(_, v)| v[0] != 0))
                        .filter_map(|(gfid, _, _)| brick.getattr(gfid).ok())
                        .filter(|a| !a.is_dir())
                        .map(|a| a.size)
                        .sum();
                    (Some(list.len() as u64), bytes)
                }
                None => (None, 0),
            };
            out.push(cairn_common::proto::BrickHealStats {
                brick: b.label(),
                brick_id: b.id,
                pending,
                pending_bytes,
                crawls: self.shd.crawls(name, &b.id),
            });
        }
        Ok(AdminReply::HealStats(out))
    }

    /// `volume heal VOL info [split-brain]`: each brick's heal index,
    /// judged across its replica set (a split-brain is when the set's
    /// counters blame each other with no trustworthy source).
    fn heal_info(&self, name: &str, split_brain_only: bool) -> anyhow::Result<AdminReply> {
        use cairn_common::changelog::{judge, pending_name, Kind};
        let spec = self.replicated_started(name)?;
        let req = AdminRequest::VolumeHealInfo {
            name: name.to_string(),
            split_brain: split_brain_only,
        };
        let unpack = |r| match r {
            AdminReply::HealInfo(list) => Some(list),
            _ => None,
        };
        let missing = |b: &BrickSpec| cairn_common::proto::BrickHealInfo {
            brick: b.label(),
            brick_id: b.id,
            entries: None,
        };
        let mut report = self.per_brick(&spec, req, unpack, |b| b.brick_id, missing);
        let r = spec.replica as usize;
        for (set_bricks, set) in spec.bricks.chunks(r).zip(report.chunks_mut(r)) {
            let names: Vec<String> = set_bricks.iter().map(|b| pending_name(&b.id)).collect();
            let gfids: std::collections::BTreeSet<cairn_common::Gfid> = set
                .iter()
                .flat_map(|b| b.entries.iter().flatten().map(|e| e.gfid))
                .collect();
            for gfid in gfids {
                let counters: Vec<Option<cairn_common::changelog::Counters>> = set
                    .iter()
                    .map(|b| {
                        b.entries.as_ref().map(|list| {
                            list.iter()
                                .find(|e| e.gfid == gfid)
                                .map(|e| e.counters.clone())
                                .unwrap_or_default()
                        })
                    })
                    .collect();
                let path = set
                    .iter()
                    .flat_map(|b| b.entries.iter().flatten())
                    .find(|e| e.gfid == gfid && e.path.is_some())
                    .and_then(|e| e.path.clone());
                let split = [Kind::Data, Kind::Metadata, Kind::Entry].iter().any(|k| {
                    let may: Vec<bool> = (0..r)
                        .map(|i| !(spec.arbiter && i == r - 1 && *k == Kind::Data))
                        .collect();
                    judge(&names, &counters, *k, &may).split_brain
                });
                for b in set.iter_mut() {
                    for e in b.entries.iter_mut().flatten().filter(|e| e.gfid == gfid) {
                        e.split_brain = split;
                        if e.path.is_none() {
                            e.path = path.clone();
                        }
                    }
                }
            }
        }
        if split_brain_only {
            for b in &mut report {
                if let Some(list) = &mut b.entries {
                    list.retain(|e| e.split_brain);
                }
            }
        }
        Ok(AdminReply::HealInfo(report))
    }

    /// Issues a client certificate signed by the pool CA.
    fn client_cert_issue(&self, name: &str) -> anyhow::Result<AdminReply> {
        use cairn_common::state;
        if self.applied().state.clients_revoked.contains(name) {
            bail!("client name {name} was revoked; issue a certificate under another name");
        }
        let ca = std::fs::read_to_string(state::ca_cert(&self.state_dir))?;
        let ca_key = std::fs::read_to_string(state::ca_key(&self.state_dir))
            .context("this node does not hold the pool CA key")?;
        let (cert_pem, key_pem) = tls::issue(&ca, &ca_key, &tls::Role::Client(name.to_string()))?;
        self.commit(Command::IssueClient { name: name.to_string() })?;
        Ok(AdminReply::ClientCert {
            ca_pem: ca,
            cert_pem,
            key_pem,
        })
    }

    fn peer_probe(&self, host: &str) -> anyhow::Result<AdminReply> {
        let target = addr::canonical_node(host)?;
        let pool = self.pool();
        if self.is_local(&target) {
            return done("peer probe: success. Probe on localhost not needed");
        }
        if pool.member_at(&target).is_some() {
            return done(format!("peer probe: success. Host {host} is already in peer list"));
        }
        let ca_pem = std::fs::read_to_string(cairn_common::state::ca_cert(&self.state_dir))?;
        let ca_key_pem = std::fs::read_to_string(cairn_common::state::ca_key(&self.state_dir))
            .context("this node does not hold the pool CA key")?;
        let join = cairn_common::proto::Request::Pool(PoolRequest::Join {
            pool_id: pool.pool_id(),
            ca_pem,
            ca_key_pem,
        });
        let reply = block_on(cairn_common::transport::call_unverified(
            pool.peers.endpoint(),
            &target,
            &join,
            Duration::from_secs(20),
        ))
        .map_err(|e| match e {
            RpcError::Remote { message, .. } => anyhow::anyhow!("peer probe: failed: {message}"),
            other => anyhow::anyhow!("peer probe: failed: Probe returned with {other}"),
        })?;
        let cairn_common::proto::Reply::Pool(PoolReply::Joined { id, .. }) = reply else {
            bail!("peer probe: failed: unexpected reply {reply:?}");
        };
        block_on(pool.add_member(id, &target)).map_err(|e| anyhow::anyhow!("peer probe: failed: {e:#}"))?;
        done("peer probe: success")
    }

    fn peer_detach(&self, host: &str, force: bool) -> anyhow::Result<AdminReply> {
        let target = addr::canonical_node(host)?;
        let pool = self.pool();
        let Some((id, member)) = pool.member_at(&target) else {
            bail!("peer detach: failed: {host} is not part of cluster");
        };
        if id == self.id {
            bail!("peer detach: failed: {host} is localhost");
        }
        let reachable = block_on(self.reachable(&member.address));
        let volumes = self.applied().state.volumes_on(&member.address);
        // force detaches only a dead node: a live one could still serve.
        if !volumes.is_empty() && (!force || reachable) {
            bail!(
                "peer detach: failed: Brick(s) with the peer {host} exist in cluster (volumes {}){}",
                volumes.join(", "),
                if force {
                    "; force detaches only a peer that is down"
                } else {
                    ""
                }
            );
        }
        block_on(pool.remove_member(id)).map_err(|e| anyhow::anyhow!("peer detach: failed: {e:#}"))?;
        if reachable {
            // Best effort: the detached node starts a pool of its own.
            if let Err(e) = self.ask(
                &member.address,
                PoolRequest::Leave {
                    pool_id: Uuid::new_v4(),
                },
            ) {
                tracing::warn!(peer = %member.address, error = %format!("{e:#}"), "the detached node did not reset");
            }
        }
        done("peer detach: success")
    }

    async fn reachable(&self, address: &str) -> bool {
        let client = self.pool().peers.get(address);
        matches!(
            tokio::time::timeout(Duration::from_secs(2), client.ensure_connected()).await,
            Ok(Ok(_))
        )
    }

    fn peer_list(&self) -> Vec<PeerInfo> {
        let members = self.pool().members();
        block_on(futures::future::join_all(members.into_iter().map(
            |(id, m)| async move {
                let is_self = id == self.id;
                PeerInfo {
                    id,
                    connected: is_self || self.reachable(&m.address).await,
                    address: m.address,
                    is_self,
                }
            },
        )))
    }

    /// A probe reached this node: join the prober's pool if this node is
    /// free to (alone, no volumes), taking the pool's CA.
    pub async fn accept_join(&self, pool_id: Uuid, ca_pem: &str, ca_key_pem: &str) -> anyhow::Result<(Uuid, String)> {
        let pool = self.pool();
        let waiting_for_same_pool =
            pool.pool_id() == pool_id && pool.applied().membership.membership().nodes().count() == 0;
        if !pool.is_unjoined() && !waiting_for_same_pool {
            if pool.applied().state.volumes.is_empty() {
                bail!("{} is already part of another pool", self.address);
            }
            bail!("{} has volumes configured; it cannot join another pool", self.address);
        }
        tls::issue(ca_pem, ca_key_pem, &tls::Role::Client("probe-check".into()))
            .context("the prober's pool CA is not usable")?;
        self.adopt_ca(ca_pem, ca_key_pem)?;
        pool.reset(pool_id, false).await?;
        tracing::info!(%pool_id, "joined a pool");
        Ok((self.id, self.address.clone()))
    }

    /// This node was detached: it becomes a pool of one with a new CA.
    pub async fn leave_pool(&self, pool_id: Uuid) -> anyhow::Result<()> {
        let pool = self.pool();
        if !pool.applied().state.volumes_on(&self.address).is_empty() {
            bail!("{} still hosts bricks; refusing to leave the pool", self.address);
        }
        let (ca, key) = tls::create_ca(&pool_id.to_string())?;
        self.adopt_ca(&ca, &key)?;
        pool.reset(pool_id, true).await?;
        tracing::info!(%pool_id, "detached from the pool; now a pool of one");
        Ok(())
    }
}

/// gluster's rules for replica sets: a whole number of sets of `replica`
/// consecutive bricks, an arbiter only in replica 3, and (unless `force`)
/// the members of a set on distinct nodes, so one node's loss costs one
/// copy.
fn check_replica_sets(bricks: &[BrickSpec], replica: u32, arbiter: bool, force: bool) -> anyhow::Result<()> {
    if replica == 0 || replica > 8 {
        bail!("replica count must be 2 to 8");
    }
    if arbiter && replica != 3 {
        bail!("an arbiter is supported only with replica 3 (replica 3 arbiter 1)");
    }
    let n = replica as usize;
    if bricks.len() % n != 0 {
        bail!(
            "Number of bricks is not a multiple of replica count ({} bricks, replica {replica})",
            bricks.len()
        );
    }
    if n > 1 && !force {
        for set in bricks.chunks(n) {
            for (i, a) in set.iter().enumerate() {
                if let Some(b) = set[i + 1..].iter().find(|b| addr::same_node(&a.node, &b.node)) {
                    bail!(
                        "Multiple bricks of a replicate volume are present on the same server ({} and {}). This setup is not optimal. Bricks should be on different nodes to have best fault tolerant configuration. Use 'force' at the end of the command if you want to override this behavior.",
                        a.label(),
                        b.label()
                    );
                }
            }
        }
    }
    Ok(())
}

/// Seconds since the epoch.
fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The distinct nodes holding bricks of `spec`, in brick order.
fn brick_nodes(bricks: &[BrickSpec]) -> Vec<String> {
    let mut nodes: Vec<String> = Vec::new();
    for b in bricks {
        if !nodes.contains(&b.node) {
            nodes.push(b.node.clone());
        }
    }
    nodes
}

/// A new task of `kind` for `spec`: every node with bricks takes part, and
/// its fix-layout writes the next layout generation.
fn new_task(spec: &VolumeSpec, kind: RebalanceKind) -> RebalanceTask {
    RebalanceTask {
        id: Uuid::new_v4(),
        kind,
        commit: next_commit(spec),
        started: now_unix(),
        stopped: false,
        nodes: brick_nodes(&spec.bricks),
        finished: BTreeMap::new(),
    }
}

/// The layout generation a new task's fix-layout writes: above the
/// volume's and above any earlier task's (a stopped run may have written
/// its own).
fn next_commit(spec: &VolumeSpec) -> u32 {
    spec.layout_commit.max(spec.task.as_ref().map_or(0, |t| t.commit)) + 1
}

/// The first-brick ids of the replica sets `ids` make up: whole sets, and
/// not all of them, else gluster's refusals.
fn whole_sets(spec: &VolumeSpec, ids: &[Uuid]) -> anyhow::Result<Vec<Uuid>> {
    let r = spec.replica.max(1) as usize;
    if ids.len() % r != 0 {
        bail!("Remove brick incorrect brick count of {} for replica {r}", ids.len());
    }
    let mut firsts = Vec::new();
    for set in spec.bricks.chunks(r) {
        let leaving = set.iter().filter(|b| ids.contains(&b.id)).count();
        if leaving == 0 {
            continue;
        }
        if leaving != set.len() {
            bail!(
                "Bricks not from same subvol for replica: remove all {r} bricks of a replica set ({})",
                set.iter().map(|b| b.label()).collect::<Vec<_>>().join(", ")
            );
        }
        firsts.push(set[0].id);
    }
    if firsts.len() * r == spec.bricks.len() {
        bail!("Deleting all the bricks of the volume is not allowed");
    }
    Ok(firsts)
}

/// Does a node as typed (`HOST[:PORT]`) carry a port?
fn has_port(node: &str) -> bool {
    match node.strip_prefix('[') {
        Some(rest) => rest.contains("]:"),
        None => node.matches(':').count() == 1,
    }
}

/// Do two brick id lists name the same bricks?
fn same_bricks(a: &[Uuid], b: &[Uuid]) -> bool {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort();
    b.sort();
    a == b
}

impl Node {
    /// A brick of `spec` as the CLI names it: `NODE:/path` with NODE as the
    /// pool knows it (or any address of it), or the brick's label
    /// (`HOST:/path`, no port, as `volume info` prints it).
    fn brick_of<'a>(&self, spec: &'a VolumeSpec, text: &str) -> Option<&'a BrickSpec> {
        let b = BrickAddr::parse(text).ok()?;
        let node_text = &text[..text.find(":/")?];
        let member = self.pool().member_at(&b.node).map(|(_, m)| m.address);
        let by_address = spec
            .bricks
            .iter()
            .find(|x| x.path == b.path && (member.as_ref() == Some(&x.node) || addr::same_node(&x.node, &b.node)));
        if by_address.is_some() || has_port(node_text) {
            return by_address;
        }
        let (host, _) = addr::split_host_port(node_text).ok()?;
        spec.bricks.iter().find(|x| {
            x.path == b.path
                && addr::split_host_port(&x.node).is_ok_and(|(h, port)| {
                    let typed = if host.contains(':') {
                        format!("[{host}]:{port}")
                    } else {
                        format!("{host}:{port}")
                    };
                    h == host || addr::same_node(&x.node, &typed)
                })
        })
    }

    /// The volume's task, refused while it runs (or a remove-brick awaits
    /// its commit), as gluster refuses brick changes then.
    fn refuse_while_busy(spec: &VolumeSpec) -> anyhow::Result<()> {
        if let Some(t) = &spec.task {
            if task_running(t) || remove_brick_pending(spec) {
                bail!(busy_message(&spec.name, t));
            }
        }
        Ok(())
    }

    /// Waits (at most `START_WAIT`) until the bricks `ids` of a started
    /// volume are served; returns the ones that are not, with why.
    fn wait_served(&self, name: &str, ids: &[Uuid]) -> Vec<String> {
        let deadline = Instant::now() + START_WAIT;
        loop {
            let Ok(spec) = self.volume_spec(name) else {
                return Vec::new();
            };
            if spec.state != VolumeState::Started {
                return Vec::new();
            }
            let status = self.pool_status(&spec);
            // A node that has not applied a replace-brick yet may still
            // report the brick's old place online: only its new place counts.
            let waiting: Vec<&BrickStatus> = status
                .bricks
                .iter()
                .filter(|b| ids.contains(&b.brick.id))
                .filter(|b| !b.online || !spec.bricks.iter().any(|x| x == &b.brick))
                .collect();
            let describe = |b: &&BrickStatus| match (&b.error, b.reachable) {
                (Some(e), _) => format!("{}: {e}", b.brick.label()),
                (None, false) => format!("{}: its node is not reachable", b.brick.label()),
                (None, true) => format!("{}: not online yet", b.brick.label()),
            };
            if waiting.is_empty() {
                return Vec::new();
            }
            if waiting.iter().any(|b| b.error.is_some()) || Instant::now() > deadline {
                return waiting.iter().map(describe).collect();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Asks the self-heal daemons on `nodes` for a full crawl (a new or
    /// replaced brick is filled from its replicas). A node that has not
    /// started its daemon for the volume yet is asked again, for
    /// `START_WAIT` at most; failures are logged.
    fn ask_full_heal(&self, spec: &VolumeSpec, nodes: &[String]) {
        if spec.state != VolumeState::Started || !shd_configured(spec) {
            return;
        }
        let req = AdminRequest::VolumeHeal {
            name: spec.name.clone(),
            full: true,
        };
        let deadline = Instant::now() + START_WAIT;
        let mut pending: Vec<String> = nodes.to_vec();
        loop {
            let mut failed = Vec::new();
            for node in pending {
                let outcome = if self.is_local(&node) {
                    self.admin_local(req.clone()).map(|_| ())
                } else {
                    self.ask(&node, PoolRequest::Local(req.clone())).map(|_| ())
                };
                if let Err(e) = outcome {
                    failed.push((node, e));
                }
            }
            if failed.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                for (node, e) in failed {
                    tracing::warn!(volume = %spec.name, %node, error = %format!("{e:#}"), "full heal not launched");
                }
                return;
            }
            pending = failed.into_iter().map(|(node, _)| node).collect();
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `volume add-brick VOL [replica N] BRICKS… [force]`.
    fn volume_add_brick(
        &self,
        name: &str,
        bricks: &[String],
        replica: Option<u32>,
        force: bool,
    ) -> anyhow::Result<AdminReply> {
        let spec = self.volume_spec(name)?;
        Self::refuse_while_busy(&spec)?;
        if bricks.is_empty() {
            bail!("add-brick needs at least one brick (NODE:/path)");
        }
        let old_r = spec.replica.max(1);
        let new_r = replica.unwrap_or(old_r);
        if new_r < old_r {
            bail!("Incorrect replica count ({new_r}) supplied. Volume already has ({old_r})");
        }
        if new_r > old_r && spec.arbiter {
            bail!("Volume {name} has arbiter bricks: changing the replica count of an arbiter volume is not supported");
        }
        if new_r > 8 {
            bail!("replica count must be 2 to 8");
        }
        let added = self.new_bricks(bricks)?;
        let list: Vec<BrickSpec> = if new_r == old_r {
            if added.len() % old_r as usize != 0 {
                bail!(
                    "Incorrect number of bricks supplied {} with count {old_r}: add whole replica sets of {old_r}",
                    added.len()
                );
            }
            spec.bricks.iter().chain(&added).cloned().collect()
        } else {
            // gluster's order: each set's old bricks, then its new ones.
            let sets = spec.bricks.len() / old_r as usize;
            let per_set = (new_r - old_r) as usize;
            if added.len() != sets * per_set {
                bail!(
                    "Incorrect number of bricks supplied {} for replica {new_r}: volume {name} has {sets} replica set(s) of {old_r}, so it takes {sets} x {per_set} = {} new bricks",
                    added.len(),
                    sets * per_set
                );
            }
            spec.bricks
                .chunks(old_r as usize)
                .zip(added.chunks(per_set))
                .flat_map(|(old, new)| old.iter().chain(new).cloned())
                .collect()
        };
        if list.len() > MAX_BRICKS {
            bail!("a volume holds at most {MAX_BRICKS} bricks");
        }
        check_replica_sets(&list, new_r, spec.arbiter, force)?;
        if let Some(msg) = self.applied().state.overlap_bricks(&added, &[]) {
            bail!(msg);
        }
        self.check_on_nodes(&added, force)?;
        self.commit(Command::AddBricks {
            name: name.to_string(),
            bricks: list,
            replica: new_r,
            force,
        })?;
        let mut message = "volume add-brick: success".to_string();
        let ids: Vec<Uuid> = added.iter().map(|b| b.id).collect();
        let offline = self.wait_served(name, &ids);
        for o in &offline {
            tracing::warn!(volume = %name, brick = %o, "a new brick is not online");
            message.push_str(&format!("\nwarning: brick {o}"));
        }
        if new_r > old_r {
            let spec = self.volume_spec(name)?;
            self.ask_full_heal(&spec, &brick_nodes(&spec.bricks));
        }
        done(message)
    }

    /// `volume rebalance VOL fix-layout start | start [force] | stop | status`.
    fn volume_rebalance(&self, name: &str, action: RebalanceAction) -> anyhow::Result<AdminReply> {
        let spec = self.volume_spec(name)?;
        match action {
            RebalanceAction::FixLayoutStart | RebalanceAction::Start { .. } => {
                if spec.state != VolumeState::Started {
                    bail!("Volume {name} needs to be started to perform rebalance");
                }
                if spec.bricks.len() <= spec.replica.max(1) as usize {
                    bail!(
                        "Volume {name} is not a distribute volume or contains only 1 brick.\nNot performing rebalance"
                    );
                }
                if let Some(t) = spec.task.as_ref().filter(|t| task_running(t)) {
                    if !matches!(t.kind, RebalanceKind::RemoveBrick { .. }) {
                        bail!("Rebalance on {name} is already started");
                    }
                }
                if remove_brick_pending(&spec) {
                    bail!("A remove-brick task on volume {name} is not yet committed. Either commit or stop the remove-brick task.");
                }
                Self::refuse_while_busy(&spec)?;
                let kind = match action {
                    RebalanceAction::Start { force } => RebalanceKind::Migrate { force },
                    _ => RebalanceKind::FixLayout,
                };
                let task = new_task(&spec, kind);
                let id = task.id;
                self.commit(Command::StartTask {
                    name: name.to_string(),
                    task,
                    decommission: Vec::new(),
                })?;
                done(format!(
                    "volume rebalance: {name}: success: Rebalance on {name} has been started successfully. Use rebalance status command to check status of the rebalance process.\nID: {id}"
                ))
            }
            RebalanceAction::Stop => {
                let task = self.rebalance_task(&spec)?;
                if !task_running(&task) {
                    bail!(
                        "Rebalance is not running on volume {name} (it {})",
                        if task.stopped { "was stopped" } else { "has finished" }
                    );
                }
                self.stop_task(name, task)
            }
            RebalanceAction::Status => {
                let task = self.rebalance_task(&spec)?;
                Ok(AdminReply::Rebalance(Box::new(self.task_status(&spec, &task))))
            }
        }
    }

    /// The volume's rebalance task (not a remove-brick's), or gluster's
    /// refusal.
    fn rebalance_task(&self, spec: &VolumeSpec) -> anyhow::Result<RebalanceTask> {
        let name = &spec.name;
        match &spec.task {
            None => bail!("Rebalance not started for volume {name}"),
            Some(t) if matches!(t.kind, RebalanceKind::RemoveBrick { .. }) => bail!(
                "Rebalance not started for volume {name}: its task is a remove-brick (see 'volume remove-brick {name} BRICK... status')"
            ),
            Some(t) => Ok(t.clone()),
        }
    }

    /// Stops `task` (rebalance or remove-brick) and reports where it got.
    fn stop_task(&self, name: &str, task: RebalanceTask) -> anyhow::Result<AdminReply> {
        self.commit(Command::StopTask {
            name: name.to_string(),
            id: task.id,
        })?;
        let spec = self.volume_spec(name)?;
        let task = spec.task.clone().unwrap_or(task);
        Ok(AdminReply::Rebalance(Box::new(self.task_status(&spec, &task))))
    }

    /// Every node's row of `task`: asked of each node of the task in
    /// parallel; a node that does not answer shows what it recorded when
    /// it finished, or an empty row, marked unreachable.
    fn task_status(&self, spec: &VolumeSpec, task: &RebalanceTask) -> RebalanceStatus {
        let recorded = |node: &str, reachable: bool| {
            let mut row = task
                .finished
                .get(node)
                .cloned()
                .unwrap_or_else(|| crate::rebalance::idle_row(node));
            row.reachable = reachable;
            row
        };
        let local: Vec<bool> = task.nodes.iter().map(|n| self.is_local(n)).collect();
        let req = PoolRequest::Local(AdminRequest::VolumeRebalance {
            name: spec.name.clone(),
            action: RebalanceAction::Status,
        });
        let peers = self.pool().peers.clone();
        let answers: Vec<Option<RebalanceStatus>> = block_on(futures::future::join_all(
            task.nodes.iter().zip(&local).map(|(node, is_local)| {
                let peers = peers.clone();
                let req = req.clone();
                async move {
                    if *is_local {
                        return None;
                    }
                    match peers.call(node, req, FAN_OUT_TIMEOUT).await {
                        Ok(PoolReply::Report(AdminReply::Rebalance(st))) => Some(*st),
                        Ok(other) => {
                            tracing::warn!(%node, reply = ?other, "unexpected rebalance status reply");
                            None
                        }
                        Err(e) => {
                            tracing::debug!(%node, error = %e, "no rebalance status");
                            None
                        }
                    }
                }
            }),
        ));
        let nodes = task
            .nodes
            .iter()
            .zip(local)
            .zip(answers)
            .map(|((node, is_local), answer)| {
                let mut row = if is_local {
                    self.rebalance.local_status(self, spec)
                } else {
                    match answer {
                        // A node that has not applied this task yet
                        // reports another task's row: it has done nothing.
                        Some(st) if st.task.as_ref().is_some_and(|t| t.id == task.id) => {
                            st.nodes.into_iter().next().unwrap_or_else(|| recorded(node, true))
                        }
                        Some(_) => recorded(node, true),
                        None => recorded(node, false),
                    }
                };
                row.node = node.clone();
                row
            })
            .collect();
        RebalanceStatus {
            volume: spec.name.clone(),
            task: Some(task.clone()),
            nodes,
        }
    }

    /// `volume remove-brick VOL BRICKS… start|status|stop|commit|force`.
    fn volume_remove_brick(
        &self,
        name: &str,
        bricks: &[String],
        action: RemoveBrickAction,
    ) -> anyhow::Result<AdminReply> {
        let spec = self.volume_spec(name)?;
        if bricks.is_empty() {
            bail!("remove-brick needs at least one brick (NODE:/path)");
        }
        let mut ids: Vec<Uuid> = Vec::new();
        for text in bricks {
            let b = self
                .brick_of(&spec, text)
                .with_context(|| format!("Incorrect brick {text} for volume {name}"))?;
            if ids.contains(&b.id) {
                bail!("Brick {text} is given more than once");
            }
            ids.push(b.id);
        }
        // In the volume's order, as the task records them.
        let ids: Vec<Uuid> = spec.bricks.iter().map(|b| b.id).filter(|id| ids.contains(id)).collect();
        let labels = |ids: &[Uuid]| {
            spec.bricks
                .iter()
                .filter(|b| ids.contains(&b.id))
                .map(|b| b.label())
                .collect::<Vec<_>>()
                .join(" ")
        };
        // The remove-brick task for exactly these bricks.
        let this_task = || -> anyhow::Result<RebalanceTask> {
            match &spec.task {
                Some(t) => match &t.kind {
                    RebalanceKind::RemoveBrick { bricks } if same_bricks(bricks, &ids) => Ok(t.clone()),
                    RebalanceKind::RemoveBrick { bricks } => bail!(
                        "the remove-brick task of volume {name} is for other bricks: {}",
                        labels(bricks)
                    ),
                    _ => bail!("remove-brick not started for volume {name}"),
                },
                None => bail!("remove-brick not started for volume {name}"),
            }
        };
        match action {
            RemoveBrickAction::Start => {
                let firsts = whole_sets(&spec, &ids)?;
                if spec.state != VolumeState::Started {
                    bail!(
                        "Volume {name} needs to be started before remove-brick (you can use 'force' or 'commit' to override this behavior)"
                    );
                }
                Self::refuse_while_busy(&spec)?;
                // Data moves off these bricks: each must be up.
                let status = self.pool_status(&spec);
                if let Some(down) = status.bricks.iter().find(|b| ids.contains(&b.brick.id) && !b.online) {
                    bail!(
                        "Found stopped brick {}. Use force option to remove the offline brick",
                        down.brick.label()
                    );
                }
                let task = new_task(&spec, RebalanceKind::RemoveBrick { bricks: ids.clone() });
                let id = task.id;
                self.commit(Command::StartTask {
                    name: name.to_string(),
                    task,
                    decommission: firsts,
                })?;
                done(format!("volume remove-brick start: success\nID: {id}"))
            }
            RemoveBrickAction::Status => {
                let task = this_task()?;
                Ok(AdminReply::Rebalance(Box::new(self.task_status(&spec, &task))))
            }
            RemoveBrickAction::Stop => {
                let task = this_task()?;
                if task.stopped {
                    bail!("the remove-brick task of volume {name} was already stopped");
                }
                self.stop_task(name, task)
            }
            RemoveBrickAction::Commit => {
                let mut task = this_task().map_err(|e| {
                    anyhow::anyhow!(
                        "{e}: run 'volume remove-brick {name} {} start' and wait until its status shows completed, or use 'force' to remove the bricks without migrating their data",
                        labels(&ids)
                    )
                })?;
                // Each node's status answer counts its worker's end as soon
                // as it is known there; the marks in the pool configuration
                // reach this node a moment later. A commit right after a
                // status that showed completed everywhere waits for them
                // (a few seconds at most) rather than refuse.
                for _ in 0..25 {
                    if !task_running(&task) {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(200));
                    match self.volume_spec(name)?.task {
                        Some(fresh) if fresh.id == task.id => task = fresh,
                        _ => break,
                    }
                }
                if task.stopped {
                    bail!(
                        "the remove-brick task of volume {name} was stopped: start it again, or use 'force' to remove the bricks without migrating their data"
                    );
                }
                if task_running(&task) {
                    bail!(
                        "remove-brick is still in progress on volume {name}: wait until 'volume remove-brick {name} {} status' shows completed on every node",
                        labels(&ids)
                    );
                }
                let unclean: Vec<String> = task
                    .nodes
                    .iter()
                    .filter_map(|n| {
                        let r = task.finished.get(n)?;
                        let host = addr::split_host_port(n).map_or(n.clone(), |(h, _)| h);
                        match r.state {
                            TaskState::Completed if r.failures + r.skipped == 0 => None,
                            TaskState::Completed => Some(format!("{host}: {} failures", r.failures + r.skipped)),
                            other => Some(format!("{host}: {other:?}")),
                        }
                    })
                    .collect();
                if !unclean.is_empty() {
                    bail!(
                        "remove-brick did not migrate every file off the bricks ({}): check 'volume remove-brick {name} {} status' and the nodes' logs, start it again, or use 'force' to remove the bricks anyway",
                        unclean.join(", "),
                        labels(&ids)
                    );
                }
                self.commit(Command::RemoveBricks {
                    name: name.to_string(),
                    bricks: ids,
                })?;
                done(
                    "volume remove-brick commit: success\nCheck the removed bricks to ensure all files are migrated.\nIf files with data are found on the brick path, copy them via a cairn mount point before re-purposing the removed brick.",
                )
            }
            RemoveBrickAction::Force => {
                whole_sets(&spec, &ids)?;
                if let Some(t) = &spec.task {
                    let same = matches!(&t.kind, RebalanceKind::RemoveBrick { bricks } if same_bricks(bricks, &ids));
                    // The remove-brick of these very bricks may be cut
                    // short once stopped or finished; anything else waits.
                    if task_running(t) || (remove_brick_pending(&spec) && !same) {
                        bail!(busy_message(name, t));
                    }
                }
                self.commit(Command::RemoveBricks {
                    name: name.to_string(),
                    bricks: ids,
                })?;
                done(
                    "volume remove-brick commit force: success\nThe removed bricks' files were not migrated: they are no longer part of the volume. If you need them, copy them from the brick paths into a cairn mount point before re-purposing the bricks.",
                )
            }
        }
    }

    /// `volume replace-brick VOL OLD NEW commit force`: NEW takes OLD's
    /// place (and id) in its replica set, and is filled by a full heal.
    fn volume_replace_brick(&self, name: &str, old: &str, new: &str) -> anyhow::Result<AdminReply> {
        let spec = self.volume_spec(name)?;
        if spec.replica < 2 {
            bail!(
                "replace-brick is not permitted on distribute only volumes. Please use add-brick and remove-brick operations instead."
            );
        }
        let old_brick = self
            .brick_of(&spec, old)
            .with_context(|| format!("brick: {old} does not exist in volume: {name}"))?
            .clone();
        let mut added = self.new_bricks(&[new.to_string()])?;
        let mut new_brick = added.remove(0);
        if let Some(b) = spec.bricks.iter().find(|b| {
            b.path == new_brick.path && (b.node == new_brick.node || addr::same_node(&b.node, &new_brick.node))
        }) {
            if b.id == old_brick.id {
                bail!("{new} is already the brick being replaced; to rebuild a brick on a replaced disk use 'volume start {name} force'");
            }
            bail!("Brick: {new} not available. It is already a brick of volume {name}");
        }
        Self::refuse_while_busy(&spec)?;
        let r = spec.replica.max(1) as usize;
        let Some(set) = spec
            .bricks
            .chunks(r)
            .find(|set| set.iter().any(|b| b.id == old_brick.id))
        else {
            bail!("Brick {old} is in no replica set of volume {name}");
        };
        if !addr::same_node(&old_brick.node, &new_brick.node) {
            if let Some(other) = set
                .iter()
                .find(|b| b.id != old_brick.id && addr::same_node(&b.node, &new_brick.node))
            {
                bail!(
                    "Multiple bricks of a replicate volume would be on the same server ({} and {new}): bricks of a replica set must be on different nodes",
                    other.label()
                );
            }
        }
        new_brick.id = old_brick.id;
        if let Some(msg) = self
            .applied()
            .state
            .overlap_bricks(std::slice::from_ref(&new_brick), &[old_brick.id])
        {
            bail!(msg);
        }
        // `commit force`: as gluster's, the root file system check is waived.
        self.check_on_nodes(std::slice::from_ref(&new_brick), true)?;
        self.commit(Command::ReplaceBrick {
            name: name.to_string(),
            id: old_brick.id,
            node: new_brick.node.clone(),
            path: new_brick.path.clone(),
        })?;
        let mut message = "volume replace-brick: success: replace-brick commit force operation successful".to_string();
        let offline = self.wait_served(name, &[old_brick.id]);
        for o in &offline {
            tracing::warn!(volume = %name, brick = %o, "the new brick is not online");
            message.push_str(&format!("\nwarning: brick {o}"));
        }
        let spec = self.volume_spec(name)?;
        if let Some(set) = spec
            .bricks
            .chunks(r)
            .find(|set| set.iter().any(|b| b.id == old_brick.id))
        {
            self.ask_full_heal(&spec, &brick_nodes(set));
        }
        done(message)
    }
}
