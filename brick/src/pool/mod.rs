//! The trusted pool: members and the volume configuration they share, kept
//! by openraft 0.9 in every member. A change commits when a majority of
//! the members has it on disk; a member that was down catches up from the
//! leader when it returns. A node that was never probed is a pool of one.

pub mod network;
pub mod state;
pub mod store;

use anyhow::{bail, Context};
use network::{Network, PeerClients};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, Raft, ServerState};
use serde::{Deserialize, Serialize};
use state::{Command, CommandResult, Member, MemberId, PoolTypes};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use store::{Applied, LogStore, StateMachine};
use uuid::Uuid;

/// How long a leader waits for a majority to confirm it still leads
/// before refusing a change outright.
const QUORUM_CHECK: Duration = Duration::from_secs(2);
/// How long a change may take to commit.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
const FORWARD_TIMEOUT: Duration = Duration::from_secs(15);

/// Which pool this node belongs to, in `<state>/pool.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoolInfo {
    pub pool_id: Uuid,
    /// Set when the node accepted a probe; until the leader's first
    /// message arrives it must not start a pool of its own.
    pub joined: bool,
}

pub struct Pool {
    id: Uuid,
    address: String,
    state_dir: PathBuf,
    raft: RwLock<Raft<PoolTypes>>,
    applied_tx: tokio::sync::watch::Sender<Arc<Applied>>,
    pub peers: Arc<PeerClients>,
    info: Mutex<PoolInfo>,
}

fn raft_config() -> anyhow::Result<Arc<openraft::Config>> {
    let config = openraft::Config {
        cluster_name: "cairn-pool".to_string(),
        heartbeat_interval: 250,
        election_timeout_min: 1_000,
        election_timeout_max: 2_000,
        // Keep every message well under the wire's header bound.
        max_payload_entries: 16,
        snapshot_max_chunk_size: 64 * 1024,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(500),
        max_in_snapshot_log_to_keep: 100,
        ..Default::default()
    };
    Ok(Arc::new(config.validate().context("consensus configuration")?))
}

fn info_path(state_dir: &Path) -> PathBuf {
    state_dir.join("pool.json")
}

fn raft_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("raft")
}

/// Why a change could not be made; the text the CLI shows.
fn no_quorum(members: usize) -> anyhow::Error {
    anyhow::anyhow!(
        "the pool has no quorum: a change needs a majority of its {members} members reachable \
         from this node, with a leader among them; nothing was changed"
    )
}

