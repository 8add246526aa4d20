//! The replicated pool configuration: what every member agrees on (volumes,
//! their bricks and options, client-certificate revocations), the commands
//! that change it, and how a command applies. Pure data: no I/O, so the
//! rules are unit-tested apart from the consensus machinery.

use cairn_common::addr;
use cairn_common::proto::{BrickSpec, NodeRebalance, RebalanceKind, RebalanceTask, TaskState, VolumeSpec, VolumeState};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use uuid::Uuid;

/// A pool member as the consensus layer knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Canonical `host:port` the member was probed by.
    pub address: String,
}

/// A member's id: its node's uuid. A newtype so that openraft's storage
/// conformance suite, which makes ids from integers, runs against our
/// stores (`From<u64>`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MemberId(pub Uuid);

impl std::fmt::Display for MemberId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u64> for MemberId {
    fn from(n: u64) -> MemberId {
        MemberId(Uuid::from_u64_pair(0, n))
    }
}

openraft::declare_raft_types!(
    /// The consensus layer's types for the pool configuration.
    pub PoolTypes:
        D = Command,
        R = CommandResult,
        NodeId = MemberId,
        Node = Member,
);

/// A change to the pool configuration, committed by a majority.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Brick paths were checked on their nodes before proposing; `force`
    /// lets a node reuse a directory that was once a brick.
    CreateVolume {
        spec: VolumeSpec,
        force: bool,
    },
    SetVolumeState {
        name: String,
        state: VolumeState,
    },
    DeleteVolume {
        name: String,
    },
    /// Sets (Some) or resets (None) options in one change.
    SetOptions {
        name: String,
        changes: Vec<(String, Option<String>)>,
    },
    ClearOptions {
        name: String,
    },
    IssueClient {
        name: String,
    },
    RevokeClient {
        name: String,
    },
    /// `volume add-brick`: `bricks` is the volume's complete new brick list,
    /// in order (existing bricks keep their ids; with a higher `replica`
    /// the new bricks sit inside their sets).
    AddBricks {
        name: String,
        bricks: Vec<BrickSpec>,
        replica: u32,
        force: bool,
    },
    /// `rebalance … start` or `remove-brick … start`: records the task, and
    /// the subvolumes (first brick ids) it drains.
    StartTask {
        name: String,
        task: RebalanceTask,
        decommission: Vec<Uuid>,
    },
    /// `rebalance … stop` / `remove-brick … stop`.
    StopTask {
        name: String,
        id: Uuid,
    },
    /// A node's rebalance worker ended; `report` is its final row.
    TaskNodeFinished {
        name: String,
        id: Uuid,
        report: NodeRebalance,
    },
    /// `remove-brick … commit` / `… force`: whole replica sets leave.
    RemoveBricks {
        name: String,
        bricks: Vec<Uuid>,
    },
    /// `replace-brick … commit force`: the brick keeps its id (it names the
    /// replica set's changelog) and moves to `node:path`.
    ReplaceBrick {
        name: String,
        id: Uuid,
        node: String,
        path: String,
    },
}

/// A command's outcome: commands are re-checked when applied, so two
/// concurrent `volume create gv0` on different nodes cannot both win.
pub type CommandResult = Result<(), String>;

/// Volumes (keyed by name) and client certificates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolState {
    pub volumes: BTreeMap<String, VolumeSpec>,
    /// `volume create` force flags, kept for the nodes that prepare bricks
    /// after catching up.
    #[serde(default)]
    pub forced: BTreeSet<String>,
    pub clients_issued: BTreeSet<String>,
    pub clients_revoked: BTreeSet<String>,
}

