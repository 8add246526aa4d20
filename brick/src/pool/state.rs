//! The replicated pool configuration: what every member agrees on (volumes,
//! their bricks and options, client-certificate revocations), the commands
//! that change it, and how a command applies. Pure data: no I/O, so the
//! rules are unit-tested apart from the consensus machinery.

use cairn_common::addr;
use cairn_common::proto::{VolumeSpec, VolumeState};
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
        }
    }

    fn volume_mut(&mut self, name: &str) -> Result<&mut VolumeSpec, String> {
        self.volumes
            .get_mut(name)
            .ok_or_else(|| format!("Volume {name} does not exist"))
    }

    /// A brick of `spec` nested in (or holding) a brick of another volume
    /// on the same node.
    pub fn overlap(&self, spec: &VolumeSpec) -> Option<String> {
        for b in &spec.bricks {
            for v in self.volumes.values() {
                for other in &v.bricks {
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
}