impl Pool {
    pub async fn start(
        state_dir: &Path,
        id: Uuid,
        address: &str,
        endpoint: quinn::Endpoint,
        credentials: &cairn_common::tls::Credentials,
    ) -> anyhow::Result<Arc<Pool>> {
        let info: PoolInfo = match std::fs::read(info_path(state_dir)) {
            Ok(b) => serde_json::from_slice(&b).context("parsing pool.json")?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let info = PoolInfo {
                    pool_id: Uuid::new_v4(),
                    joined: false,
                };
                cairn_common::state::write_private(&info_path(state_dir), &serde_json::to_vec_pretty(&info)?)?;
                info
            }
            Err(e) => return Err(e).context("reading pool.json"),
        };
        let (applied_tx, _) = tokio::sync::watch::channel(Arc::new(Applied::default()));
        let peers = Arc::new(PeerClients::new(
            endpoint,
            cairn_common::transport::client_config(credentials)?,
        ));
        let raft = Self::open_raft(state_dir, id, address, &peers, &applied_tx, !info.joined).await?;
        Ok(Arc::new(Pool {
            id,
            address: address.to_string(),
            state_dir: state_dir.to_path_buf(),
            raft: RwLock::new(raft),
            applied_tx,
            peers,
            info: Mutex::new(info),
        }))
    }

    /// Opens the consensus state; a node with none starts a pool of one
    /// unless it is waiting for the pool it joined.
    async fn open_raft(
        state_dir: &Path,
        id: Uuid,
        address: &str,
        peers: &Arc<PeerClients>,
        applied_tx: &tokio::sync::watch::Sender<Arc<Applied>>,
        may_bootstrap: bool,
    ) -> anyhow::Result<Raft<PoolTypes>> {
        let dir = raft_dir(state_dir);
        let log = LogStore::open(&dir.join("log")).context("opening the consensus log")?;
        let sm = StateMachine::open(&dir, applied_tx.clone()).context("opening the pool state")?;
        let pristine = log.is_pristine();
        let raft = Raft::new(MemberId(id), raft_config()?, Network { peers: peers.clone() }, log, sm)
            .await
            .context("starting consensus")?;
        tokio::spawn(log_changes(raft.metrics(), id));
        if pristine && may_bootstrap {
            let me = BTreeMap::from([(
                MemberId(id),
                Member {
                    address: address.to_string(),
                },
            )]);
            raft.initialize(me).await.context("creating a pool of one")?;
            // Serve only once the pool of one is applied: a `volume create`
            // right after start must find this node among the members.
            raft.wait(Some(std::time::Duration::from_secs(10)))
                .applied_index_at_least(Some(1), "the new pool applied")
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))
                .context("applying the new pool")?;
            tracing::info!("created a new pool with this node as its only member");
        }
        Ok(raft)
    }

    pub fn raft(&self) -> Raft<PoolTypes> {
        self.raft.read().expect("raft poisoned").clone()
    }

    pub fn pool_id(&self) -> Uuid {
        self.info.lock().expect("pool info poisoned").pool_id
    }

    /// The configuration as last applied here.
    pub fn applied(&self) -> Arc<Applied> {
        self.applied_tx.borrow().clone()
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<Applied>> {
        self.applied_tx.subscribe()
    }

    /// Every member (voters and learners), by id.
    pub fn members(&self) -> BTreeMap<Uuid, Member> {
        self.applied()
            .membership
            .membership()
            .nodes()
            .map(|(id, m)| (id.0, m.clone()))
            .collect()
    }

    pub fn voters(&self) -> BTreeSet<Uuid> {
        self.applied()
            .membership
            .membership()
            .voter_ids()
            .map(|m| m.0)
            .collect()
    }

    /// The member whose address names the same node as `address`.
    pub fn member_at(&self, address: &str) -> Option<(Uuid, Member)> {
        self.members()
            .into_iter()
            .find(|(_, m)| cairn_common::addr::same_node(&m.address, address))
    }

    /// Is this node alone in its pool, with no volumes (free to join
    /// another)?
    pub fn is_unjoined(&self) -> bool {
        let applied = self.applied();
        let members: Vec<Uuid> = applied.membership.membership().nodes().map(|(id, _)| id.0).collect();
        members.iter().all(|m| *m == self.id) && applied.state.volumes.is_empty()
    }

    /// The leader's address if another node leads, `None` if this one does.
    fn leader_elsewhere(&self) -> anyhow::Result<Option<String>> {
        let metrics = self.raft().metrics().borrow().clone();
        match metrics.current_leader {
            Some(l) if l.0 == self.id => Ok(None),
            Some(l) => match metrics.membership_config.membership().get_node(&l) {
                Some(m) => Ok(Some(m.address.clone())),
                None => Err(no_quorum(self.voters().len())),
            },
            None => Err(no_quorum(self.voters().len())),
        }
    }

    /// Refuses before proposing when this leader cannot reach a majority
    /// now (one heartbeat round), so that a change refused for want of
    /// quorum is never left in the log to commit later.
    async fn check_quorum_fresh(&self) -> anyhow::Result<()> {
        let raft = self.raft();
        let metrics = raft.metrics().borrow().clone();
        if metrics.state != ServerState::Leader {
            bail!(no_quorum(self.voters().len()));
        }
        match tokio::time::timeout(QUORUM_CHECK, raft.ensure_linearizable()).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(no_quorum(self.voters().len())),
        }
    }

    /// Commits `cmd` through the leader, wherever it is, and waits until it
    /// has applied here too (so this node's next answer shows it); the
    /// result is the command's own verdict.
    pub async fn propose(&self, cmd: Command) -> anyhow::Result<()> {
        let (result, index) = match self.leader_elsewhere()? {
            None => self.propose_as_leader(cmd).await?,
            Some(leader) => {
                let command = serde_json::to_vec(&cmd)?;
                let reply = self
                    .peers
                    .call(
                        &leader,
                        cairn_common::proto::PoolRequest::Propose { command },
                        FORWARD_TIMEOUT,
                    )
                    .await
                    .map_err(|e| match e {
                        cairn_common::transport::RpcError::Remote { message, .. } => anyhow::anyhow!(message),
                        _ => no_quorum(self.voters().len()).context(format!("leader {leader}: {e}")),
                    })?;
                match reply {
                    cairn_common::proto::PoolReply::Committed { result, index } => (result, index),
                    other => bail!("unexpected reply from the leader: {other:?}"),
                }
            }
        };
        let _ = self
            .raft()
            .wait(Some(COMMIT_TIMEOUT))
            .applied_index_at_least(Some(index), "the change applies here")
            .await;
        result.map_err(|e| anyhow::anyhow!(e))
    }

    /// Commits `cmd` here; refuses if this node does not lead. Returns the
    /// command's verdict and its log index.
    pub async fn propose_as_leader(&self, cmd: Command) -> anyhow::Result<(CommandResult, u64)> {
        self.check_quorum_fresh().await?;
        let raft = self.raft();
        match tokio::time::timeout(COMMIT_TIMEOUT, raft.client_write(cmd)).await {
            // Quorum was lost between the check and the commit: the entry
            // is in this leader's log and may still commit.
            Err(_) => bail!(
                "the change did not commit in time: the pool lost its quorum while committing it; \
                 it takes effect only if a majority returns before a new leader replaces it"
            ),
            Ok(Ok(resp)) => Ok((resp.data, resp.log_id.index)),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                bail!("this node no longer leads the pool; try again")
            }
            Ok(Err(e)) => Err(anyhow::anyhow!("{e}")).context("committing the change"),
        }
    }

    /// Leader side of a probe: make the node that accepted our join a
    /// voting member (first a learner, so it has the log before it votes).
    pub async fn add_member(&self, id: Uuid, address: &str) -> anyhow::Result<()> {
        if let Some(leader) = self.leader_elsewhere()? {
            return self
                .forward(
                    &leader,
                    cairn_common::proto::PoolRequest::AddMember {
                        id,
                        address: address.to_string(),
                    },
                )
                .await;
        }
        self.check_quorum_fresh().await?;
        let raft = self.raft();
        let member = Member {
            address: address.to_string(),
        };
        tokio::time::timeout(COMMIT_TIMEOUT, raft.add_learner(MemberId(id), member, true))
            .await
            .map_err(|_| anyhow::anyhow!("{address} did not catch up with the pool in time"))?
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("adding the node as a learner")?;
        self.change_voters(
            ChangeMembers::AddVoterIds(BTreeSet::from([MemberId(id)])),
            "making the node a voting member",
        )
        .await
    }

    async fn change_voters(&self, change: ChangeMembers<MemberId, Member>, what: &'static str) -> anyhow::Result<()> {
        tokio::time::timeout(COMMIT_TIMEOUT, self.raft().change_membership(change, false))
            .await
            .map_err(|_| no_quorum(self.voters().len()))?
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context(what)?;
        Ok(())
    }

    pub async fn remove_member(&self, id: Uuid) -> anyhow::Result<()> {
        if let Some(leader) = self.leader_elsewhere()? {
            return self
                .forward(&leader, cairn_common::proto::PoolRequest::RemoveMember { id })
                .await;
        }
        self.check_quorum_fresh().await?;
        self.change_voters(
            ChangeMembers::RemoveVoters(BTreeSet::from([MemberId(id)])),
            "removing the member",
        )
        .await
    }

    async fn forward(&self, leader: &str, req: cairn_common::proto::PoolRequest) -> anyhow::Result<()> {
        match self.peers.call(leader, req, FORWARD_TIMEOUT).await {
            Ok(_) => Ok(()),
            Err(cairn_common::transport::RpcError::Remote { message, .. }) => Err(anyhow::anyhow!(message)),
            Err(e) => Err(no_quorum(self.voters().len()).context(format!("leader {leader}: {e}"))),
        }
    }

    /// Throws away this node's (single-member, volume-less) pool state and
    /// waits as a member-to-be of `pool_id`; with `bootstrap`, starts a
    /// fresh pool of one instead (after being detached).
    pub async fn reset(&self, pool_id: Uuid, bootstrap: bool) -> anyhow::Result<()> {
        let old = self.raft();
        old.shutdown()
            .await
            .map_err(|e| anyhow::anyhow!("stopping consensus: {e}"))?;
        let dir = raft_dir(&self.state_dir);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", dir.display())),
        }
        let info = PoolInfo {
            pool_id,
            joined: !bootstrap,
        };
        cairn_common::state::write_private(&info_path(&self.state_dir), &serde_json::to_vec_pretty(&info)?)?;
        *self.info.lock().expect("pool info poisoned") = info;
        let raft = Self::open_raft(
            &self.state_dir,
            self.id,
            &self.address,
            &self.peers,
            &self.applied_tx,
            bootstrap,
        )
        .await?;
        *self.raft.write().expect("raft poisoned") = raft;
        Ok(())
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.raft().shutdown().await {
            tracing::warn!(error = %e, "consensus did not stop cleanly");
        }
    }
}

/// Logs who leads and who is a member whenever that changes.
async fn log_changes(mut metrics: tokio::sync::watch::Receiver<openraft::RaftMetrics<MemberId, Member>>, me: Uuid) {
    let mut last: Option<(Option<Uuid>, Vec<Uuid>)> = None;
    loop {
        let now = {
            let m = metrics.borrow_and_update();
            let members: Vec<Uuid> = m.membership_config.membership().voter_ids().map(|v| v.0).collect();
            (m.current_leader.map(|l| l.0), members)
        };
        if last.as_ref() != Some(&now) {
            match now.0 {
                Some(l) if l == me => tracing::info!(members = now.1.len(), "this node leads the pool"),
                Some(l) => tracing::info!(leader = %l, members = now.1.len(), "pool leader"),
                None => tracing::warn!(members = now.1.len(), "the pool has no leader (no quorum in reach)"),
            }
            last = Some(now);
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}
