//! Durable storage for the pool's consensus: the log (one JSON file per
//! entry, fsynced before it is acknowledged), the vote, and the applied
//! state machine (rewritten atomically after every applied batch).
//!
//! The pool configuration is small and changes at human speed, so plain
//! files in the state dir beat an embedded database: they are greppable
//! when an administrator needs to look, and cost nothing to depend on.
//! Calls do short blocking file I/O on the consensus task; that is fine at
//! a few commands a second.

// openraft's StorageError is large, and its traits dictate it.
#![allow(clippy::result_large_err)]

use super::state::{CommandResult, Member, MemberId, PoolState, PoolTypes};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StoredMembership, Vote,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

type StoreError = StorageError<MemberId>;

fn io_error(subject: ErrorSubject<MemberId>, verb: ErrorVerb, e: std::io::Error) -> StoreError {
    StorageError::from_io_error(subject, verb, e)
}

fn read_json<T: DeserializeOwned>(path: &Path) -> std::io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    cairn_common::state::write_private(path, &bytes).map_err(std::io::Error::other)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The consensus log and vote, under `<state>/raft/log`.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<LogInner>>,
}

struct LogInner {
    dir: PathBuf,
    entries: BTreeMap<u64, Entry<PoolTypes>>,
    vote: Option<Vote<MemberId>>,
    purged: Option<LogId<MemberId>>,
    committed: Option<LogId<MemberId>>,
}

impl LogInner {
    fn entry_path(&self, index: u64) -> PathBuf {
        self.dir.join(format!("{index:020}.json"))
    }
}

/// The pool's log and state live under the state dir and, like it, are
/// closed to other users (0700; the process umask narrows files further).
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

