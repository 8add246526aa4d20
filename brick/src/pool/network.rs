//! Consensus messages between pool members, carried as
//! [`PoolRequest::Raft`] requests on the same QUIC connections (node
//! certificates both ways) that carry everything else.

use super::state::{Member, MemberId, PoolTypes};
use bytes::Bytes;
use cairn_common::proto::{PoolReply, PoolRequest, RaftKind, Reply, Request};
use cairn_common::transport::{NodeClient, RpcError};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Connections to other members, by address, shared by the consensus layer
/// and the admin paths (forwarding, fan-out).
pub struct PeerClients {
    endpoint: quinn::Endpoint,
    /// The node's credentials as a dialling configuration; replaced when
    /// the node joins or leaves a pool.
    config: Mutex<quinn::ClientConfig>,
    clients: Mutex<HashMap<String, Arc<NodeClient>>>,
}

impl PeerClients {
    pub fn new(endpoint: quinn::Endpoint, config: quinn::ClientConfig) -> PeerClients {
        PeerClients {
            endpoint,
            config: Mutex::new(config),
            clients: Mutex::new(HashMap::new()),
        }
    }

    pub fn endpoint(&self) -> &quinn::Endpoint {
        &self.endpoint
    }

    pub fn get(&self, address: &str) -> Arc<NodeClient> {
        let config = self.config.lock().expect("peer config poisoned").clone();
        self.clients
            .lock()
            .expect("peer clients poisoned")
            .entry(address.to_string())
            .or_insert_with(|| {
                Arc::new(
                    NodeClient::new(self.endpoint.clone(), address.to_string(), Duration::from_secs(10))
                        .with_config(config),
                )
            })
            .clone()
    }

    /// Dials with new credentials from now on, dropping every connection
    /// made with the old ones.
    pub fn reset(&self, config: quinn::ClientConfig) {
        *self.config.lock().expect("peer config poisoned") = config;
        self.clients.lock().expect("peer clients poisoned").clear();
    }

    /// One pool request to the member at `address`. A request that may
    /// safely run twice is retried once on a dead connection: a member
    /// that restarted resets our old connection at the first packet, and
    /// the retry dials the new process.
    pub async fn call(&self, address: &str, req: PoolRequest, timeout: Duration) -> Result<PoolReply, RpcError> {
        let retry = !matches!(req, PoolRequest::Propose { .. } | PoolRequest::Leave { .. });
        let req = Request::Pool(req);
        let client = self.get(address);
        let mut result = client.call_with_timeout(&req, Bytes::new(), Some(timeout)).await;
        if retry && matches!(result, Err(RpcError::Unreachable(_))) {
            result = client.call_with_timeout(&req, Bytes::new(), Some(timeout)).await;
        }
        match result? {
            (Reply::Pool(r), _) => Ok(r),
            (other, _) => Err(RpcError::Protocol(format!("unexpected reply {other:?}"))),
        }
    }
}

pub struct Network {
    pub peers: Arc<PeerClients>,
}

impl RaftNetworkFactory<PoolTypes> for Network {
    type Network = PeerLink;

    async fn new_client(&mut self, target: MemberId, node: &Member) -> PeerLink {
        PeerLink {
            target,
            address: node.address.clone(),
            peers: self.peers.clone(),
        }
    }
}

pub struct PeerLink {
    target: MemberId,
    address: String,
    peers: Arc<PeerClients>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct LinkError(String);

impl PeerLink {
    async fn send<Req, Resp, E>(
        &self,
        kind: RaftKind,
        rpc: &Req,
        timeout: Duration,
    ) -> Result<Resp, RPCError<MemberId, Member, RaftError<MemberId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = serde_json::to_vec(rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let reply = self
            .peers
            .call(&self.address, PoolRequest::Raft { kind, body }, timeout)
            .await
            .map_err(|e| match e {
                RpcError::Unreachable(_) | RpcError::Timeout(_) => {
                    RPCError::Unreachable(Unreachable::new(&LinkError(e.to_string())))
                }
                other => RPCError::Network(NetworkError::new(&LinkError(other.to_string()))),
            })?;
        let PoolReply::Raft(bytes) = reply else {
            return Err(RPCError::Network(NetworkError::new(&LinkError(format!(
                "unexpected reply {reply:?}"
            )))));
        };
        let result: Result<Resp, RaftError<MemberId, E>> =
            serde_json::from_slice(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

fn ttl(option: &RPCOption, floor: Duration) -> Duration {
    option.hard_ttl().max(floor)
}

impl RaftNetwork<PoolTypes> for PeerLink {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<PoolTypes>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<MemberId>, RPCError<MemberId, Member, RaftError<MemberId>>> {
        self.send(RaftKind::Append, &rpc, ttl(&option, Duration::from_millis(500)))
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<PoolTypes>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<MemberId>, RPCError<MemberId, Member, RaftError<MemberId, InstallSnapshotError>>>
    {
        self.send(RaftKind::Snapshot, &rpc, ttl(&option, Duration::from_secs(2)))
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<MemberId>,
        option: RPCOption,
    ) -> Result<VoteResponse<MemberId>, RPCError<MemberId, Member, RaftError<MemberId>>> {
        self.send(RaftKind::Vote, &rpc, ttl(&option, Duration::from_millis(500)))
            .await
    }
}
