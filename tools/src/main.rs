//! `cairn`: the gluster-style administration CLI.

mod bench;
mod heal;
mod heal_report;
mod output;
mod rebalance;
mod watch;

use anyhow::Context;
use bytes::Bytes;
use cairn_common::proto::{AdminReply, AdminRequest, Reply, Request};
use cairn_common::transport::{client_endpoint, NodeClient, RpcError};
use clap::{CommandFactory, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// `pub(crate)` items here are also driven by `fuzz/fuzz_targets/cli_args.rs`.
#[derive(Parser)]
#[command(name = "cairn", version, about = "Manage a Cairn pool and its volumes")]
pub(crate) struct Cli {
    /// Node to talk to, HOST[:PORT] (default: the local node of --state-dir).
    #[arg(long, global = true)]
    node: Option<String>,
    /// State directory holding the local node's credentials.
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Volume management.
    Volume {
        #[command(subcommand)]
        action: VolumeCommand,
    },
    /// The trusted pool: `peer probe|detach NODE`, `peer status`.
    Peer {
        #[command(subcommand)]
        action: PeerCommand,
    },
    /// The trusted pool: `pool list`.
    Pool {
        #[command(subcommand)]
        action: PoolCommand,
    },
    /// Benchmark a mounted directory (Cairn, GlusterFS or local): small files,
    /// fio sequential and random I/O, iozone. Needs no cairnd.
    Bench(bench::BenchArgs),
    /// Client certificates for mounts on machines without a node.
    ClientCert {
        #[command(subcommand)]
        action: ClientCertCommand,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Write man pages for cairn and each subcommand into DIR.
    Man { dir: PathBuf },
}

#[derive(Subcommand)]
enum PeerCommand {
    /// Add NODE (HOST[:PORT], a node in no other pool) to this pool.
    Probe {
        #[arg(value_name = "NODE")]
        host: String,
    },
    /// Remove NODE from the pool: `peer detach NODE [force]` (force only
    /// for a node that is down and still named by bricks).
    Detach {
        #[arg(value_name = "NODE")]
        host: String,
        force: Option<String>,
    },
    /// The other members and whether this node reaches them.
    Status,
}

#[derive(Subcommand)]
enum PoolCommand {
    /// Every member, this node included.
    List,
}

#[derive(Subcommand)]
enum ClientCertCommand {
    /// Issue a certificate signed by the pool CA: writes NAME.pem, NAME.key
    /// and ca.pem into --out (for `mount.cairn -o cert=,key=,ca=`).
    Issue {
        name: String,
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Refuse a client certificate name from now on (live connections too).
    Revoke { name: String },
}

#[derive(Subcommand)]
pub(crate) enum VolumeCommand {
    /// Create a volume: `volume create VOL [replica N [arbiter 1]] NODE:/path
    /// ... [force]`; consecutive bricks form replica sets.
    Create {
        name: String,
        /// Bricks as NODE:/absolute/path, optionally followed by `force`.
        #[arg(required = true, num_args = 1..)]
        bricks: Vec<String>,
    },
    /// Start a volume.
    Start { name: String, force: Option<String> },
    /// Stop a volume.
    Stop { name: String, force: Option<String> },
    /// Delete a stopped volume (its data stays on the bricks).
    Delete { name: String },
    /// Show volume definitions.
    Info { name: Option<String> },
    /// List the volumes' names, one a line.
    List,
    /// Show brick processes and their state.
    Status {
        name: Option<String>,
        /// `detail` (each brick's file system, space and inodes), `clients`
        /// (connections per brick) or `mem` (the serving process's memory).
        detail: Option<String>,
    },
    /// Set an option: `volume set VOL KEY VALUE`.
    Set { name: String, key: String, value: String },
    /// Show options: `volume get VOL KEY|all`.
    Get { name: String, key: String },
    /// Return options to their defaults: `volume reset VOL [KEY]`.
    Reset { name: String, key: Option<String> },
    /// Per-brick per-fop statistics: `volume profile VOL start|info|stop`.
    Profile { name: String, action: String },
    /// Self-heal: `volume heal VOL [full]` (crawl now), `volume heal VOL
    /// info [split-brain]` (entries each brick has pending heal), `volume
    /// heal VOL info summary [--watch]` (counts, and progress while a heal
    /// runs), `volume heal VOL statistics [heal-count]`, `volume heal VOL
    /// split-brain …`.
    Heal {
        name: String,
        #[arg(num_args = 0.., allow_hyphen_values = true)]
        words: Vec<String>,
    },
    /// Add bricks: `volume add-brick VOL [replica N] NODE:/path ... [force]`.
    /// Without `replica`, whole replica sets are appended; `replica N`
    /// (higher than now) gives each set N - old new bricks, in set order,
    /// which self-heal fills. No data moves until `volume rebalance`.
    AddBrick {
        name: String,
        /// `[replica N] NODE:/path ... [force]`.
        #[arg(required = true, num_args = 1.., value_name = "BRICK")]
        words: Vec<String>,
    },
    /// Remove whole replica sets: `volume remove-brick VOL NODE:/path ...
    /// start|status [--watch]|stop|commit|force`. `start` migrates their
    /// files to the other bricks, `commit` removes them once that completed,
    /// `force` removes them at once without migrating.
    RemoveBrick {
        name: String,
        /// `NODE:/path ... start|status [--watch]|stop|commit|force`.
        #[arg(required = true, num_args = 1.., allow_hyphen_values = true, value_name = "BRICK")]
        words: Vec<String>,
    },
    /// Replace a brick of a replicated volume: `volume replace-brick VOL
    /// OLD-BRICK NEW-BRICK commit force`; self-heal fills the new brick.
    ReplaceBrick {
        name: String,
        /// `OLD-BRICK NEW-BRICK commit force`.
        #[arg(num_args = 0.., value_name = "WORD")]
        words: Vec<String>,
    },
    /// Spread files over the bricks: `volume rebalance VOL fix-layout start
    /// | start [force] | stop | status [--watch]`.
    Rebalance {
        name: String,
        /// `fix-layout start`, `start [force]`, `stop` or `status [--watch]`.
        #[arg(required = true, num_args = 1.., allow_hyphen_values = true, value_name = "ACTION")]
        words: Vec<String>,
    },
    /// Busiest files, or a brick throughput test:
    /// `volume top VOL open|read|write|opendir|readdir|read-perf|write-perf
    /// [brick NODE:/path] [list-cnt N] [bs SIZE count N]`.
    Top {
        name: String,
        metric: String,
        /// Keyword arguments: brick B, list-cnt N, bs SIZE, count N.
        #[arg(num_args = 0..)]
        rest: Vec<String>,
    },
}

fn main() {
    cairn_common::logging::init("warn");
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => exit_on_usage_error(e),
    };
    let json = cli.json;
    let is_bench = matches!(cli.command, Command::Bench(_));
    match run(cli) {
        Ok(text) => print!("{text}"),
        Err(e) => {
            if json {
                println!("{}", serde_json::json!({ "ok": false, "error": format!("{e:#}") }));
            }
            // A benchmark's caller may read JSON on stdout and still
            // deserves the reason on stderr.
            if !json || is_bench {
                eprintln!("{e:#}");
            }
            std::process::exit(1);
        }
    }
}

/// Only volume commands talk to a node (and so load credentials and start
/// an async runtime); `bench` works on any directory without a cairnd.
fn run(cli: Cli) -> anyhow::Result<String> {
    match cli.command {
        Command::Bench(args) => bench::run(args, cli.json),
        Command::ClientCert { action } => {
            let (req, out) = match action {
                ClientCertCommand::Issue { name, out } => {
                    if !out.is_dir() {
                        anyhow::bail!("--out {}: not a directory", out.display());
                    }
                    (AdminRequest::ClientCertIssue { name }, Some(out))
                }
                ClientCertCommand::Revoke { name } => (AdminRequest::ClientCertRevoke { name }, None),
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start")?;
            let reply = rt.block_on(volume(cli.node, cli.state_dir, req.clone()))?;
            match (reply, out, &req) {
                (
                    AdminReply::ClientCert {
                        ca_pem,
                        cert_pem,
                        key_pem,
                    },
                    Some(dir),
                    AdminRequest::ClientCertIssue { name },
                ) => {
                    let (cert, key, ca) = (
                        dir.join(format!("{name}.pem")),
                        dir.join(format!("{name}.key")),
                        dir.join("ca.pem"),
                    );
                    cairn_common::state::write_private(&key, key_pem.as_bytes())?;
                    std::fs::write(&cert, cert_pem).with_context(|| format!("writing {}", cert.display()))?;
                    std::fs::write(&ca, ca_pem).with_context(|| format!("writing {}", ca.display()))?;
                    Ok(if cli.json {
                        format!(
                            "{}\n",
                            serde_json::json!({ "ok": true, "cert": cert, "key": key, "ca": ca })
                        )
                    } else {
                        format!(
                            "client-cert issue: {name}: success: {} {} {}\n",
                            cert.display(),
                            key.display(),
                            ca.display()
                        )
                    })
                }
                (reply, _, _) => Ok(if cli.json {
                    output::json(&reply)?
                } else {
                    output::text(&req, &reply, output::StatusView::Plain)
                }),
            }
        }
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "cairn", &mut out);
            Ok(String::from_utf8(out).context("completion script is not UTF-8")?)
        }
        Command::Man { dir } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(Cli::command(), &dir)
                .with_context(|| format!("writing man pages to {}", dir.display()))?;
            Ok(if cli.json {
                format!("{}\n", serde_json::json!({ "ok": true, "dir": dir }))
            } else {
                format!("man pages written to {}\n", dir.display())
            })
        }
        Command::Peer { action } => {
            let (req, view) = match action {
                PeerCommand::Probe { host } => (
                    AdminRequest::PeerProbe {
                        host: cairn_common::addr::canonical_node(&host)?,
                    },
                    output::PeerView::Status,
                ),
                PeerCommand::Detach { host, force } => (
                    AdminRequest::PeerDetach {
                        host: cairn_common::addr::canonical_node(&host)?,
                        force: force_word(force)?,
                    },
                    output::PeerView::Status,
                ),
                PeerCommand::Status => (AdminRequest::PeerList, output::PeerView::Status),
            };
            admin_command(cli.node, cli.state_dir, cli.json, req, |req, reply| {
                output::peers_text(req, reply, view)
            })
        }
        Command::Pool {
            action: PoolCommand::List,
        } => admin_command(
            cli.node,
            cli.state_dir,
            cli.json,
            AdminRequest::PeerList,
            |req, reply| output::peers_text(req, reply, output::PeerView::List),
        ),
        Command::Volume {
            action: VolumeCommand::Heal { name, words },
        } if words.first().map(String::as_str) == Some("split-brain") => {
            let rest: Vec<&str> = words[1..].iter().map(String::as_str).collect();
            let req = heal::parse(name, &rest)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start")?;
            let settled = rt.block_on(split_brain(cli.node, cli.state_dir, req))?;
            Ok(if cli.json {
                // As the text report: per-file outcomes, the command itself ran.
                let value = serde_json::json!({ "ok": true, "split_brain": settled });
                format!("{}\n", serde_json::to_string_pretty(&value)?)
            } else {
                heal::settled_text(&settled)
            })
        }
        Command::Volume {
            action: VolumeCommand::Heal { name, words },
        } if words.len() >= 2 && words[0] == "info" && words[1] == "summary" => {
            let watch = match &words[2..] {
                [] => false,
                [w] if w == "--watch" => true,
                _ => anyhow::bail!("use: volume heal VOL info summary [--watch]"),
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start")?;
            rt.block_on(heal_summary(cli.node, cli.state_dir, cli.json, name, watch))
        }
        Command::Volume {
            action: VolumeCommand::List,
        } => {
            let req = AdminRequest::VolumeInfo { name: None };
            admin_command(cli.node, cli.state_dir, false, req, |_, reply| {
                output::volume_list(reply, cli.json)
            })
        }
        Command::Volume {
            action: VolumeCommand::Rebalance { name, words },
        } => {
            let (req, watch) = rebalance::parse_rebalance(name, words)?;
            task_command(cli.node, cli.state_dir, cli.json, req, watch)
        }
        Command::Volume {
            action: VolumeCommand::RemoveBrick { name, words },
        } => {
            let (req, watch) = rebalance::parse_remove_brick(name, words)?;
            task_command(cli.node, cli.state_dir, cli.json, req, watch)
        }
        Command::Volume {
            action: VolumeCommand::Status { name, detail: None },
        } if !cli.json => {
            let req = AdminRequest::VolumeStatus { name: name.clone() };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start")?;
            let reply = rt.block_on(volume(cli.node.clone(), cli.state_dir.clone(), req.clone()))?;
            // The Task Status block comes from the volumes' definitions.
            let specs = match rt.block_on(volume(cli.node, cli.state_dir, AdminRequest::VolumeInfo { name })) {
                Ok(AdminReply::Volumes(v)) => v,
                _ => Vec::new(),
            };
            Ok(match &reply {
                AdminReply::Status(s) if !s.is_empty() => output::status_text(s, &specs),
                _ => output::text(&req, &reply, output::StatusView::Plain),
            })
        }
        Command::Volume { action } => {
            // Validate everything before touching the network: bad input changes nothing.
            let view = match &action {
                VolumeCommand::Status { detail: Some(w), .. } => match w.as_str() {
                    "detail" => output::StatusView::Detail,
                    "clients" => output::StatusView::Clients,
                    _ => output::StatusView::Memory,
                },
                _ => output::StatusView::Plain,
            };
            let req = request_for(action)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start")?;
            let reply = rt.block_on(volume(cli.node, cli.state_dir, req.clone()))?;
            Ok(if cli.json {
                output::json(&reply)?
            } else {
                output::text(&req, &reply, view)
            })
        }
    }
}

/// A rebalance or remove-brick request; with `watch` (status only), the
/// report again every 2 s while some node is still in progress (a progress
/// bar on a terminal), then the final report.
fn task_command(
    node: Option<String>,
    state_dir: Option<PathBuf>,
    json: bool,
    req: AdminRequest,
    watch: bool,
) -> anyhow::Result<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start")?;
    let what = match &req {
        AdminRequest::VolumeRemoveBrick { .. } => "remove-brick",
        _ => "rebalance",
    };
    let display = watch.then(|| watch::Watch::new(json, what));
    loop {
        let reply = rt.block_on(volume(node.clone(), state_dir.clone(), req.clone()))?;
        let text = if json {
            output::json(&reply)?
        } else {
            output::text(&req, &reply, output::StatusView::Plain)
        };
        let running = match &reply {
            AdminReply::Rebalance(st) if rebalance::in_progress(st) => Some(st),
            _ => None,
        };
        match (&display, running) {
            (Some(display), Some(st)) => display.refresh(&watch::rebalance_progress(st), &text, "in progress"),
            _ => return Ok(text),
        }
        std::thread::sleep(watch::REFRESH);
    }
}