impl PoolState {
    pub fn apply(&mut self, cmd: &Command) -> CommandResult {
        match cmd {
            Command::CreateVolume { spec, force } => {
                if self.volumes.contains_key(&spec.name) {
                    return Err(format!("Volume {} already exists", spec.name));
                }
                if let Some(msg) = self.overlap(spec) {
                    return Err(msg);
                }
                if *force {
                    self.forced.insert(spec.name.clone());
                }
                self.volumes.insert(spec.name.clone(), spec.clone());
                Ok(())
            }
            Command::SetVolumeState { name, state } => {
                let v = self.volume_mut(name)?;
                v.state = *state;
                v.version += 1;
                Ok(())
            }
            Command::DeleteVolume { name } => {
                let v = self.volume_mut(name)?;
                if v.state == VolumeState::Started {
                    return Err(format!(
                        "Volume {name} has been started.Volume needs to be stopped before deletion."
                    ));
                }
                self.volumes.remove(name);
                self.forced.remove(name);
                Ok(())
            }
            Command::SetOptions { name, changes } => {
                let v = self.volume_mut(name)?;
                for (k, val) in changes {
                    match val {
                        Some(val) => v.options.insert(k.clone(), val.clone()),
                        None => v.options.remove(k),
                    };
                }
                v.version += 1;
                Ok(())
            }
            Command::ClearOptions { name } => {
                let v = self.volume_mut(name)?;
                v.options.clear();
                v.version += 1;
                Ok(())
            }
            Command::IssueClient { name } => {
                if self.clients_revoked.contains(name) {
                    return Err(format!(
                        "client name {name} was revoked; issue a certificate under another name"
                    ));
                }
                self.clients_issued.insert(name.clone());
                Ok(())
            }
            Command::RevokeClient { name } => {
                if !self.clients_issued.contains(name) {
                    return Err(format!("no client certificate {name} was issued in this pool"));
                }
                self.clients_revoked.insert(name.clone());
                Ok(())
            }
            Command::AddBricks {
                name,
                bricks,
                replica,
                force,
            } => self.add_bricks(name, bricks, *replica, *force),
            Command::StartTask {
                name,
                task,
                decommission,
            } => self.start_task(name, task, decommission),
            Command::StopTask { name, id } => self.stop_task(name, *id),
            Command::TaskNodeFinished { name, id, report } => self.task_node_finished(name, *id, report),
            Command::RemoveBricks { name, bricks } => self.remove_bricks(name, bricks),
            Command::ReplaceBrick { name, id, node, path } => self.replace_brick(name, *id, node, path),
        }
    }

    fn add_bricks(&mut self, name: &str, bricks: &[BrickSpec], replica: u32, force: bool) -> CommandResult {
        let v = self.volume_mut(name)?;
        refuse_while_busy(v)?;
        let old_r = v.replica.max(1);
        if replica < old_r {
            return Err(format!(
                "Incorrect replica count ({replica}) supplied. Volume already has ({old_r})"
            ));
        }
        if replica > old_r && v.arbiter {
            return Err(format!(
                "Volume {name} has arbiter bricks: changing its replica count is not supported"
            ));
        }
        if bricks.len() <= v.bricks.len() || bricks.len() % replica as usize != 0 {
            return Err(format!(
                "Incorrect number of bricks: {} bricks do not form replica sets of {replica}",
                bricks.len()
            ));
        }
        if bricks.len() > MAX_BRICKS {
            return Err(format!("a volume holds at most {MAX_BRICKS} bricks"));
        }
        if let Some(gone) = v.bricks.iter().find(|b| !bricks.iter().any(|n| n.id == b.id)) {
            return Err(format!("brick {} would be dropped by add-brick", gone.label()));
        }
        let old: Vec<Uuid> = v.bricks.iter().map(|b| b.id).collect();
        let added: Vec<BrickSpec> = bricks.iter().filter(|b| !old.contains(&b.id)).cloned().collect();
        if let Some(msg) = nested_within(&added) {
            return Err(msg);
        }
        if let Some(msg) = self.overlap_bricks(&added, &[]) {
            return Err(msg);
        }
        if force {
            self.forced.insert(name.to_string());
        }
        let v = self.volume_mut(name)?;
        v.bricks = bricks.to_vec();
        v.replica = replica;
        v.version += 1;
        Ok(())
    }

    fn start_task(&mut self, name: &str, task: &RebalanceTask, decommission: &[Uuid]) -> CommandResult {
        let v = self.volume_mut(name)?;
        refuse_while_busy(v)?;
        let r = v.replica.max(1) as usize;
        let firsts: Vec<Uuid> = v.bricks.chunks(r).map(|set| set[0].id).collect();
        if let Some(id) = decommission.iter().find(|id| !firsts.contains(id)) {
            return Err(format!("{id} names no replica set of volume {name}"));
        }
        if !decommission.is_empty() && decommission.len() >= firsts.len() {
            return Err("Deleting all the bricks of the volume is not allowed".to_string());
        }
        v.task = Some(task.clone());
        v.decommissioned = decommission.to_vec();
        v.version += 1;
        Ok(())
    }

