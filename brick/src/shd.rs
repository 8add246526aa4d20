//! The self-heal daemon: for each started replicated volume with bricks on
//! this node, a worker that heals what those bricks' heal indexes name,
//! acting as a client of the volume's replica sets (the same locks and
//! changelog as any mount). It crawls
//! - when a replica of one of its sets comes back (it probes them every
//!   second), so a returning brick is caught up without anyone asking;
//! - when `volume heal VOL [full]` asks;
//! - every `cluster.heal-timeout` seconds;
//! - when its brick's index blames a replica (looked at every 5 s);
//! - when it starts.
//!
//! An index crawl goes over the local brick's heal index with up to
//! `cluster.shd-max-threads` heals at once (half as many while mounts move
//! data through the local bricks), and crawls again at once while
//! it still makes progress (healing a directory's entries makes new index
//! entries for the files it recreated). A full crawl walks the namespace.

use crate::node::Node;
use cairn_client::afr::{Healed, Replicate};
use cairn_client::layer::Subvolume;
use cairn_common::options::effective;
use cairn_common::proto::{CrawlKind, CrawlRecord, VolumeSpec, VolumeState};
use futures::StreamExt;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// How often the replicas' reachability is checked.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// Crawls kept per brick for `heal statistics`.
const HISTORY: usize = 10;
/// Index passes in a row, at most, while each heals something.
const MAX_PASSES: usize = 20;
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How often mount traffic is sampled.
const TRAFFIC_EVERY: Duration = Duration::from_millis(500);
/// How often the local heal indexes are looked at for blame a mount left
/// while every replica was up to the daemon (a mount that had not yet
/// re-dialled a returning brick): healed within seconds, not at the next
/// sweep.
const INDEX_LOOK: Duration = Duration::from_secs(5);
/// First and longest wait before a crawl that left entries goes again.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// The workers of this node, by volume name.
#[derive(Default)]
pub struct SelfHealDaemon {
    workers: Mutex<HashMap<String, Worker>>,
}

struct Worker {
    /// What the worker was built for: rebuilt when it changes.
    shape: Shape,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(PartialEq, Eq, Clone)]
struct Shape {
    volume: Uuid,
    /// Each brick's id, node and path (a brick replaced on the same node
    /// changes only its path).
    bricks: Vec<(Uuid, String, String)>,
    replica: u32,
    arbiter: bool,
}

impl Shape {
    fn of(spec: &VolumeSpec) -> Shape {
        Shape {
            volume: spec.id,
            bricks: spec
                .bricks
                .iter()
                .map(|b| (b.id, b.node.clone(), b.path.clone()))
                .collect(),
            replica: spec.replica,
            arbiter: spec.arbiter,
        }
    }
}

/// What the worker task and the admin requests share.
struct Shared {
    spec: Mutex<VolumeSpec>,
    /// This node's bricks of the volume (fixed for a worker: a changed
    /// brick list makes a new one).
    local: Vec<Uuid>,
    wake: tokio::sync::Notify,
    /// A crawl was asked for (`volume heal`); `full` if a full one.
    asked: AtomicBool,
    full: AtomicBool,
    /// Crawl history by local brick.
    crawls: Mutex<HashMap<Uuid, VecDeque<CrawlRecord>>>,
    /// Mounts are moving data through the local bricks now: half as many
    /// heals run at once, to leave them the bandwidth.
    busy: AtomicBool,
}

impl SelfHealDaemon {
    /// Starts, keeps or stops workers to match the configuration.
    pub fn sync(&self, node: &Arc<Node>, volumes: &std::collections::BTreeMap<String, VolumeSpec>) {
        let mut workers = self.workers.lock().expect("workers poisoned");
        workers.retain(|name, _| volumes.get(name).is_some_and(|v| wanted(node, v)));
        for spec in volumes.values().filter(|v| wanted(node, v)) {
            let shape = Shape::of(spec);
            // A worker rebuilt because bricks were added, replaced or
            // removed starts with a full crawl: a new or replaced brick is
            // empty and must be filled from its replicas. A first worker
            // starts with an index crawl.
            let mut rebuilt = false;
            if let Some(w) = workers.get(&spec.name) {
                if w.shape == shape {
                    *w.shared.spec.lock().expect("spec poisoned") = spec.clone();
                    w.shared.wake.notify_one();
                    continue;
                }
                rebuilt = w.shape.volume == shape.volume;
            }
            let shared = Arc::new(Shared {
                spec: Mutex::new(spec.clone()),
                local: spec
                    .bricks
                    .iter()
                    .filter(|b| node.is_local_brick(b))
                    .map(|b| b.id)
                    .collect(),
                wake: tokio::sync::Notify::new(),
                asked: AtomicBool::new(true),
                full: AtomicBool::new(rebuilt),
                crawls: Mutex::new(HashMap::new()),
                busy: AtomicBool::new(false),
            });
            let task = tokio::spawn(work(node.clone(), shared.clone()));
            tokio::spawn(watch_traffic(node.clone(), Arc::downgrade(&shared)));
            tracing::info!(volume = %spec.name, full_crawl = rebuilt, "self-heal daemon started");
            workers.insert(spec.name.clone(), Worker { shape, shared, task });
        }
    }