/// Sends one management request and renders the reply (text or JSON).
fn admin_command(
    node: Option<String>,
    state_dir: Option<PathBuf>,
    json: bool,
    req: AdminRequest,
    render: impl Fn(&AdminRequest, &AdminReply) -> String,
) -> anyhow::Result<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start")?;
    let reply = rt.block_on(volume(node, state_dir, req.clone()))?;
    Ok(if json {
        output::json(&reply)?
    } else {
        render(&req, &reply)
    })
}

/// Help and version print as clap renders them; a usage mistake becomes one
/// line on stderr (the CLI's contract), with a pointer to --help.
fn exit_on_usage_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let text = e.to_string();
    let summary: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:"))
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
        .collect();
    let line = format!("{} (see 'cairn --help')", summary.join(" "));
    // A script that asked for JSON gets it for a usage mistake too.
    if std::env::args().any(|a| a == "--json") {
        println!("{}", serde_json::json!({ "ok": false, "error": line }));
    }
    eprintln!("{line}");
    std::process::exit(2);
}

/// `volume top`'s gluster-style keyword arguments.
fn top_request(name: String, metric: String, rest: &[String]) -> anyhow::Result<AdminRequest> {
    const METRICS: [&str; 7] = ["open", "read", "write", "opendir", "readdir", "read-perf", "write-perf"];
    if !METRICS.contains(&metric.as_str()) {
        anyhow::bail!("unknown top metric {metric:?}: use one of {}", METRICS.join(", "));
    }
    let (mut brick, mut count, mut block_size, mut blocks) = (None, 100u32, 4096u64, 1024u64);
    let mut words = rest.iter();
    while let Some(key) = words.next() {
        let value = words.next().with_context(|| format!("{key} needs a value"))?;
        match key.as_str() {
            "brick" => brick = Some(cairn_common::addr::BrickAddr::parse(value)?.to_string()),
            "list-cnt" => {
                count = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=10_000).contains(n))
                    .context("list-cnt must be 1-10000")?
            }
            "bs" => {
                block_size = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=64 << 20).contains(n))
                    .context("bs must be 1 B-64 MiB, in bytes")?
            }
            "count" => {
                blocks = value
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .context("count must be a positive number")?
            }
            other => anyhow::bail!("unexpected argument {other:?}: use brick, list-cnt, bs or count"),
        }
    }
    Ok(AdminRequest::VolumeTop {
        name,
        metric,
        brick,
        count,
        block_size,
        blocks,
    })
}

