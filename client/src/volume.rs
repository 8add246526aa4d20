//! Builds a volume's client graph from its spec, as fetched from a node.

use crate::dht::{Child, Distribute};
use crate::layer::Subvolume;
use crate::protocol::ProtocolClient;
use anyhow::{bail, Context};
use bytes::Bytes;
use cairn_common::proto::{AdminReply, AdminRequest, BrickSpec, Reply, Request, VolumeSpec};
use cairn_common::transport::NodeClient;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// Fetches `volume`'s spec from the first of `servers` that answers.
pub async fn fetch_spec(
    endpoint: &quinn::Endpoint,
    servers: &[String],
    volume: &str,
    timeout: Duration,
) -> anyhow::Result<VolumeSpec> {
    let mut last = None;
    for server in servers {
        let client = NodeClient::new(endpoint.clone(), server.clone(), timeout);
        let req = Request::Admin(AdminRequest::GetVolume {
            name: volume.to_string(),
        });
        match client.call(&req, Bytes::new()).await {
            Ok((Reply::Admin(AdminReply::Spec(spec)), _)) => return Ok(spec),
            Ok((other, _)) => bail!("unexpected reply from {server}: {other:?}"),
            Err(e @ cairn_common::transport::RpcError::Remote { .. }) => bail!("{server}: {e}"),
            Err(e) => last = Some(anyhow::anyhow!("{server}: {e}")),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no volfile server given"))).context("fetching the volume spec")
}

/// A volume's client graph — distribute over its replica sets (or over
/// its bricks, without replication) — kept in step with the volume's spec:
/// when bricks are added, replaced or removed, the layers of what did not
/// change are kept (their connections, handles and caches) and only new or
/// changed replica sets are built.
pub struct Graph {
    endpoint: quinn::Endpoint,
    call_timeout: Duration,
    pub top: Arc<Distribute>,
    parts: Mutex<Parts>,
}

/// Layers built so far, by what they were built from.
#[derive(Default)]
struct Parts {
    nodes: HashMap<String, Arc<NodeClient>>,
    bricks: HashMap<(Uuid, String), Arc<dyn Subvolume>>,
    sets: HashMap<SetKey, Arc<dyn Subvolume>>,
    /// How long replica sets may serve directory attributes from memory
    /// (a mount's attribute timeout; zero for daemons).
    dir_attr_ttl: Duration,
}

/// A replica set by its bricks (id and node, in order) and arbiter flag.
type SetKey = (Vec<(Uuid, String)>, bool);

/// Is a rebalance or remove-brick migrating now (some node not finished)?
pub fn rebalancing(spec: &VolumeSpec) -> bool {
    spec.task
        .as_ref()
        .is_some_and(|t| !t.stopped && t.nodes.iter().any(|n| !t.finished.contains_key(n)))
}

impl Graph {
    /// `dir_attr_ttl`: a mount's attribute timeout, for the directory
    /// attributes its replica sets learn (zero: none kept).
    pub fn build(
        endpoint: &quinn::Endpoint,
        spec: &VolumeSpec,
        call_timeout: Duration,
        dir_attr_ttl: Duration,
    ) -> anyhow::Result<Arc<Graph>> {
        let mut parts = Parts {
            dir_attr_ttl,
            ..Parts::default()
        };
        let children = parts.children(endpoint, spec, call_timeout)?;
        let top = Arc::new(Distribute::new(children, spec.layout_commit)?);
        top.reshape(
            top.kids().to_vec(),
            spec.layout_commit,
            spec.decommissioned.clone(),
            rebalancing(spec),
        );
        Ok(Arc::new(Graph {
            endpoint: endpoint.clone(),
            call_timeout,
            top,
            parts: Mutex::new(parts),
        }))
    }

    /// Each node the mount talks to, and whether it is connected now.
    pub fn node_links(&self) -> Vec<(String, bool)> {
        let parts = self.parts.lock().expect("parts poisoned");
        let mut links: Vec<_> = parts.nodes.iter().map(|(n, c)| (n.clone(), c.is_connected())).collect();
        links.sort();
        links
    }

    /// Takes a new spec of the same volume: a changed brick list reshapes
    /// distribute; layout generation and rebalance state apply at once.
    pub fn apply(&self, spec: &VolumeSpec) -> anyhow::Result<()> {
        let mut parts = self.parts.lock().expect("parts poisoned");
        let before: Vec<*const ()> = parts.sets.values().map(|l| Arc::as_ptr(l) as *const ()).collect();
        let children = parts.children(&self.endpoint, spec, self.call_timeout)?;
        for c in &children {
            if !before.contains(&(Arc::as_ptr(&c.layer) as *const ())) {
                c.layer.reconfigure(&spec.options);
            }
        }
        // Forget what the spec no longer names.
        let wanted: Vec<*const ()> = children.iter().map(|c| Arc::as_ptr(&c.layer) as *const ()).collect();
        parts
            .sets
            .retain(|_, l| wanted.contains(&(Arc::as_ptr(l) as *const ())));
        let bricks: Vec<(Uuid, String)> = spec.bricks.iter().map(|b| (b.id, b.node.clone())).collect();
        parts.bricks.retain(|k, _| bricks.contains(k));
        parts.nodes.retain(|n, _| spec.bricks.iter().any(|b| &b.node == n));
        drop(parts);
        self.top.reshape(
            children,
            spec.layout_commit,
            spec.decommissioned.clone(),
            rebalancing(spec),
        );
        Ok(())
    }
}

impl Parts {
    /// Distribute's children for `spec`, reusing layers already built.
    fn children(
        &mut self,
        endpoint: &quinn::Endpoint,
        spec: &VolumeSpec,
        call_timeout: Duration,
    ) -> anyhow::Result<Vec<Child>> {
        let r = spec.replica.max(1) as usize;
        if spec.bricks.is_empty() || spec.bricks.len() % r != 0 {
            bail!(
                "volume {} has {} bricks, not a multiple of replica {r}",
                spec.name,
                spec.bricks.len()
            );
        }
        let mut children = Vec::new();
        // Consecutive bricks form a replica set; each set (or each brick,
        // without replication) is one subvolume of distribute.
        for (k, set) in spec.bricks.chunks(r).enumerate() {
            let key: Vec<(Uuid, String)> = set.iter().map(|b| (b.id, b.node.clone())).collect();
            let layers: Vec<Arc<dyn Subvolume>> = set.iter().map(|b| self.brick(endpoint, b, call_timeout)).collect();
            let layer = if r == 1 {
                layers[0].clone()
            } else if let Some(l) = self.sets.get(&(key.clone(), spec.arbiter)) {
                l.clone()
            } else {
                let ids: Vec<uuid::Uuid> = set.iter().map(|b| b.id).collect();
                let set =
                    crate::afr::Replicate::new(format!("{}-replicate-{k}", spec.name), layers, &ids, spec.arbiter)?;
                set.set_dir_attr_ttl(self.dir_attr_ttl);
                let l: Arc<dyn Subvolume> = set;
                self.sets.insert((key, spec.arbiter), l.clone());
                l
            };
            // A set is named by its first brick's id (link files name it).
            children.push(Child { id: set[0].id, layer });
        }
        Ok(children)
    }

    /// The protocol client of one brick; one connection per node, shared
    /// by all of that node's bricks.
    fn brick(&mut self, endpoint: &quinn::Endpoint, b: &BrickSpec, call_timeout: Duration) -> Arc<dyn Subvolume> {
        if let Some(l) = self.bricks.get(&(b.id, b.node.clone())) {
            return l.clone();
        }
        let node = self
            .nodes
            .entry(b.node.clone())
            .or_insert_with(|| Arc::new(NodeClient::new(endpoint.clone(), b.node.clone(), call_timeout)))
            .clone();
        let l: Arc<dyn Subvolume> = Arc::new(ProtocolClient::new(node, b.id, b.label()));
        self.bricks.insert((b.id, b.node.clone()), l.clone());
        l
    }
}

/// A protocol client per brick, in brick order.
fn brick_layers(endpoint: &quinn::Endpoint, spec: &VolumeSpec, call_timeout: Duration) -> Vec<Arc<dyn Subvolume>> {
    let mut parts = Parts::default();
    spec.bricks
        .iter()
        .map(|b| parts.brick(endpoint, b, call_timeout))
        .collect()
}

/// The volume's replica sets as their own layers (for tools that act on
/// one set: split-brain resolution), in brick order.
pub fn replica_sets(
    endpoint: &quinn::Endpoint,
    spec: &VolumeSpec,
    call_timeout: Duration,
) -> anyhow::Result<Vec<Arc<crate::afr::Replicate>>> {
    let r = spec.replica as usize;
    if r < 2 {
        bail!("volume {} is not replicated", spec.name);
    }
    let bricks = brick_layers(endpoint, spec, call_timeout);
    let mut sets = Vec::new();
    for (k, (set, layers)) in spec.bricks.chunks(r).zip(bricks.chunks(r)).enumerate() {
        let ids: Vec<uuid::Uuid> = set.iter().map(|b| b.id).collect();
        let layer = crate::afr::Replicate::new(
            format!("{}-replicate-{k}", spec.name),
            layers.to_vec(),
            &ids,
            spec.arbiter,
        )?;
        layer.reconfigure(&spec.options);
        sets.push(layer);
    }
    Ok(sets)
}

/// How often a mount asks for its volume's spec.
const SPEC_POLL: Duration = Duration::from_secs(5);

/// Keeps a mount in step with its volume's spec: option changes apply to
/// the running graph without a remount. Runs for the life of the mount.
pub async fn follow_spec(
    endpoint: quinn::Endpoint,
    servers: Vec<String>,
    mut current: VolumeSpec,
    top: Arc<dyn Subvolume>,
    graph: Arc<Graph>,
    timeout: Duration,
) {
    loop {
        tokio::time::sleep(SPEC_POLL).await;
        // The volfile servers first, then any node holding a brick: every
        // pool member can serve the spec, so the mount keeps following it
        // when the server it was mounted from is gone.
        let mut candidates = servers.clone();
        for b in &current.bricks {
            if !candidates.contains(&b.node) {
                candidates.push(b.node.clone());
            }
        }
        let spec = match fetch_spec(&endpoint, &candidates, &current.name, timeout).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %format!("{e:#}"), "could not refresh the volume spec");
                continue;
            }
        };
        if spec.version == current.version && spec.id == current.id {
            continue;
        }
        if spec.id != current.id {
            tracing::error!(volume = %spec.name, "the volume was deleted and created again; remount to use the new one");
            continue;
        }
        if spec.options != current.options {
            tracing::info!(options = ?spec.options, "volume options changed");
            top.reconfigure(&spec.options);
        }
        if spec.bricks != current.bricks {
            tracing::info!(
                bricks = spec.bricks.len(),
                replica = spec.replica,
                "the volume's bricks changed"
            );
        }
        if let Err(e) = graph.apply(&spec) {
            tracing::error!(error = %format!("{e:#}"), "could not take the volume's new shape");
            continue;
        }
        current = spec;
    }
}