    /// Is a worker running for `volume`?
    pub fn running(&self, volume: &str) -> bool {
        self.workers
            .lock()
            .expect("workers poisoned")
            .get(volume)
            .is_some_and(|w| !w.task.is_finished())
    }

    /// `volume heal VOL [full]`: crawl now. False if no worker runs here.
    pub fn ask(&self, volume: &str, full: bool) -> bool {
        let workers = self.workers.lock().expect("workers poisoned");
        let Some(w) = workers.get(volume) else { return false };
        if full {
            w.shared.full.store(true, Ordering::SeqCst);
        }
        w.shared.asked.store(true, Ordering::SeqCst);
        w.shared.wake.notify_one();
        true
    }

    /// The crawl history of a local brick.
    pub fn crawls(&self, volume: &str, brick: &Uuid) -> Vec<CrawlRecord> {
        let workers = self.workers.lock().expect("workers poisoned");
        workers
            .get(volume)
            .and_then(|w| {
                w.shared
                    .crawls
                    .lock()
                    .expect("crawls poisoned")
                    .get(brick)
                    .map(|d| d.iter().cloned().collect())
            })
            .unwrap_or_default()
    }
}

/// Sets `busy` while mounts move data through the volume's local bricks
/// (their connections' byte counts changed in the last interval); ends
/// with the worker.
async fn watch_traffic(node: Arc<Node>, shared: std::sync::Weak<Shared>) {
    let mut last = None;
    loop {
        tokio::time::sleep(TRAFFIC_EVERY).await;
        let Some(shared) = shared.upgrade() else { return };
        let moved: u64 = shared
            .local
            .iter()
            .flat_map(|b| node.stats.connections_of(b))
            .filter(|c| c.identity.starts_with("client-"))
            .map(|c| c.bytes_read + c.bytes_written)
            .sum();
        shared.busy.store(last.is_some_and(|l| l != moved), Ordering::Relaxed);
        last = Some(moved);
    }
}

/// Should this node run a worker for `v`?
fn wanted(node: &Node, v: &VolumeSpec) -> bool {
    v.state == VolumeState::Started
        && v.replica >= 2
        && effective(&v.options, "cluster.self-heal-daemon") == "on"
        && v.bricks.iter().any(|b| node.is_local_brick(b))
}

/// A replica set with a brick on this node.
struct LocalSet {
    set: Arc<Replicate>,
    /// The local bricks among its children.
    bricks: Vec<Uuid>,
}

