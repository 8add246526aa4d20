//! The rebalance daemon: for a volume with a running rebalance or
//! remove-brick task, a worker on every node that holds bricks of it.
//! Each worker acts as a client of the volume (node credentials): it
//! waits until every mount has seen the task, fixes every directory's
//! layout, waits again until no mount places files by an old layout, then
//! migrates the files it answers for (`cairn_client::dht::rebalance`),
//! keeping counters for `rebalance status`. When it ends it records its
//! result in the pool configuration, where the last node's report settles
//! the new layouts (a completed rebalance) or lets `remove-brick commit`
//! go ahead.

use crate::node::Node;
use crate::pool::state::Command;
use cairn_client::dht::rebalance::{Counters, Plan, LAYOUT_SETTLE};
use cairn_common::proto::{NodeRebalance, RebalanceKind, RebalanceTask, TaskState, VolumeSpec, VolumeState};
use cairn_common::Gfid;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a report the pool could not take is offered again.
const REPORT_RETRY: Duration = Duration::from_secs(5);

/// This node's rebalance workers, by volume name.
#[derive(Default)]
pub struct RebalanceDaemon {
    workers: Mutex<HashMap<String, Worker>>,
}

struct Worker {
    task: uuid::Uuid,
    shared: Arc<Shared>,
    handle: tokio::task::JoinHandle<()>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// What a worker and `rebalance status` share.
struct Shared {
    counters: Counters,
    stop: AtomicBool,
    started: Instant,
    /// The state, and the run time once ended.
    state: Mutex<(TaskState, Option<Duration>)>,
}

impl RebalanceDaemon {
    /// Starts workers for tasks this node takes part in and has not
    /// finished (also after a restart: the task resumes), and tells the
    /// workers of stopped tasks to stop.
    pub fn sync(&self, node: &Arc<Node>, volumes: &BTreeMap<String, VolumeSpec>) {
        let mut workers = self.workers.lock().expect("workers poisoned");
        workers.retain(|name, w| {
            let task = volumes.get(name).and_then(|v| v.task.as_ref());
            match task {
                Some(t) if t.id == w.task => {
                    if t.stopped {
                        w.shared.stop.store(true, Ordering::SeqCst);
                    }
                    true
                }
                _ => false,
            }
        });
        for spec in volumes.values() {
            let Some(task) = &spec.task else { continue };
            let mine = task.nodes.iter().any(|n| node.is_local(n));
            let done = task.finished.keys().any(|n| node.is_local(n));
            if !mine || done || task.stopped || spec.state != VolumeState::Started {
                continue;
            }
            if workers.get(&spec.name).is_some_and(|w| w.task == task.id) {
                continue;
            }
            let shared = Arc::new(Shared {
                counters: Counters::default(),
                stop: AtomicBool::new(false),
                started: Instant::now(),
                state: Mutex::new((TaskState::InProgress, None)),
            });
            let handle = tokio::spawn(work(node.clone(), spec.clone(), task.clone(), shared.clone()));
            tracing::info!(volume = %spec.name, task = %task.id, kind = ?task.kind, "rebalance worker started");
            workers.insert(
                spec.name.clone(),
                Worker {
                    task: task.id,
                    shared,
                    handle,
                },
            );
        }
    }

    /// This node's row of `rebalance status` for `spec`'s task.
    pub fn local_status(&self, node: &Node, spec: &VolumeSpec) -> NodeRebalance {
        let workers = self.workers.lock().expect("workers poisoned");
        if let Some(w) = workers.get(&spec.name) {
            if spec.task.as_ref().is_some_and(|t| t.id == w.task) {
                return row(&node.address, &w.shared);
            }
        }
        if let Some(done) = spec.task.as_ref().and_then(|t| t.finished.get(&node.address)) {
            return done.clone();
        }
        idle_row(&node.address)
    }
}

/// A node with nothing to report.
pub fn idle_row(node: &str) -> NodeRebalance {
    NodeRebalance {
        node: node.to_string(),
        files: 0,
        bytes: 0,
        scanned: 0,
        failures: 0,
        skipped: 0,
        fixed_dirs: 0,
        state: TaskState::NotStarted,
        run_time_s: 0,
        estimate_s: None,
        reachable: true,
    }
}

fn row(node: &str, shared: &Shared) -> NodeRebalance {
    let c = &shared.counters;
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let (state, ran) = *shared.state.lock().expect("state poisoned");
    let run = ran.unwrap_or_else(|| shared.started.elapsed());
    let (total, done) = (get(&c.dirs_total), get(&c.dirs_done));
    let estimate_s =
        (state == TaskState::InProgress && done > 0 && total >= done).then(|| run.as_secs() * (total - done) / done);
    NodeRebalance {
        node: node.to_string(),
        files: get(&c.files),
        bytes: get(&c.bytes),
        scanned: get(&c.scanned),
        failures: get(&c.failures),
        skipped: get(&c.skipped),
        fixed_dirs: get(&c.fixed_dirs),
        state,
        run_time_s: run.as_secs(),
        estimate_s,
        reachable: true,
    }
}

async fn work(node: Arc<Node>, spec: VolumeSpec, task: RebalanceTask, shared: Arc<Shared>) {
    let outcome = run(&node, &spec, &task, &shared).await;
    let state = match outcome {
        _ if shared.stop.load(Ordering::SeqCst) => TaskState::Stopped,
        Ok(()) => TaskState::Completed,
        Err(e) => {
            tracing::error!(volume = %spec.name, error = %format!("{e:#}"), "rebalance failed");
            TaskState::Failed
        }
    };
    *shared.state.lock().expect("state poisoned") = (state, Some(shared.started.elapsed()));
    let report = row(&node.address, &shared);
    tracing::info!(volume = %spec.name, ?state, files = report.files, bytes = report.bytes, failures = report.failures, skipped = report.skipped, secs = report.run_time_s, "rebalance worker ended");
    loop {
        let cmd = Command::TaskNodeFinished {
            name: spec.name.clone(),
            id: task.id,
            report: report.clone(),
        };
        match node.pool().propose(cmd).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(volume = %spec.name, error = %format!("{e:#}"), "could not record the rebalance result; trying again");
                tokio::time::sleep(REPORT_RETRY).await;
            }
        }
    }
}