/// gluster's `replica N [arbiter 1]` ahead of the bricks, removed from
/// `words`; (1, false) without it.
fn replica_words(words: &mut Vec<String>) -> anyhow::Result<(u32, bool)> {
    if words.first().map(String::as_str) != Some("replica") {
        return Ok((1, false));
    }
    let n: u32 = words
        .get(1)
        .and_then(|w| w.parse().ok())
        .filter(|n| (2..=8).contains(n))
        .context("replica needs a count from 2 to 8: volume create VOL replica N [arbiter 1] NODE:/path ...")?;
    let mut used = 2;
    let arbiter = words.get(2).map(String::as_str) == Some("arbiter");
    if arbiter {
        if words.get(3).map(String::as_str) != Some("1") {
            anyhow::bail!("arbiter takes the count 1: replica 3 arbiter 1");
        }
        if n != 3 {
            anyhow::bail!("an arbiter is supported only with replica 3 (replica 3 arbiter 1)");
        }
        used = 4;
    }
    words.drain(..used);
    if words.len() % n as usize != 0 {
        anyhow::bail!(
            "Number of bricks is not a multiple of replica count ({} bricks, replica {n})",
            words.len()
        );
    }
    Ok((n, arbiter))
}

/// `force` as an optional trailing word, exactly as gluster spells it.
fn force_word(w: Option<String>) -> anyhow::Result<bool> {
    match w.as_deref() {
        None => Ok(false),
        Some("force") => Ok(true),
        Some(other) => anyhow::bail!("unexpected argument {other:?} (did you mean 'force'?)"),
    }
}

