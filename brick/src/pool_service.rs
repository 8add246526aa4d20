//! The receiving side of node-to-node pool requests: consensus messages,
//! forwarded proposals, joins and leaves, brick checks and report parts.

use crate::node::Node;
use crate::pool::state::{Command, MemberId, PoolTypes};
use anyhow::Context;
use cairn_common::proto::{PoolReply, PoolRequest, RaftKind};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use std::sync::Arc;

pub async fn handle(node: &Arc<Node>, req: PoolRequest) -> anyhow::Result<PoolReply> {
    match req {
        PoolRequest::Raft { kind, body } => raft_message(node, kind, &body).await,
        PoolRequest::Propose { command } => {
            let cmd: Command = serde_json::from_slice(&command).context("decoding a proposal")?;
            let (result, index) = node.pool().propose_as_leader(cmd).await?;
            Ok(PoolReply::Committed { result, index })
        }
        PoolRequest::Join {
            pool_id,
            ca_pem,
            ca_key_pem,
        } => {
            let (id, address) = node.accept_join(pool_id, &ca_pem, &ca_key_pem).await?;
            Ok(PoolReply::Joined { id, address })
        }
        PoolRequest::AddMember { id, address } => {
            node.pool().add_member(id, &address).await?;
            Ok(PoolReply::Done)
        }
        PoolRequest::RemoveMember { id } => {
            node.pool().remove_member(id).await?;
            Ok(PoolReply::Done)
        }
        PoolRequest::Leave { pool_id } => {
            node.leave_pool(pool_id).await?;
            Ok(PoolReply::Done)
        }
        PoolRequest::CheckBricks { paths, force } => {
            let node = node.clone();
            tokio::task::spawn_blocking(move || node.check_bricks(&paths, force)).await??;
            Ok(PoolReply::Done)
        }
        PoolRequest::Local(req) => {
            let node = node.clone();
            let reply = tokio::task::spawn_blocking(move || node.admin_local(req)).await??;
            Ok(PoolReply::Report(reply))
        }
    }
}

/// Hands a consensus message to openraft; its answer (or refusal) goes
/// back JSON-encoded, as the sender's `PeerLink` expects.
async fn raft_message(node: &Node, kind: RaftKind, body: &[u8]) -> anyhow::Result<PoolReply> {
    let raft = node.pool().raft();
    let bytes = match kind {
        RaftKind::Vote => {
            let rpc: VoteRequest<MemberId> = serde_json::from_slice(body).context("decoding a vote")?;
            serde_json::to_vec(&raft.vote(rpc).await)?
        }
        RaftKind::Append => {
            let rpc: AppendEntriesRequest<PoolTypes> = serde_json::from_slice(body).context("decoding an append")?;
            serde_json::to_vec(&raft.append_entries(rpc).await)?
        }
        RaftKind::Snapshot => {
            let rpc: InstallSnapshotRequest<PoolTypes> =
                serde_json::from_slice(body).context("decoding a snapshot chunk")?;
            serde_json::to_vec(&raft.install_snapshot(rpc).await)?
        }
    };
    Ok(PoolReply::Raft(bytes))
}