    fn stop_task(&mut self, name: &str, id: Uuid) -> CommandResult {
        let v = self.volume_mut(name)?;
        let Some(task) = v.task.as_mut().filter(|t| t.id == id) else {
            return Err(format!("task {id} is not the current task of volume {name}"));
        };
        let remove_brick = matches!(task.kind, RebalanceKind::RemoveBrick { .. });
        // A finished remove-brick may still be stopped: that cancels the
        // decommission instead of committing it.
        if task.stopped || (!remove_brick && !task_running(task)) {
            return Err(format!("{} is not running on volume {name}", task_name(task)));
        }
        task.stopped = true;
        if remove_brick {
            v.decommissioned.clear();
        }
        v.version += 1;
        Ok(())
    }

    fn task_node_finished(&mut self, name: &str, id: Uuid, report: &NodeRebalance) -> CommandResult {
        let v = self.volume_mut(name)?;
        let Some(task) = v.task.as_mut().filter(|t| t.id == id) else {
            return Err(format!("task {id} is not the current task of volume {name}"));
        };
        // Recorded under the task's own spelling of the node's address.
        let node = task
            .nodes
            .iter()
            .find(|n| **n == report.node)
            .or_else(|| task.nodes.iter().find(|n| addr::same_node(n, &report.node)))
            .cloned()
            .unwrap_or_else(|| report.node.clone());
        let mut report = report.clone();
        report.node = node.clone();
        task.finished.insert(node, report);
        let all_done = task.nodes.iter().all(|n| task.finished.contains_key(n));
        let clean = task
            .finished
            .values()
            .all(|r| r.state == TaskState::Completed && r.failures == 0);
        // Every file now sits where the task's layouts say (or behind a
        // link file there): those layouts are settled. A fix-layout alone
        // never settles, as gluster's.
        if all_done && clean && !matches!(task.kind, RebalanceKind::FixLayout) {
            v.layout_commit = task.commit;
        }
        v.version += 1;
        Ok(())
    }

    fn remove_bricks(&mut self, name: &str, bricks: &[Uuid]) -> CommandResult {
        let v = self.volume_mut(name)?;
        if let Some(task) = v.task.as_ref().filter(|t| task_running(t)) {
            return Err(busy_message(name, task));
        }
        if let Some(id) = bricks.iter().find(|id| !v.bricks.iter().any(|b| b.id == **id)) {
            return Err(format!("brick {id} is not a brick of volume {name}"));
        }
        let r = v.replica.max(1) as usize;
        let mut left = Vec::new();
        for set in v.bricks.chunks(r) {
            let leaving = set.iter().filter(|b| bricks.contains(&b.id)).count();
            if leaving == 0 {
                left.extend_from_slice(set);
            } else if leaving != set.len() {
                return Err(format!(
                    "Bricks not from same subvol for replica: remove all {r} bricks of a replica set (the set of {})",
                    set[0].label()
                ));
            }
        }
        if left.is_empty() {
            return Err("Deleting all the bricks of the volume is not allowed".to_string());
        }
        v.bricks = left;
        v.decommissioned.clear();
        if v.task
            .as_ref()
            .is_some_and(|t| matches!(t.kind, RebalanceKind::RemoveBrick { .. }))
        {
            v.task = None;
        }
        v.version += 1;
        Ok(())
    }

    fn replace_brick(&mut self, name: &str, id: Uuid, node: &str, path: &str) -> CommandResult {
        let v = self.volume_mut(name)?;
        if let Some(task) = v.task.as_ref().filter(|t| task_running(t)) {
            return Err(busy_message(name, task));
        }
        let Some(old) = v.bricks.iter().find(|b| b.id == id) else {
            return Err(format!("brick {id} is not a brick of volume {name}"));
        };
        if old.node == node && old.path == path {
            return Err(format!("{} is already the brick {}", old.label(), old.label()));
        }
        let new = BrickSpec {
            id,
            node: node.to_string(),
            path: path.to_string(),
        };
        if let Some(msg) = self.overlap_bricks(std::slice::from_ref(&new), &[id]) {
            return Err(msg);
        }
        // `replace-brick … commit force` is forced, as gluster's: the node
        // prepares the new brick even in a directory that was a brick.
        self.forced.insert(name.to_string());
        let v = self.volume_mut(name)?;
        let Some(b) = v.bricks.iter_mut().find(|b| b.id == id) else {
            return Err(format!("brick {id} is not a brick of volume {name}"));
        };
        b.node = new.node;
        b.path = new.path;
        v.version += 1;
        Ok(())
    }