pub(crate) fn request_for(action: VolumeCommand) -> anyhow::Result<AdminRequest> {
    Ok(match action {
        VolumeCommand::Create { name, mut bricks } => {
            let force = bricks.last().map(String::as_str) == Some("force");
            if force {
                bricks.pop();
            }
            let (replica, arbiter) = replica_words(&mut bricks)?;
            if bricks.is_empty() {
                anyhow::bail!("volume create needs at least one brick (NODE:/path)");
            }
            for b in &bricks {
                cairn_common::addr::BrickAddr::parse(b)?;
            }
            cairn_common::names::check_volume_name(&name)?;
            AdminRequest::VolumeCreate {
                name,
                bricks,
                force,
                replica,
                arbiter,
            }
        }
        VolumeCommand::Start { name, force } => AdminRequest::VolumeStart {
            name,
            force: force_word(force)?,
        },
        VolumeCommand::Stop { name, force } => AdminRequest::VolumeStop {
            name,
            force: force_word(force)?,
        },
        VolumeCommand::Delete { name } => AdminRequest::VolumeDelete { name },
        VolumeCommand::Info { name } => AdminRequest::VolumeInfo { name },
        VolumeCommand::List => AdminRequest::VolumeInfo { name: None },
        VolumeCommand::Status { name, detail } => {
            if let Some(word) = detail.as_deref().filter(|w| !["detail", "clients", "mem"].contains(w)) {
                anyhow::bail!("unexpected argument {word:?}: use detail, clients or mem");
            }
            AdminRequest::VolumeStatus { name }
        }
        VolumeCommand::Set { name, key, value } => {
            // Refuse bad keys and values before contacting anyone.
            let value = cairn_common::options::validate(&key, &value).map_err(|e| anyhow::anyhow!(e))?;
            AdminRequest::VolumeSet { name, key, value }
        }
        VolumeCommand::Get { name, key } => AdminRequest::VolumeGet {
            name,
            key: if key == "all" {
                None
            } else {
                cairn_common::options::find(&key).with_context(|| {
                    format!("option {key} does not exist ('cairn volume get VOL all' lists the options)")
                })?;
                Some(key)
            },
        },
        VolumeCommand::Profile { name, action } => AdminRequest::VolumeProfile {
            name,
            action: match action.as_str() {
                "start" => cairn_common::proto::ProfileAction::Start,
                "info" => cairn_common::proto::ProfileAction::Info,
                "stop" => cairn_common::proto::ProfileAction::Stop,
                other => anyhow::bail!("unknown profile action {other:?}: use start, info or stop"),
            },
        },
        VolumeCommand::Top { name, metric, rest } => top_request(name, metric, &rest)?,
        VolumeCommand::AddBrick { name, words } => rebalance::parse_add_brick(name, words)?,
        VolumeCommand::ReplaceBrick { name, words } => rebalance::parse_replace_brick(name, &words)?,
        VolumeCommand::RemoveBrick { name, words } => rebalance::parse_remove_brick(name, words)?.0,
        VolumeCommand::Rebalance { name, words } => rebalance::parse_rebalance(name, words)?.0,
        VolumeCommand::Heal { name, words } => {
            let words: Vec<&str> = words.iter().map(String::as_str).collect();
            match words.as_slice() {
                ["info"] => AdminRequest::VolumeHealInfo {
                    name,
                    split_brain: false,
                },
                ["info", "split-brain"] => AdminRequest::VolumeHealInfo {
                    name,
                    split_brain: true,
                },
                [] => AdminRequest::VolumeHeal { name, full: false },
                ["full"] => AdminRequest::VolumeHeal { name, full: true },
                ["statistics"] => AdminRequest::VolumeHealStatistics {
                    name,
                    count_only: false,
                },
                ["statistics", "heal-count"] => AdminRequest::VolumeHealStatistics {
                    name,
                    count_only: true,
                },
                _ => anyhow::bail!(
                    "unsupported heal command {:?}: use 'volume heal VOL [full]', 'volume heal VOL info [split-brain|summary] [--watch]', 'volume heal VOL statistics [heal-count]' or 'volume heal VOL split-brain bigger-file|latest-mtime FILE | source-brick NODE:/path [FILE]'",
                    words.join(" ")
                ),
            }
        }
        VolumeCommand::Reset { name, key } => AdminRequest::VolumeReset {
            name,
            key: match key.as_deref() {
                None | Some("all") | Some("force") => None,
                Some(k) => {
                    cairn_common::options::find(k).with_context(|| {
                        format!("option {k} does not exist ('cairn volume get VOL all' lists the options)")
                    })?;
                    Some(k.to_string())
                }
            },
        },
    })
}