impl LogStore {
    pub fn open(dir: &Path) -> std::io::Result<LogStore> {
        create_private_dir(dir)?;
        let mut entries = BTreeMap::new();
        for item in std::fs::read_dir(dir)? {
            let path = item?.path();
            let is_entry = path
                .file_stem()
                .and_then(|s| s.to_str())
                .is_some_and(|s| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit()));
            if !is_entry {
                continue;
            }
            // A crash mid-append can leave a torn last file: an entry that
            // was never acknowledged, so dropping it is safe.
            match read_json::<Entry<PoolTypes>>(&path) {
                Ok(Some(e)) => {
                    entries.insert(e.log_id.index, e);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "dropping an unreadable log entry");
                    std::fs::remove_file(&path)?;
                }
            }
        }
        Ok(LogStore {
            inner: Arc::new(Mutex::new(LogInner {
                vote: read_json(&dir.join("vote.json"))?,
                purged: read_json(&dir.join("purged.json"))?,
                committed: read_json(&dir.join("committed.json"))?,
                dir: dir.to_path_buf(),
                entries,
            })),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogInner> {
        self.inner.lock().expect("log store poisoned")
    }

    /// No vote and no log: this node has never been part of a pool's
    /// consensus (or was reset to join one).
    pub fn is_pristine(&self) -> bool {
        let g = self.lock();
        g.vote.is_none() && g.entries.is_empty() && g.purged.is_none()
    }
}

impl RaftLogReader<PoolTypes> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<PoolTypes>>, StoreError> {
        Ok(self.lock().entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<PoolTypes> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<PoolTypes>, StoreError> {
        let g = self.lock();
        let last = g.entries.values().next_back().map(|e| e.log_id).or(g.purged);
        Ok(LogState {
            last_purged_log_id: g.purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<MemberId>) -> Result<(), StoreError> {
        let mut g = self.lock();
        write_json(&g.dir.join("vote.json"), vote).map_err(|e| io_error(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        g.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<MemberId>>, StoreError> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<MemberId>>) -> Result<(), StoreError> {
        let mut g = self.lock();
        write_json(&g.dir.join("committed.json"), &committed)
            .map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
        g.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<MemberId>>, StoreError> {
        Ok(self.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<PoolTypes>) -> Result<(), StoreError>
    where
        I: IntoIterator<Item = Entry<PoolTypes>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut g = self.lock();
        let mut result = Ok(());
        for entry in entries {
            let path = g.entry_path(entry.log_id.index);
            if let Err(e) = write_json(&path, &entry) {
                result = Err(e);
                break;
            }
            g.entries.insert(entry.log_id.index, entry);
        }
        let result = result.and_then(|_| sync_dir(&g.dir));
        let failed = result
            .as_ref()
            .err()
            .map(|e| std::io::Error::new(e.kind(), e.to_string()));
        callback.log_io_completed(result);
        match failed {
            Some(e) => Err(io_error(ErrorSubject::Logs, ErrorVerb::Write, e)),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId<MemberId>) -> Result<(), StoreError> {
        let mut g = self.lock();
        let doomed: Vec<u64> = g.entries.range(log_id.index..).map(|(i, _)| *i).collect();
        for i in doomed {
            let path = g.entry_path(i);
            std::fs::remove_file(&path).map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
            g.entries.remove(&i);
        }
        sync_dir(&g.dir).map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId<MemberId>) -> Result<(), StoreError> {
        let mut g = self.lock();
        // Record the purge point first: a crash then leaves extra entries
        // below it, which are ignored, never a gap.
        write_json(&g.dir.join("purged.json"), &log_id)
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        g.purged = Some(log_id);
        let doomed: Vec<u64> = g.entries.range(..=log_id.index).map(|(i, _)| *i).collect();
        for i in doomed {
            let path = g.entry_path(i);
            std::fs::remove_file(&path).map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
            g.entries.remove(&i);
        }
        Ok(())
    }
}

/// What the state machine has applied: the configuration and the
/// membership it was applied under.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Applied {
    pub last_applied: Option<LogId<MemberId>>,
    pub membership: StoredMembership<MemberId, Member>,
    pub state: PoolState,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<MemberId, Member>,
    data: Vec<u8>,
}

/// The applied pool configuration, under `<state>/raft/state.json`, and
/// the latest snapshot. Every applied batch is published on `publish` for
/// the node to act on (open bricks, refuse revoked clients).
#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<Mutex<SmInner>>,
}

struct SmInner {
    dir: PathBuf,
    applied: Applied,
    snapshot: Option<StoredSnapshot>,
    publish: tokio::sync::watch::Sender<Arc<Applied>>,
}

impl SmInner {
    fn persist(&self) -> Result<(), StoreError> {
        write_json(&self.dir.join("state.json"), &self.applied)
            .map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Write, e))?;
        self.publish.send_replace(Arc::new(self.applied.clone()));
        Ok(())
    }
}

impl StateMachine {
    pub fn open(dir: &Path, publish: tokio::sync::watch::Sender<Arc<Applied>>) -> std::io::Result<StateMachine> {
        create_private_dir(dir)?;
        let applied: Applied = read_json(&dir.join("state.json"))?.unwrap_or_default();
        let snapshot = read_json(&dir.join("snapshot.json"))?;
        publish.send_replace(Arc::new(applied.clone()));
        Ok(StateMachine {
            inner: Arc::new(Mutex::new(SmInner {
                dir: dir.to_path_buf(),
                applied,
                snapshot,
                publish,
            })),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SmInner> {
        self.inner.lock().expect("state machine poisoned")
    }
}

impl RaftSnapshotBuilder<PoolTypes> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<PoolTypes>, StoreError> {
        let mut g = self.lock();
        let data = serde_json::to_vec(&g.applied.state).map_err(|e| {
            StorageError::from_io_error(ErrorSubject::StateMachine, ErrorVerb::Read, std::io::Error::other(e))
        })?;
        let last = g.applied.last_applied;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: g.applied.membership.clone(),
            snapshot_id: match last {
                Some(l) => format!("{}-{}", l.leader_id, l.index),
                None => "empty".to_string(),
            },
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        write_json(&g.dir.join("snapshot.json"), &stored)
            .map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
        g.snapshot = Some(stored);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<PoolTypes> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<MemberId>>, StoredMembership<MemberId, Member>), StoreError> {
        let g = self.lock();
        Ok((g.applied.last_applied, g.applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StoreError>
    where
        I: IntoIterator<Item = Entry<PoolTypes>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut g = self.lock();
        let mut results = Vec::new();
        for entry in entries {
            g.applied.last_applied = Some(entry.log_id);
            results.push(match &entry.payload {
                EntryPayload::Blank => Ok(()),
                EntryPayload::Normal(cmd) => {
                    let r = g.applied.state.apply(cmd);
                    if let Err(e) = &r {
                        tracing::info!(index = entry.log_id.index, error = %e, "configuration change refused");
                    }
                    r
                }
                EntryPayload::Membership(m) => {
                    g.applied.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    Ok(())
                }
            });
        }
        g.persist()?;
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StoreError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<MemberId, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StoreError> {
        let data = snapshot.into_inner();
        let state: PoolState = serde_json::from_slice(&data).map_err(|e| {
            StorageError::from_io_error(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })?;
        let mut g = self.lock();
        g.applied = Applied {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            state,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        write_json(&g.dir.join("snapshot.json"), &stored)
            .map_err(|e| io_error(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Write, e))?;
        g.snapshot = Some(stored);
        g.persist()
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<PoolTypes>>, StoreError> {
        let g = self.lock();
        Ok(g.snapshot.as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone())),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::{StoreBuilder, Suite};

    /// Fresh stores in a temp dir (kept alive by the suite with them).
    struct FreshStores;

    impl StoreBuilder<PoolTypes, LogStore, StateMachine, tempfile::TempDir> for FreshStores {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StoreError> {
            let dir = tempfile::tempdir().expect("temp dir");
            let (tx, _) = tokio::sync::watch::channel(Arc::new(Applied::default()));
            let log = LogStore::open(&dir.path().join("log")).expect("log store");
            let sm = StateMachine::open(dir.path(), tx).expect("state machine");
            Ok((dir, log, sm))
        }
    }

    /// openraft's own conformance suite: votes, log reads, truncation,
    /// purging, membership recovery and snapshots, against our files.
    #[test]
    fn openraft_storage_conformance() {
        Suite::test_all(FreshStores).expect("storage suite");
    }

    #[test]
    fn the_log_and_vote_survive_reopening_and_a_torn_entry_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let log_dir = dir.path().join("log");
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let mut log = LogStore::open(&log_dir).unwrap();
            let vote = Vote::new(3, MemberId::from(7));
            log.save_vote(&vote).await.unwrap();
            assert!(!log.is_pristine());
        });
        std::fs::write(log_dir.join(format!("{:020}.json", 9)), b"{\"log_id\":").unwrap();
        rt.block_on(async {
            let mut log = LogStore::open(&log_dir).unwrap();
            assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, MemberId::from(7))));
            let state = log.get_log_state().await.unwrap();
            assert_eq!(state.last_log_id, None, "the torn entry was kept");
        });
        assert!(!log_dir.join(format!("{:020}.json", 9)).exists());
    }
}