async fn run(node: &Arc<Node>, spec: &VolumeSpec, task: &RebalanceTask, shared: &Shared) -> anyhow::Result<()> {
    let endpoint = cairn_common::transport::client_endpoint(&node.credentials())?;
    let graph = cairn_client::volume::Graph::build(&endpoint, spec, CALL_TIMEOUT, Duration::ZERO)?;
    let dht = graph.top.clone();
    cairn_client::layer::Subvolume::reconfigure(dht.as_ref(), &spec.options);
    // Mounts learn of the task (and the volume's new shape) within their
    // spec poll; before that one might still make a directory the walk
    // below would miss on a new subvolume.
    pause(LAYOUT_SETTLE, &shared.stop).await;
    let stop = &shared.stop;
    let counters = &shared.counters;
    let dirs = dht.fix_layout_tree(task.commit, counters, stop).await;
    let migrate = !matches!(task.kind, RebalanceKind::FixLayout);
    if migrate && !stop.load(Ordering::SeqCst) {
        pause(LAYOUT_SETTLE, stop).await;
        let plan = Plan {
            commit: task.commit,
            migrate: true,
            force: match &task.kind {
                RebalanceKind::Migrate { force } => *force,
                // Leaving bricks must be emptied whatever the space.
                _ => true,
            },
            parallel: match cairn_common::options::effective(&spec.options, "cluster.rebal-throttle") {
                "lazy" => 1,
                "aggressive" => 8,
                _ => 4,
            },
            owns: owner(node, spec),
        };
        for dir in dirs {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            dht.migrate_dir(dir, &plan, counters, stop).await;
            counters.dirs_done.fetch_add(1, Ordering::Relaxed);
        }
    } else {
        counters
            .dirs_done
            .store(counters.dirs_total.load(Ordering::Relaxed), Ordering::Relaxed);
    }
    if counters.failures.load(Ordering::Relaxed) > 0 {
        tracing::warn!(volume = %spec.name, failures = counters.failures.load(Ordering::Relaxed), "rebalance left failures behind; the layout stays unsettled");
    }
    Ok(())
}

async fn pause(d: Duration, stop: &AtomicBool) {
    let until = Instant::now() + d;
    while Instant::now() < until && !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Which files this node moves: in each replica set, the files whose gfid
/// hashes to this node among the set's nodes (gluster's
/// `gf_defrag_should_i_migrate`), so every file has exactly one mover.
fn owner(node: &Node, spec: &VolumeSpec) -> Arc<cairn_client::dht::rebalance::Owner> {
    let r = spec.replica.max(1) as usize;
    let sets: Vec<(Vec<String>, usize)> = spec
        .bricks
        .chunks(r)
        .map(|set| {
            let mut nodes: Vec<String> = Vec::new();
            for b in set {
                if !nodes.contains(&b.node) {
                    nodes.push(b.node.clone());
                }
            }
            let me = nodes.iter().position(|n| node.is_local(n)).unwrap_or(usize::MAX);
            (nodes, me)
        })
        .collect();
    Arc::new(move |source: usize, gfid: &Gfid| {
        let Some((nodes, me)) = sets.get(source) else {
            return false;
        };
        let pick = (xxhash_rust::xxh3::xxh3_64(&gfid.0) % nodes.len() as u64) as usize;
        pick == *me
    })
}