/// The node to talk to: `--node`, else the local node of the state dir.
fn node_address(node: Option<String>, state_dir: &std::path::Path) -> anyhow::Result<String> {
    Ok(match node {
        Some(n) => cairn_common::addr::canonical_node(&n)?,
        None => std::fs::read_to_string(cairn_common::state::listen_file(state_dir))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "127.0.0.1:24007".to_string()),
    })
}

/// `volume heal VOL info summary [--watch]`: per brick, how many entries
/// are left, how many are split-brain, and while a crawl runs its progress
/// and an estimate of the time left. With `--watch`, again every 2 s (a
/// progress bar on a terminal) until nothing healable is left: entries in
/// split-brain wait for `volume heal VOL split-brain …`, not for time.
async fn heal_summary(
    node: Option<String>,
    state_dir: Option<PathBuf>,
    json: bool,
    name: String,
    watch: bool,
) -> anyhow::Result<String> {
    let display = watch.then(|| watch::Watch::new(json, "heal"));
    let mut most = 0;
    loop {
        let summary = heal_summary_once(node.clone(), state_dir.clone(), &name).await?;
        let text = if json {
            let value = serde_json::json!({ "ok": true, "heal_summary": summary });
            format!("{}\n", serde_json::to_string_pretty(&value)?)
        } else {
            heal_report::summary_text(&summary)
        };
        let left = watch::healable(&summary);
        most = most.max(left);
        match &display {
            Some(display) if left > 0 => {
                display.refresh(
                    &watch::heal_progress(&summary, most),
                    &text,
                    &format!("{left} entries left"),
                );
            }
            _ => return Ok(text),
        }
        tokio::time::sleep(watch::REFRESH).await;
    }
}