async fn work(node: Arc<Node>, shared: Arc<Shared>) {
    let spec = shared.spec.lock().expect("spec poisoned").clone();
    let sets = match local_sets(&node, &spec, &shared.local) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(volume = %spec.name, error = %format!("{e:#}"), "self-heal daemon cannot reach the volume's bricks");
            return;
        }
    };
    let mut reachable: Vec<Vec<bool>> = sets.iter().map(|s| vec![true; s.set_len()]).collect();
    let mut next_sweep = tokio::time::Instant::now() + heal_timeout(&shared);
    // Entries a crawl could not heal with every replica up (a heal held
    // elsewhere, a change in flight) are tried again soon, backing off.
    let mut retry: Option<(tokio::time::Instant, Duration)> = None;
    let mut next_look = tokio::time::Instant::now() + INDEX_LOOK;
    // Inodes marked only dirty at the last look at the index.
    let mut dirty_before: std::collections::HashSet<cairn_common::Gfid> = std::collections::HashSet::new();
    // `local_sets` applied the options of this version.
    let mut applied_version = spec.version;
    loop {
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(PROBE_EVERY) => {}
            _ = tokio::time::sleep_until(next_sweep) => {}
        }
        let spec = shared.spec.lock().expect("spec poisoned").clone();
        if spec.version != applied_version {
            applied_version = spec.version;
            for s in &sets {
                s.set.reconfigure(&spec.options);
            }
        }
        // A replica that answers again after not answering may have
        // missed changes: heal now. (At start, `asked` is already set.)
        let mut returned = false;
        for (s, seen) in sets.iter().zip(reachable.iter_mut()) {
            let now = s.set.probe().await;
            returned |= now.iter().zip(seen.iter()).any(|(n, was)| *n && !*was);
            *seen = now;
        }
        let asked = shared.asked.swap(false, Ordering::SeqCst);
        let full = shared.full.swap(false, Ordering::SeqCst);
        let now = tokio::time::Instant::now();
        let sweep_due = now >= next_sweep;
        if sweep_due {
            next_sweep = now + heal_timeout(&shared);
        }
        let retry_due = retry.is_some_and(|(at, _)| now >= at);
        let mut blamed = false;
        if now >= next_look {
            next_look = now + INDEX_LOOK;
            // While a replica is away its blame cannot be healed anyway.
            let all_up = reachable.iter().flatten().all(|up| *up);
            if all_up && !(asked || returned || sweep_due || retry_due) {
                let look = look_at_index(&node, &sets).await;
                // A dirty mark still there a look later may belong to a
                // change whose writer died (or whose brick was killed
                // mid-change): nobody else settles it before the sweep
                // (`cluster.heal-timeout`, 600 s by default), and the
                // chaos checker's final wait found one left. A crawl
                // under the writers' locks tells.
                blamed = look.blames || look.dirty.iter().any(|g| dirty_before.contains(g));
                dirty_before = look.dirty;
            } else {
                dirty_before.clear();
            }
        }
        if !(asked || returned || sweep_due || retry_due || blamed) {
            continue;
        }
        let threads = effective(&spec.options, "cluster.shd-max-threads")
            .parse()
            .unwrap_or(4usize);
        let mut left = 0;
        for s in &sets {
            if full {
                left += crawl_full(&node, &shared, s).await;
            } else {
                for brick in &s.bricks {
                    left += crawl_index(&node, &shared, &s.set, *brick, threads).await;
                }
            }
        }
        let all_up = reachable.iter().flatten().all(|up| *up);
        retry = if left > 0 && all_up {
            let wait = retry.map_or(RETRY_FIRST, |(_, w)| (w * 2).min(RETRY_MAX));
            Some((tokio::time::Instant::now() + wait, wait))
        } else {
            None
        };
    }
}

/// What a look at the local heal indexes found.
#[derive(Default)]
struct IndexLook {
    /// Some entry blames a replica.
    blames: bool,
    /// Entries marked only dirty (a change in flight, which its writer
    /// normally settles itself).
    dirty: std::collections::HashSet<cairn_common::Gfid>,
}

async fn look_at_index(node: &Node, sets: &[LocalSet]) -> IndexLook {
    let bricks: Vec<_> = sets
        .iter()
        .flat_map(|s| s.bricks.iter())
        .filter_map(|b| node.brick(b))
        .collect();
    tokio::task::spawn_blocking(move || {
        let mut look = IndexLook::default();
        for list in bricks.iter().filter_map(|b| b.pending_heal().ok()) {
            for (gfid, _, counters) in list {
                let marked = |dirty: bool| {
                    counters
                        .iter()
                        .any(|(name, v)| (name == cairn_common::changelog::DIRTY) == dirty && *v != [0; 3])
                };
                if marked(false) {
                    look.blames = true;
                } else if marked(true) {
                    look.dirty.insert(gfid);
                }
            }
        }
        look
    })
    .await
    .unwrap_or_default()
}

impl LocalSet {
    fn set_len(&self) -> usize {
        self.set.children_count()
    }
}

fn heal_timeout(shared: &Shared) -> Duration {
    let spec = shared.spec.lock().expect("spec poisoned");
    Duration::from_secs(effective(&spec.options, "cluster.heal-timeout").parse().unwrap_or(600))
}

