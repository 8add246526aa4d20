//! Builds a volume's client graph from its spec, as fetched from a node.

use crate::dht::{Child, Distribute};
use crate::layer::Subvolume;
use crate::protocol::ProtocolClient;
use anyhow::{bail, Context};
use bytes::Bytes;
use cairn_common::proto::{AdminReply, AdminRequest, Reply, Request, VolumeSpec};
use cairn_common::transport::NodeClient;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

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

/// A protocol client per brick, in brick order; one connection per node,
/// shared by all of that node's bricks.
fn brick_layers(endpoint: &quinn::Endpoint, spec: &VolumeSpec, call_timeout: Duration) -> Vec<Arc<dyn Subvolume>> {
    let mut nodes: HashMap<String, Arc<NodeClient>> = HashMap::new();
    spec.bricks
        .iter()
        .map(|b| {
            let node = nodes
                .entry(b.node.clone())
                .or_insert_with(|| Arc::new(NodeClient::new(endpoint.clone(), b.node.clone(), call_timeout)))
                .clone();
            Arc::new(ProtocolClient::new(node, b.id, b.label())) as Arc<dyn Subvolume>
        })
        .collect()
}

/// The graph's top layer for `spec`.
pub fn build_graph(
    endpoint: &quinn::Endpoint,
    spec: &VolumeSpec,
    call_timeout: Duration,
) -> anyhow::Result<Arc<dyn Subvolume>> {
    let bricks = brick_layers(endpoint, spec, call_timeout);
    let r = spec.replica.max(1) as usize;
    if bricks.is_empty() || bricks.len() % r != 0 {
        bail!(
            "volume {} has {} bricks, not a multiple of replica {r}",
            spec.name,
            bricks.len()
        );
    }
    // Consecutive bricks form a replica set; each set (or each brick,
    // without replication) is one subvolume of distribute.
    let mut children = Vec::new();
    for (k, (set, layers)) in spec.bricks.chunks(r).zip(bricks.chunks(r)).enumerate() {
        let layer: Arc<dyn Subvolume> = if r == 1 {
            layers[0].clone()
        } else {
            let ids: Vec<uuid::Uuid> = set.iter().map(|b| b.id).collect();
            crate::afr::Replicate::new(
                format!("{}-replicate-{k}", spec.name),
                layers.to_vec(),
                &ids,
                spec.arbiter,
            )?
        };
        // A set is named by its first brick's id (link files name it).
        children.push(Child { id: set[0].id, layer });
    }
    if children.len() == 1 {
        return Ok(children.pop().expect("one subvolume").layer);
    }
    Ok(Arc::new(Distribute::new(
        children,
        cairn_common::layout::INITIAL_COMMIT,
    )?))
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
            tracing::warn!("the volume's bricks changed; this mount keeps its bricks until remounted");
        }
        current = spec;
    }
}