/// One `heal info summary` report: the heal index and the crawl records.
async fn heal_summary_once(
    node: Option<String>,
    state_dir: Option<PathBuf>,
    name: &str,
) -> anyhow::Result<Vec<heal_report::BrickSummary>> {
    let info = AdminRequest::VolumeHealInfo {
        name: name.to_string(),
        split_brain: false,
    };
    let stats = AdminRequest::VolumeHealStatistics {
        name: name.to_string(),
        count_only: false,
    };
    let info = volume(node.clone(), state_dir.clone(), info).await?;
    let stats = volume(node, state_dir, stats).await?;
    let (AdminReply::HealInfo(info), AdminReply::HealStats(stats)) = (info, stats) else {
        anyhow::bail!("unexpected reply to a heal report");
    };
    Ok(heal_report::summary(&info, &stats))
}

/// `volume heal VOL split-brain …`, as a client of the volume.
async fn split_brain(
    node: Option<String>,
    state_dir: Option<PathBuf>,
    req: heal::SplitBrain,
) -> anyhow::Result<Vec<heal::Settled>> {
    let dir = cairn_common::state::resolve_state_dir(state_dir.as_deref());
    let address = node_address(node.clone(), &dir)?;
    let creds = cairn_common::state::node_credentials(&dir)?;
    let endpoint = client_endpoint(&creds)?;
    let admin = async |r: AdminRequest| volume(node.clone(), state_dir.clone(), r).await;
    let out = heal::run(&address, &endpoint, admin, req)
        .await
        .map_err(|e| anyhow::anyhow!("volume heal: failed: {e:#}"));
    endpoint.close(0u32.into(), b"done");
    out
}

