//! `cairnd`: the brick daemon. One per server; serves all of the node's
//! bricks on one UDP port over QUIC and holds the volume configuration.

mod access;
mod admin;
mod diagnostics;
mod domain_locks;
mod fops;
mod locks;
mod metrics;
mod migration;
mod node;
mod notify;
mod pool;
mod pool_service;
mod rebalance;
mod server;
mod shd;
mod stats;
mod store;
mod sys;

use anyhow::Context;
use cairn_common::worker_threads;
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;

/// Without RUST_LOG: info, but openraft's own lines off (it logs every
/// failed heartbeat to a down member several times a second); the pool
/// logs leader and membership changes itself. `RUST_LOG=openraft=info`
/// brings them back.
const DEFAULT_LOG: &str = "info,openraft=off";

#[derive(Parser)]
#[command(name = "cairnd", version, about = "Cairn brick daemon")]
struct Args {
    /// Address to serve on, HOST[:PORT] (default port 24007).
    #[arg(long, default_value = "0.0.0.0:24007")]
    listen: String,
    /// State directory (identity, credentials, volume configuration).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Log to this file instead of stderr; SIGHUP reopens it (logrotate).
    #[arg(long, value_name = "FILE")]
    log_file: Option<PathBuf>,
    /// Serve Prometheus metrics over HTTP on this address (e.g.
    /// 127.0.0.1:9324); off unless given.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// Most connections held at once (mounts, pool members, probes, and
    /// handshakes in progress); more are refused.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Most connections without a certificate held at once (only `peer
    /// probe` uses one, for a moment).
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    max_anonymous_connections: u32,
    /// Write the cairnd(8) man page into this directory and exit.
    #[arg(long, hide = true, value_name = "DIR")]
    man: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    let log_file = match &args.log_file {
        None => {
            cairn_common::logging::init(DEFAULT_LOG);
            None
        }
        Some(path) => match cairn_common::logging::init_file(DEFAULT_LOG, path) {
            Ok(log) => Some(log),
            Err(e) => {
                eprintln!("cairnd: cannot open log file {}: {e}", path.display());
                std::process::exit(1);
            }
        },
    };
    if let Some(dir) = &args.man {
        if let Err(e) = write_man_page(dir) {
            eprintln!("cairnd: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    if let Err(e) = run(args, log_file) {
        eprintln!("cairnd: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args, log_file: Option<cairn_common::logging::LogFile>) -> anyhow::Result<()> {
    let state_dir = cairn_common::state::resolve_state_dir(args.state_dir.as_deref());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads())
        .enable_all()
        .thread_name("cairnd")
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        // Before READY=1: a SIGHUP (logrotate, `systemctl reload`) or
        // SIGTERM right after it must find our handlers, not the default
        // action that ends the process on the spot.
        let signals = Signals::install()?;
        let node = Arc::new(node::Node::load_or_init(&state_dir, &args.listen)?);
        let endpoint = cairn_common::transport::server_endpoint(node.listen, &node.credentials(), &node.reset_secret)
            .with_context(|| format!("listening on {}", node.listen))?;
        // Calls to other members go out from a dual-stack endpoint of their
        // own, so a node listening on IPv4 still reaches IPv6 members.
        let dial = cairn_common::transport::client_endpoint(&node.credentials()).context("dialling endpoint")?;
        let pool = pool::Pool::start(&state_dir, node.id, &node.address, dial, &node.credentials()).await?;
        node.attach(pool.clone(), endpoint.clone());
        tokio::spawn(follow_configuration(node.clone()));
        tracing::info!(node = %node.id, address = %node.address, state_dir = %state_dir.display(), "cairnd serving");
        notify::notify("READY=1");
        if let Some(addr) = args.metrics {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("metrics listener on {addr}"))?;
            tokio::spawn(metrics::serve(listener, node.clone()));
            tracing::info!(%addr, "serving metrics");
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let limits = server::Limits {
            connections: args.max_connections as usize,
            anonymous: args.max_anonymous_connections as usize,
        };
        let server = server::Server::new(node, limits);
        let serving = tokio::spawn(server.run(endpoint.clone(), stop_rx));
        signals.wait(log_file).await;
        tracing::info!("shutting down");
        notify::notify("STOPPING=1");
        let _ = stop_tx.send(true);
        let _ = serving.await;
        pool.shutdown().await;
        // Let close frames reach peers so they fail over at once.
        tokio::time::timeout(std::time::Duration::from_secs(2), endpoint.wait_idle())
            .await
            .ok();
        Ok(())
    })
}

/// Applies every configuration change to the bricks served here, first
/// the state found at start, then each change as it commits.
async fn follow_configuration(node: Arc<node::Node>) {
    let mut changes = node.pool().subscribe();
    loop {
        let applied = changes.borrow_and_update().clone();
        let n = node.clone();
        let volumes = applied.state.volumes.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || n.reconcile(&applied)).await {
            tracing::error!(error = %e, "applying the configuration failed");
        }
        node.shd.sync(&node, &volumes);
        node.rebalance.sync(&node, &volumes);
        if changes.changed().await.is_err() {
            return;
        }
    }
}

fn write_man_page(dir: &std::path::Path) -> anyhow::Result<()> {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir)?;
    let man = clap_mangen::Man::new(Args::command()).section("8");
    let mut out = Vec::new();
    man.render(&mut out)?;
    std::fs::write(dir.join("cairnd.8"), out).context("writing cairnd.8")?;
    Ok(())
}

/// The signals cairnd acts on, caught from start-up on.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for SIGTERM or SIGINT; SIGHUP reopens the log file meanwhile.
    async fn wait(self, log_file: Option<cairn_common::logging::LogFile>) {
        let Signals {
            mut term,
            mut int,
            mut hup,
        } = self;
        loop {
            tokio::select! {
                _ = term.recv() => return,
                _ = int.recv() => return,
                _ = hup.recv() => match &log_file {
                    Some(log) => match log.reopen() {
                        Ok(()) => tracing::info!("log file reopened"),
                        Err(e) => tracing::error!(error = %e, "could not reopen the log file"),
                    },
                    None => tracing::info!("SIGHUP ignored: logging to stderr"),
                },
            }
        }
    }
}