    fn volume_mut(&mut self, name: &str) -> Result<&mut VolumeSpec, String> {
        self.volumes
            .get_mut(name)
            .ok_or_else(|| format!("Volume {name} does not exist"))
    }

    /// A brick of `spec` nested in (or holding) a brick of another volume
    /// on the same node.
    pub fn overlap(&self, spec: &VolumeSpec) -> Option<String> {
        self.overlap_bricks(&spec.bricks, &[])
    }

    /// A brick of `bricks` nested in (or holding) a brick of any volume on
    /// the same node, leaving out the bricks `skip` names.
    pub fn overlap_bricks(&self, bricks: &[BrickSpec], skip: &[Uuid]) -> Option<String> {
        for b in bricks {
            for v in self.volumes.values() {
                for other in v.bricks.iter().filter(|o| !skip.contains(&o.id)) {
                    if addr::same_node(&other.node, &b.node)
                        && (addr::path_within(&b.path, &other.path) || addr::path_within(&other.path, &b.path))
                    {
                        return Some(format!(
                            "Brick: {} overlaps brick {} of volume {}",
                            b.label(),
                            other.label(),
                            v.name
                        ));
                    }
                }
            }
        }
        None
    }

    /// Volumes with a brick on the member at `address`.
    pub fn volumes_on(&self, address: &str) -> Vec<String> {
        self.volumes
            .values()
            .filter(|v| v.bricks.iter().any(|b| addr::same_node(&b.node, address)))
            .map(|v| v.name.clone())
            .collect()
    }
}

/// Most bricks a volume may list.
pub const MAX_BRICKS: usize = 127;

/// Is the task still running: not stopped, and some node of it has not
/// reported its end?
pub fn task_running(task: &RebalanceTask) -> bool {
    !task.stopped && !task.nodes.iter().all(|n| task.finished.contains_key(n))
}

/// Has `remove-brick start` drained bricks that are neither committed nor
/// stopped yet? (The volume's layouts leave those subvolumes out.)
pub fn remove_brick_pending(v: &VolumeSpec) -> bool {
    !v.decommissioned.is_empty()
        && v.task
            .as_ref()
            .is_some_and(|t| !t.stopped && matches!(t.kind, RebalanceKind::RemoveBrick { .. }))
}

fn task_name(task: &RebalanceTask) -> &'static str {
    match task.kind {
        RebalanceKind::RemoveBrick { .. } => "remove-brick",
        _ => "Rebalance",
    }
}

/// gluster's refusals while a task holds the volume.
pub fn busy_message(name: &str, task: &RebalanceTask) -> String {
    match task.kind {
        RebalanceKind::RemoveBrick { .. } if task_running(task) => format!(
            "A remove-brick task on volume {name} is in progress. Either wait for it to complete and commit it, or stop it"
        ),
        RebalanceKind::RemoveBrick { .. } => format!(
            "An earlier remove-brick task exists for volume {name}. Either commit it or stop it before starting a new task."
        ),
        _ => format!("Volume {name} rebalance is in progress. Please retry after completion"),
    }
}

/// Refuses a change to the volume's bricks or a new task while a task
/// runs or a remove-brick awaits its commit.
fn refuse_while_busy(v: &VolumeSpec) -> CommandResult {
    match &v.task {
        Some(t) if task_running(t) || remove_brick_pending(v) => Err(busy_message(&v.name, t)),
        _ => Ok(()),
    }
}