async fn volume(node: Option<String>, state_dir: Option<PathBuf>, req: AdminRequest) -> anyhow::Result<AdminReply> {
    let state_dir = cairn_common::state::resolve_state_dir(state_dir.as_deref());
    let node = node_address(node, &state_dir)?;
    let creds = cairn_common::state::node_credentials(&state_dir)?;
    let endpoint = client_endpoint(&creds)?;
    let client = NodeClient::new(endpoint.clone(), node.clone(), Duration::from_secs(120));
    let reply = client.call(&Request::Admin(req.clone()), Bytes::new()).await;
    endpoint.close(0u32.into(), b"done");
    let reply = match reply {
        Ok((Reply::Admin(r), _)) => r,
        Ok((other, _)) => anyhow::bail!("unexpected reply: {other:?}"),
        Err(RpcError::Remote { message, .. }) => {
            anyhow::bail!("{}{}", command_prefix(&req, &message), remedy(&message))
        }
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "Connection failed. Please check if cairnd is operational on {node} \
                     (systemctl start cairnd there, or name a running node with --node HOST)"
                )
            })
        }
    };
    Ok(reply)
}

/// What to do about a refusal, after gluster's own words (which stay
/// first: scripts match them).
fn remedy(message: &str) -> &'static str {
    let missing_volume = message.starts_with("Volume ") && message.ends_with(" does not exist");
    if missing_volume {
        " ('cairn volume list' shows the volumes)"
    } else if message.starts_with("option ") && message.ends_with(" does not exist") {
        " ('cairn volume get VOL all' lists the options)"
    } else {
        ""
    }
}