fn local_sets(node: &Node, spec: &VolumeSpec, local: &[Uuid]) -> anyhow::Result<Vec<LocalSet>> {
    let endpoint = cairn_common::transport::client_endpoint(&node.credentials())?;
    let sets = cairn_client::volume::replica_sets(&endpoint, spec, CALL_TIMEOUT)?;
    let r = spec.replica as usize;
    Ok(sets
        .into_iter()
        .zip(spec.bricks.chunks(r))
        .filter_map(|(set, bricks)| {
            let mine: Vec<Uuid> = bricks.iter().map(|b| b.id).filter(|id| local.contains(id)).collect();
            (!mine.is_empty()).then(|| {
                set.serve_self_heal_daemon();
                LocalSet { set, bricks: mine }
            })
        })
        .collect())
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Starts a crawl record for `brick`.
fn begin(shared: &Shared, brick: Uuid, kind: CrawlKind, entries: u64) {
    let mut crawls = shared.crawls.lock().expect("crawls poisoned");
    let list = crawls.entry(brick).or_default();
    if list.len() == HISTORY {
        list.pop_front();
    }
    list.push_back(CrawlRecord {
        kind,
        started: now_unix(),
        ended: None,
        entries,
        healed: 0,
        split_brain: 0,
        failed: 0,
        bytes: 0,
    });
}

/// Updates the running crawl record of `brick`.
fn update(shared: &Shared, brick: Uuid, f: impl FnOnce(&mut CrawlRecord)) {
    let mut crawls = shared.crawls.lock().expect("crawls poisoned");
    if let Some(r) = crawls.get_mut(&brick).and_then(|l| l.back_mut()) {
        f(r);
    }
}

fn count(r: &mut CrawlRecord, outcome: Healed) {
    match outcome {
        Healed::Done => r.healed += 1,
        Healed::Clean | Healed::Gone => {}
        Healed::SplitBrain => r.split_brain += 1,
        Healed::Pending => r.failed += 1,
    }
}

/// Heals what `brick`'s index names, pass after pass while passes heal;
/// returns how many entries it could not heal.
async fn crawl_index(node: &Node, shared: &Shared, set: &Arc<Replicate>, brick: Uuid, threads: usize) -> u64 {
    let Some(local) = node.brick(&brick) else { return 0 };
    let bytes_before = set.healed_bytes();
    let mut started = false;
    let mut pending = 0;
    for _ in 0..MAX_PASSES {
        let index = {
            let local = local.clone();
            tokio::task::spawn_blocking(move || local.pending_heal()).await
        };
        let entries = match index {
            Ok(Ok(list)) => list,
            Ok(Err(e)) => {
                tracing::error!(brick = %local.path.display(), error = %e.context, "reading the heal index");
                return 0;
            }
            Err(e) => {
                tracing::error!(error = %e, "reading the heal index");
                return 0;
            }
        };
        if !started {
            if entries.is_empty() {
                return 0;
            }
            begin(shared, brick, CrawlKind::Index, entries.len() as u64);
            tracing::info!(volume = %set.name(), brick = %local.path.display(), entries = entries.len(), "index crawl started");
            started = true;
        }
        let mut healed_now = 0;
        let slots = &tokio::sync::Semaphore::new(threads.max(1));
        let local = &local;
        let mut outcomes = futures::stream::iter(entries)
            .map(|(gfid, _, _)| async move {
                let seen_as = local.known_name(&gfid);
                // While mounts move data, half as many heals run at once.
                let share = if shared.busy.load(Ordering::Relaxed) {
                    threads / (threads / 2).max(1)
                } else {
                    1
                };
                let _slot = slots.acquire_many(share as u32).await;
                match set.heal_index_entry_named(gfid, seen_as).await {
                    Ok(h) => h,
                    Err(e) => {
                        tracing::debug!(%gfid, errno = e.0, "heal did not finish");
                        Healed::Pending
                    }
                }
            })
            .buffer_unordered(threads.max(1));
        pending = 0;
        while let Some(outcome) = outcomes.next().await {
            if outcome == Healed::Done {
                healed_now += 1;
            }
            if outcome == Healed::Pending {
                pending += 1;
            }
            update(shared, brick, |r| {
                if outcome != Healed::Pending {
                    count(r, outcome);
                }
                r.bytes = set.healed_bytes() - bytes_before;
            });
        }
        if pending == 0 || healed_now == 0 {
            update(shared, brick, |r| r.failed += pending);
            break;
        }
    }
    update(shared, brick, |r| {
        r.ended = Some(now_unix());
        r.bytes = set.healed_bytes() - bytes_before;
    });
    let last = shared
        .crawls
        .lock()
        .expect("crawls poisoned")
        .get(&brick)
        .and_then(|l| l.back().cloned());
    if let Some(r) = last {
        tracing::info!(volume = %set.name(), brick = %local.path.display(), healed = r.healed, split_brain = r.split_brain, failed = r.failed, bytes = r.bytes, "index crawl finished");
    }
    pending
}

/// `volume heal VOL full` over one set, recorded under its first local
/// brick; returns how many inodes it could not heal.
async fn crawl_full(node: &Node, shared: &Shared, s: &LocalSet) -> u64 {
    let brick = s.bricks[0];
    if node.brick(&brick).is_none() {
        return 0;
    }
    let mut pending = 0;
    let bytes_before = s.set.healed_bytes();
    begin(shared, brick, CrawlKind::Full, 0);
    tracing::info!(volume = %s.set.name(), "full crawl started");
    s.set
        .heal_tree(|outcome| {
            if outcome == Healed::Pending {
                pending += 1;
            }
            update(shared, brick, |r| {
                r.entries += 1;
                count(r, outcome);
                r.bytes = s.set.healed_bytes() - bytes_before;
            })
        })
        .await;
    update(shared, brick, |r| r.ended = Some(now_unix()));
    tracing::info!(volume = %s.set.name(), pending, "full crawl finished");
    pending
}