/// Two of `bricks` on one node, one inside the other.
fn nested_within(bricks: &[BrickSpec]) -> Option<String> {
    for (i, a) in bricks.iter().enumerate() {
        if let Some(b) = bricks[i + 1..].iter().find(|b| {
            addr::same_node(&a.node, &b.node)
                && (addr::path_within(&a.path, &b.path) || addr::path_within(&b.path, &a.path))
        }) {
            return Some(format!(
                "Brick: {} overlaps brick {} of the same command",
                b.label(),
                a.label()
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_common::proto::BrickSpec;

    fn spec(name: &str, bricks: &[(&str, &str)]) -> VolumeSpec {
        VolumeSpec {
            name: name.into(),
            id: Uuid::new_v4(),
            state: VolumeState::Created,
            bricks: bricks
                .iter()
                .map(|(n, p)| BrickSpec {
                    id: Uuid::new_v4(),
                    node: n.to_string(),
                    path: p.to_string(),
                })
                .collect(),
            options: BTreeMap::new(),
            version: 1,
            replica: 1,
            arbiter: false,
            layout_commit: cairn_common::layout::INITIAL_COMMIT,
            decommissioned: Vec::new(),
            task: None,
        }
    }

    #[test]
    fn a_volume_name_is_created_once() {
        let mut s = PoolState::default();
        let create = |sp| Command::CreateVolume { spec: sp, force: false };
        assert_eq!(s.apply(&create(spec("gv0", &[("10.0.0.1:24007", "/b1")]))), Ok(()));
        let again = s.apply(&create(spec("gv0", &[("10.0.0.2:24007", "/b1")])));
        assert_eq!(again, Err("Volume gv0 already exists".into()));
        assert_eq!(s.volumes["gv0"].bricks[0].node, "10.0.0.1:24007");
    }

    #[test]
    fn nested_bricks_on_one_node_are_refused_across_volumes() {
        let mut s = PoolState::default();
        let create = |sp| Command::CreateVolume { spec: sp, force: false };
        s.apply(&create(spec("a", &[("10.0.0.1:24007", "/srv/b")]))).unwrap();
        assert!(s
            .apply(&create(spec("b", &[("10.0.0.1:24007", "/srv/b/inner")])))
            .unwrap_err()
            .contains("overlaps"));
        // The same path on another node is a different brick.
        s.apply(&create(spec("c", &[("10.0.0.2:24007", "/srv/b")]))).unwrap();
    }

    #[test]
    fn started_volumes_are_not_deleted_and_versions_advance() {
        let mut s = PoolState::default();
        s.apply(&Command::CreateVolume {
            spec: spec("gv0", &[("h:1", "/b")]),
            force: false,
        })
        .unwrap();
        s.apply(&Command::SetVolumeState {
            name: "gv0".into(),
            state: VolumeState::Started,
        })
        .unwrap();
        assert!(s.apply(&Command::DeleteVolume { name: "gv0".into() }).is_err());
        s.apply(&Command::SetOptions {
            name: "gv0".into(),
            changes: vec![("auth.allow".into(), Some("10.*".into()))],
        })
        .unwrap();
        assert_eq!(s.volumes["gv0"].version, 3);
        s.apply(&Command::ClearOptions { name: "gv0".into() }).unwrap();
        assert!(s.volumes["gv0"].options.is_empty());
        assert!(s.apply(&Command::ClearOptions { name: "nope".into() }).is_err());
    }

    #[test]
    fn revoked_client_names_stay_revoked() {
        let mut s = PoolState::default();
        assert!(s.apply(&Command::RevokeClient { name: "m1".into() }).is_err());
        s.apply(&Command::IssueClient { name: "m1".into() }).unwrap();
        s.apply(&Command::RevokeClient { name: "m1".into() }).unwrap();
        assert!(s.apply(&Command::IssueClient { name: "m1".into() }).is_err());
    }

    fn brick(node: &str, path: &str) -> BrickSpec {
        BrickSpec {
            id: Uuid::new_v4(),
            node: node.into(),
            path: path.into(),
        }
    }

    fn pool_with(v: VolumeSpec) -> PoolState {
        let mut s = PoolState::default();
        s.apply(&Command::CreateVolume { spec: v, force: false }).unwrap();
        s
    }

    fn task(kind: RebalanceKind, nodes: &[&str]) -> RebalanceTask {
        RebalanceTask {
            id: Uuid::new_v4(),
            kind,
            commit: 2,
            started: 0,
            stopped: false,
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            finished: BTreeMap::new(),
        }
    }

    fn report(node: &str, state: TaskState, failures: u64) -> NodeRebalance {
        NodeRebalance {
            node: node.into(),
            files: 1,
            bytes: 10,
            scanned: 2,
            failures,
            skipped: 0,
            fixed_dirs: 1,
            state,
            run_time_s: 1,
            estimate_s: None,
            reachable: true,
        }
    }

    fn start(s: &mut PoolState, t: &RebalanceTask, decommission: Vec<Uuid>) -> CommandResult {
        s.apply(&Command::StartTask {
            name: "gv0".into(),
            task: t.clone(),
            decommission,
        })
    }

    fn finish(s: &mut PoolState, t: &RebalanceTask, r: NodeRebalance) -> CommandResult {
        s.apply(&Command::TaskNodeFinished {
            name: "gv0".into(),
            id: t.id,
            report: r,
        })
    }

    #[test]
    fn add_bricks_keeps_existing_ones_and_refuses_overlaps() {
        let mut s = pool_with(spec("gv0", &[("h1:1", "/b1"), ("h2:1", "/b1")]));
        s.apply(&Command::CreateVolume {
            spec: spec("other", &[("h3:1", "/o")]),
            force: false,
        })
        .unwrap();
        let old = s.volumes["gv0"].bricks.clone();
        let add = |bricks: Vec<BrickSpec>, replica| Command::AddBricks {
            name: "gv0".into(),
            bricks,
            replica,
            force: false,
        };
        // Dropping an existing brick, overlapping another volume or the
        // volume itself, or nesting new bricks in each other is refused.
        assert!(PoolState::clone(&s)
            .apply(&add(vec![old[0].clone(), brick("h3:1", "/n"), brick("h3:1", "/m")], 1))
            .unwrap_err()
            .contains("dropped"));
        let mut with = old.clone();
        with.push(brick("h3:1", "/o/inner"));
        assert!(s.apply(&add(with, 1)).unwrap_err().contains("of volume other"));
        let mut with = old.clone();
        with.push(brick("h1:1", "/b1/x"));
        assert!(s.apply(&add(with, 1)).unwrap_err().contains("of volume gv0"));
        let mut with = old.clone();
        with.extend([brick("h3:1", "/n"), brick("h3:1", "/n/m")]);
        assert!(s.apply(&add(with, 1)).unwrap_err().contains("same command"));
        let mut with = old.clone();
        with.push(brick("h3:1", "/n"));
        assert!(s.apply(&add(with.clone(), 2)).unwrap_err().contains("Incorrect number"));
        assert_eq!(s.volumes["gv0"].version, 1, "nothing changed on refusals");
        // The volume's own bricks are not flagged against themselves.
        s.apply(&Command::AddBricks {
            name: "gv0".into(),
            bricks: with.clone(),
            replica: 1,
            force: true,
        })
        .unwrap();
        let v = &s.volumes["gv0"];
        assert_eq!((v.bricks.len(), v.replica, v.version), (3, 1, 2));
        assert!(s.forced.contains("gv0"));
        // A lower replica count is refused.
        assert!(s.apply(&add(with, 0)).is_err());
    }

    #[test]
    fn add_bricks_raises_the_replica_count() {
        let mut s = pool_with(spec("gv0", &[("h1:1", "/b"), ("h2:1", "/b")]));
        let old = s.volumes["gv0"].bricks.clone();
        let bricks = vec![old[0].clone(), brick("h3:1", "/b"), old[1].clone(), brick("h4:1", "/b")];
        s.apply(&Command::AddBricks {
            name: "gv0".into(),
            bricks: bricks.clone(),
            replica: 2,
            force: false,
        })
        .unwrap();
        assert_eq!(s.volumes["gv0"].bricks, bricks);
        assert_eq!(s.volumes["gv0"].replica, 2);
        assert!(!s.forced.contains("gv0"));
    }

    #[test]
    fn tasks_block_brick_changes_while_they_run() {
        let mut s = pool_with(spec("gv0", &[("h1:1", "/b1"), ("h2:1", "/b2")]));
        let t = task(RebalanceKind::Migrate { force: false }, &["h1:1", "h2:1"]);
        start(&mut s, &t, vec![]).unwrap();
        assert_eq!(s.volumes["gv0"].version, 2);
        let mut bricks = s.volumes["gv0"].bricks.clone();
        bricks.push(brick("h3:1", "/b3"));
        let add = Command::AddBricks {
            name: "gv0".into(),
            bricks,
            replica: 1,
            force: false,
        };
        assert!(s.apply(&add).unwrap_err().contains("rebalance is in progress"));
        let second = task(RebalanceKind::FixLayout, &["h1:1"]);
        assert!(start(&mut s, &second, vec![]).is_err());
        let first = s.volumes["gv0"].bricks[0].id;
        assert!(s
            .apply(&Command::RemoveBricks {
                name: "gv0".into(),
                bricks: vec![first],
            })
            .is_err());
        finish(&mut s, &t, report("h1:1", TaskState::Completed, 0)).unwrap();
        assert!(s.apply(&add).is_err(), "h2 has not finished");
        finish(&mut s, &t, report("h2:1", TaskState::Completed, 0)).unwrap();
        assert_eq!(
            s.volumes["gv0"].layout_commit, 2,
            "a clean migration settles the layout"
        );
        s.apply(&add).unwrap();
        // A finished task cannot be stopped; another may start.
        assert!(s
            .apply(&Command::StopTask {
                name: "gv0".into(),
                id: t.id,
            })
            .is_err());
        start(&mut s, &second, vec![]).unwrap();
    }

    #[test]
    fn layout_commit_moves_only_after_a_clean_migration() {
        for (kind, state, failures) in [
            (RebalanceKind::FixLayout, TaskState::Completed, 0),
            (RebalanceKind::Migrate { force: true }, TaskState::Completed, 1),
            (RebalanceKind::Migrate { force: true }, TaskState::Failed, 0),
        ] {
            let mut s = pool_with(spec("gv0", &[("h1:1", "/b1"), ("h2:1", "/b2")]));
            let t = task(kind, &["h1:1"]);
            start(&mut s, &t, vec![]).unwrap();
            finish(&mut s, &t, report("h1:1", state, failures)).unwrap();
            let v = &s.volumes["gv0"];
            assert_eq!(v.layout_commit, cairn_common::layout::INITIAL_COMMIT);
            assert!(v.task.as_ref().unwrap().finished.contains_key("h1:1"));
        }
        // A clean migration, by rebalance or by remove-brick, settles once
        // the last node reports.
        for kind in [
            RebalanceKind::Migrate { force: false },
            RebalanceKind::RemoveBrick { bricks: vec![] },
        ] {
            let mut s = pool_with(spec("gv0", &[("h1:1", "/b1"), ("h2:1", "/b2")]));
            let t = task(kind, &["h1:1", "h2:1"]);
            start(&mut s, &t, vec![]).unwrap();
            finish(&mut s, &t, report("h1:1", TaskState::Completed, 0)).unwrap();
            assert_eq!(s.volumes["gv0"].layout_commit, cairn_common::layout::INITIAL_COMMIT);
            finish(&mut s, &t, report("h2:1", TaskState::Completed, 0)).unwrap();
            assert_eq!(s.volumes["gv0"].layout_commit, t.commit);
        }
        // A report for another task is refused.
        let mut s = pool_with(spec("gv0", &[("h1:1", "/b1"), ("h2:1", "/b2")]));
        let t = task(RebalanceKind::FixLayout, &["h1:1"]);
        start(&mut s, &t, vec![]).unwrap();
        let other = task(RebalanceKind::FixLayout, &["h1:1"]);
        assert!(finish(&mut s, &other, report("h1:1", TaskState::Completed, 0)).is_err());
    }

    #[test]
    fn a_stopped_task_records_late_reports_and_settles_nothing() {
        let mut s = pool_with(spec("gv0", &[("h1:1", "/b1"), ("h2:1", "/b2")]));
        let t = task(RebalanceKind::Migrate { force: false }, &["h1:1"]);
        start(&mut s, &t, vec![]).unwrap();
        let stop = Command::StopTask {
            name: "gv0".into(),
            id: t.id,
        };
        s.apply(&stop).unwrap();
        assert!(s.volumes["gv0"].task.as_ref().unwrap().stopped);
        assert!(s.apply(&stop).is_err(), "already stopped");
        finish(&mut s, &t, report("h1:1", TaskState::Stopped, 0)).unwrap();
        assert_eq!(s.volumes["gv0"].task.as_ref().unwrap().finished.len(), 1);
        assert_eq!(s.volumes["gv0"].layout_commit, cairn_common::layout::INITIAL_COMMIT);
    }

    #[test]
    fn remove_brick_decommissions_then_commits_whole_sets() {
        let mut v = spec("gv0", &[("h1:1", "/a"), ("h2:1", "/a"), ("h1:1", "/b"), ("h2:1", "/b")]);
        v.replica = 2;
        let mut s = pool_with(v);
        let ids: Vec<Uuid> = s.volumes["gv0"].bricks.iter().map(|b| b.id).collect();
        let t = task(
            RebalanceKind::RemoveBrick {
                bricks: vec![ids[2], ids[3]],
            },
            &["h1:1", "h2:1"],
        );
        // Only first bricks of sets can be decommissioned, not every set.
        assert!(start(&mut s, &t, vec![ids[3]]).is_err());
        assert!(start(&mut s, &t, vec![ids[0], ids[2]]).is_err());
        start(&mut s, &t, vec![ids[2]]).unwrap();
        assert_eq!(s.volumes["gv0"].decommissioned, vec![ids[2]]);
        finish(&mut s, &t, report("h1:1", TaskState::Completed, 0)).unwrap();
        finish(&mut s, &t, report("h2:1", TaskState::Completed, 0)).unwrap();
        // Finished but not committed: no new task.
        let reb = task(RebalanceKind::FixLayout, &["h1:1"]);
        assert!(start(&mut s, &reb, vec![])
            .unwrap_err()
            .contains("An earlier remove-brick task exists"));
        let remove = |bricks| Command::RemoveBricks {
            name: "gv0".into(),
            bricks,
        };
        assert!(s
            .apply(&remove(vec![ids[1], ids[2]]))
            .unwrap_err()
            .contains("same subvol"));
        assert!(s.apply(&remove(ids.clone())).unwrap_err().contains("all the bricks"));
        assert!(s.apply(&remove(vec![Uuid::new_v4()])).is_err());
        let before = s.volumes["gv0"].version;
        s.apply(&remove(vec![ids[2], ids[3]])).unwrap();
        let v = &s.volumes["gv0"];
        assert_eq!(v.bricks.iter().map(|b| b.id).collect::<Vec<_>>(), ids[..2].to_vec());
        assert!(v.decommissioned.is_empty());
        assert!(v.task.is_none());
        assert_eq!(v.version, before + 1);
    }

    #[test]
    fn stopping_a_remove_brick_cancels_the_decommission() {
        let mut s = pool_with(spec("gv0", &[("h1:1", "/a"), ("h2:1", "/b")]));
        let ids: Vec<Uuid> = s.volumes["gv0"].bricks.iter().map(|b| b.id).collect();
        let t = task(RebalanceKind::RemoveBrick { bricks: vec![ids[1]] }, &["h1:1", "h2:1"]);
        start(&mut s, &t, vec![ids[1]]).unwrap();
        finish(&mut s, &t, report("h1:1", TaskState::Completed, 0)).unwrap();
        finish(&mut s, &t, report("h2:1", TaskState::Completed, 0)).unwrap();
        // Finished, yet still stoppable: that abandons it.
        s.apply(&Command::StopTask {
            name: "gv0".into(),
            id: t.id,
        })
        .unwrap();
        assert!(s.volumes["gv0"].decommissioned.is_empty());
        // A plain remove (force) still works afterwards.
        s.apply(&Command::RemoveBricks {
            name: "gv0".into(),
            bricks: vec![ids[1]],
        })
        .unwrap();
        assert_eq!(s.volumes["gv0"].bricks.len(), 1);
    }

    #[test]
    fn replace_brick_keeps_the_id_and_checks_the_new_path() {
        let mut v = spec("gv0", &[("h1:1", "/a"), ("h2:1", "/a")]);
        v.replica = 2;
        let mut s = pool_with(v);
        s.apply(&Command::CreateVolume {
            spec: spec("other", &[("h3:1", "/o")]),
            force: false,
        })
        .unwrap();
        let id = s.volumes["gv0"].bricks[1].id;
        let replace = |node: &str, path: &str| Command::ReplaceBrick {
            name: "gv0".into(),
            id,
            node: node.into(),
            path: path.into(),
        };
        assert!(s.apply(&replace("h3:1", "/o/x")).unwrap_err().contains("overlaps"));
        assert!(s.apply(&replace("h2:1", "/a")).is_err(), "the same brick");
        assert!(s
            .apply(&Command::ReplaceBrick {
                name: "gv0".into(),
                id: Uuid::new_v4(),
                node: "h3:1".into(),
                path: "/n".into(),
            })
            .is_err());
        // Nested in its own old path on the same node: the old brick does
        // not count against its replacement.
        s.apply(&replace("h2:1", "/a/new")).unwrap();
        s.apply(&replace("h3:1", "/n")).unwrap();
        let v = &s.volumes["gv0"];
        assert_eq!(
            (v.bricks[1].id, v.bricks[1].node.as_str(), v.bricks[1].path.as_str()),
            (id, "h3:1", "/n")
        );
        assert_eq!(v.version, 3);
        assert!(s.forced.contains("gv0"));
    }
}