/// gluster prefixes failures with the command: `volume start: gv0: failed: …`
/// (brick changes without the name: `volume add-brick: failed: …`).
fn command_prefix(req: &AdminRequest, message: &str) -> String {
    use cairn_common::proto::RemoveBrickAction;
    let unnamed = match req {
        AdminRequest::VolumeAddBrick { .. } => Some("volume add-brick"),
        AdminRequest::VolumeReplaceBrick { .. } => Some("volume replace-brick"),
        AdminRequest::VolumeRemoveBrick { action, .. } => Some(match action {
            RemoveBrickAction::Start => "volume remove-brick start",
            RemoveBrickAction::Status => "volume remove-brick status",
            RemoveBrickAction::Stop => "volume remove-brick stop",
            RemoveBrickAction::Commit => "volume remove-brick commit",
            RemoveBrickAction::Force => "volume remove-brick commit force",
        }),
        _ => None,
    };
    if let Some(verb) = unnamed {
        return if message.starts_with(verb) {
            message.to_string()
        } else {
            format!("{verb}: failed: {message}")
        };
    }
    let (verb, name) = match req {
        AdminRequest::VolumeRebalance { name, .. } => ("volume rebalance", name.as_str()),
        AdminRequest::VolumeCreate { name, .. } => ("volume create", name.as_str()),
        AdminRequest::VolumeStart { name, .. } => ("volume start", name.as_str()),
        AdminRequest::VolumeStop { name, .. } => ("volume stop", name.as_str()),
        AdminRequest::VolumeDelete { name } => ("volume delete", name.as_str()),
        AdminRequest::VolumeSet { name, .. } => ("volume set", name.as_str()),
        AdminRequest::VolumeProfile { name, .. } => ("volume profile", name.as_str()),
        AdminRequest::VolumeTop { name, .. } => ("volume top", name.as_str()),
        AdminRequest::VolumeReset { name, .. } => ("volume reset", name.as_str()),
        AdminRequest::VolumeHealInfo { name, .. } | AdminRequest::VolumeHealStatistics { name, .. } => {
            ("volume heal", name.as_str())
        }
        _ => return message.to_string(),
    };
    if message.starts_with(verb) {
        message.to_string()
    } else {
        format!("{verb}: {name}: failed: {message}")
    }
}
