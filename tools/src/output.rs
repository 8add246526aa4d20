//! Gluster-style text output, and the JSON form of every reply.

use cairn_common::proto::{AdminReply, AdminRequest, VolumeSpec, VolumeStatus};
use std::fmt::Write;

pub fn json(reply: &AdminReply) -> anyhow::Result<String> {
    let value = match reply {
        AdminReply::Done { message } => serde_json::json!({ "ok": true, "message": message }),
        AdminReply::Volumes(v) => serde_json::json!({ "ok": true, "volumes": v }),
        AdminReply::Status(s) => serde_json::json!({ "ok": true, "status": s }),
        AdminReply::Spec(s) => serde_json::json!({ "ok": true, "volume": s }),
        AdminReply::Profile(p) => serde_json::json!({ "ok": true, "profile": p }),
        AdminReply::Top(t) => serde_json::json!({ "ok": true, "top": t }),
        // Never print a private key; the CLI writes it to a file instead.
        AdminReply::ClientCert { .. } => serde_json::json!({ "ok": true }),
        AdminReply::Peers(p) => serde_json::json!({ "ok": true, "peers": p }),
        AdminReply::HealInfo(h) => serde_json::json!({ "ok": true, "heal": h }),
        AdminReply::HealStats(h) => serde_json::json!({ "ok": true, "heal_statistics": h }),
        AdminReply::Rebalance(r) => serde_json::json!({ "ok": true, "rebalance": r }),
        AdminReply::Options(o) => serde_json::json!({
            "ok": true,
            "options": o.iter().map(|(k, v, d)| serde_json::json!({ "key": k, "value": v, "default": d })).collect::<Vec<_>>(),
        }),
    };
    Ok(format!("{}\n", serde_json::to_string_pretty(&value)?))
}

/// `volume list`: the names, one a line (gluster's text), or
/// `{"ok": true, "names": [...]}`.
pub fn volume_list(reply: &AdminReply, json: bool) -> String {
    let names: Vec<&str> = match reply {
        AdminReply::Volumes(v) => v.iter().map(|s| s.name.as_str()).collect(),
        _ => Vec::new(),
    };
    if json {
        format!("{}\n", serde_json::json!({ "ok": true, "names": names }))
    } else if names.is_empty() {
        "No volumes present in cluster\n".to_string()
    } else {
        names.iter().map(|n| format!("{n}\n")).collect()
    }
}

/// `view`: which `volume status` report.
/// Which `volume status` report to print.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum StatusView {
    Plain,
    Detail,
    Clients,
    Memory,
}

pub fn text(req: &AdminRequest, reply: &AdminReply, view: StatusView) -> String {
    match reply {
        AdminReply::Done { message } => format!("{message}\n"),
        AdminReply::Volumes(v) if v.is_empty() => "No volumes present\n".to_string(),
        AdminReply::Volumes(v) => v.iter().map(info).collect(),
        AdminReply::Status(s) if s.is_empty() => match req {
            AdminRequest::VolumeStatus { name: None } => "No volumes present\n".to_string(),
            _ => String::new(),
        },
        AdminReply::Status(s) if view == StatusView::Detail => {
            s.iter().map(status_detail).collect::<Vec<_>>().join("\n")
        }
        AdminReply::Status(s) if view == StatusView::Clients => s.iter().map(status_clients).collect(),
        AdminReply::Status(s) if view == StatusView::Memory => s.iter().map(status_memory).collect(),
        AdminReply::Status(s) => status_text(s, &[]),
        AdminReply::Spec(s) => info(s),
        AdminReply::Profile(p) => p.iter().map(profile).collect(),
        AdminReply::Top(t) => t.iter().map(top).collect(),
        AdminReply::ClientCert { .. } => String::new(),
        AdminReply::Peers(p) => peers_text(req, &AdminReply::Peers(p.clone()), PeerView::Status),
        AdminReply::HealInfo(bricks) => super::heal_report::info(req, bricks),
        AdminReply::HealStats(bricks) => super::heal_report::statistics(req, bricks),
        AdminReply::Rebalance(st) => super::rebalance::status_text(req, st),
        AdminReply::Options(o) => {
            let mut s = format!("{:<40}{:<40}\n{:<40}{:<40}\n", "Option", "Value", "------", "-----");
            for (k, v, default) in o {
                let _ = writeln!(s, "{k:<40}{v}{}", if *default { " (DEFAULT)" } else { "" });
            }
            s
        }
    }
}

/// `peer status` (the other members) or `pool list` (all, as a table).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum PeerView {
    Status,
    List,
}

pub fn peers_text(_req: &AdminRequest, reply: &AdminReply, view: PeerView) -> String {
    let peers = match reply {
        AdminReply::Peers(p) => p,
        AdminReply::Done { message } => return format!("{message}\n"),
        other => return format!("{other:?}\n"),
    };
    let host = |p: &cairn_common::proto::PeerInfo| {
        cairn_common::addr::split_host_port(&p.address)
            .map(|(h, port)| {
                if port == cairn_common::addr::DEFAULT_PORT {
                    h
                } else {
                    p.address.clone()
                }
            })
            .unwrap_or_else(|_| p.address.clone())
    };
    let mut s = String::new();
    match view {
        PeerView::Status => {
            let others: Vec<_> = peers.iter().filter(|p| !p.is_self).collect();
            let _ = writeln!(s, "Number of Peers: {}", others.len());
            for p in others {
                let _ = writeln!(s, "\nHostname: {}", host(p));
                let _ = writeln!(s, "Uuid: {}", p.id);
                let _ = writeln!(
                    s,
                    "State: Peer in Cluster ({})",
                    if p.connected { "Connected" } else { "Disconnected" }
                );
            }
        }
        PeerView::List => {
            let _ = writeln!(s, "UUID\t\t\t\t\tHostname \tState");
            // gluster lists the others first and this node last, as localhost.
            let mut ordered: Vec<_> = peers.iter().filter(|p| !p.is_self).collect();
            ordered.extend(peers.iter().filter(|p| p.is_self));
            for p in ordered {
                let name = if p.is_self { "localhost".to_string() } else { host(p) };
                let state = if p.connected { "Connected" } else { "Disconnected" };
                let _ = writeln!(s, "{}\t{name}\t{state} ", p.id);
            }
        }
    }
    s
}

fn info(v: &VolumeSpec) -> String {
    let mut s = String::new();
    let _ = writeln!(s, " \nVolume Name: {}", v.name);
    let _ = writeln!(s, "Type: {}", v.type_name());
    let _ = writeln!(s, "Volume ID: {}", v.id);
    let _ = writeln!(s, "Status: {}", v.state);
    let _ = writeln!(s, "Snapshot Count: 0");
    let r = v.replica.max(1) as usize;
    let sets = v.bricks.len() / r;
    let count = match (r, v.arbiter) {
        (1, _) => v.bricks.len().to_string(),
        (_, true) => format!("{sets} x ({} + 1) = {}", r - 1, v.bricks.len()),
        (_, false) => format!("{sets} x {r} = {}", v.bricks.len()),
    };
    let _ = writeln!(s, "Number of Bricks: {count}");
    let _ = writeln!(s, "Transport-type: quic");
    let _ = writeln!(s, "Bricks:");
    for (i, b) in v.bricks.iter().enumerate() {
        let arbiter = if v.arbiter && i % r == r - 1 { " (arbiter)" } else { "" };
        let _ = writeln!(s, "Brick{}: {}{arbiter}", i + 1, b.label());
    }
    if !v.options.is_empty() {
        let _ = writeln!(s, "Options Reconfigured:");
        for (k, val) in &v.options {
            let _ = writeln!(s, "{k}: {val}");
        }
    }
    s
}

const RULE: &str = "------------------------------------------------------------------------------";

/// `volume status [VOL]`, each volume with the Task Status block of its
/// definition among `specs`.
pub fn status_text(statuses: &[VolumeStatus], specs: &[VolumeSpec]) -> String {
    statuses
        .iter()
        .map(|v| status(v, specs.iter().find(|s| s.name == v.name)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn status(v: &VolumeStatus, spec: Option<&VolumeSpec>) -> String {
    // gluster's 44-column process field, widened so long brick paths never
    // run into the port column.
    let names: Vec<String> = v.bricks.iter().map(|b| format!("Brick {}", b.brick.label())).collect();
    let width = names.iter().map(|n| n.len() + 1).max().unwrap_or(0).max(44);
    let mut s = String::new();
    let _ = writeln!(s, "Status of volume: {}", v.name);
    let _ = writeln!(
        s,
        "{:<width$}{:<10}{:<11}{:<8}Pid",
        "Cairn process", "UDP Port", "RDMA Port", "Online"
    );
    let _ = writeln!(s, "{}", "-".repeat(RULE.len().max(width + 32)));
    for (b, name) in v.bricks.iter().zip(&names) {
        let port = b.port.map_or("N/A".to_string(), |p| p.to_string());
        let pid = b.pid.map_or("N/A".to_string(), |p| p.to_string());
        let rdma = if b.online { "0" } else { "N/A" };
        let online = if b.online { "Y" } else { "N" };
        let _ = writeln!(s, "{name:<width$}{port:<10}{rdma:<11}{online:<8}{pid}");
    }
    for d in &v.daemons {
        let name = format!(
            "{} on {}",
            d.name,
            d.node.rsplit_once(':').map_or(d.node.as_str(), |(h, _)| h)
        );
        let pid = d.pid.map_or("N/A".to_string(), |p| p.to_string());
        let online = if d.online { "Y" } else { "N" };
        let _ = writeln!(s, "{name:<width$}{:<10}{:<11}{online:<8}{pid}", "N/A", "N/A");
    }
    s.push_str(&super::rebalance::task_block(&v.name, spec));
    s
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KB", "MB", "GB", "TB", "PB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1}{}", UNITS[u])
}

/// gluster's `volume status VOL detail`: one block per brick.
fn status_detail(v: &VolumeStatus) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Status of volume: {}", v.name);
    let _ = writeln!(s, "{RULE}");
    for b in &v.bricks {
        let field = |s: &mut String, k: &str, val: &str| {
            let _ = writeln!(s, "{k:<21}: {val}");
        };
        field(&mut s, "Brick", &format!("Brick {}", b.brick.label()));
        field(&mut s, "UDP Port", &b.port.map_or("N/A".into(), |p| p.to_string()));
        field(&mut s, "RDMA Port", if b.online { "0" } else { "N/A" });
        field(&mut s, "Online", if b.online { "Y" } else { "N" });
        field(&mut s, "Pid", &b.pid.map_or("N/A".into(), |p| p.to_string()));
        match &b.detail {
            Some(d) => {
                field(&mut s, "File System", &d.fs_type);
                field(&mut s, "Device", &d.device);
                field(&mut s, "Mount Options", &d.mount_options);
                field(&mut s, "Inode Size", "N/A");
                field(&mut s, "Disk Space Free", &human_bytes(d.free_bytes));
                field(&mut s, "Total Disk Space", &human_bytes(d.total_bytes));
                field(&mut s, "Inode Count", &d.inodes.to_string());
                field(&mut s, "Free Inodes", &d.free_inodes.to_string());
            }
            None => field(&mut s, "File System", "N/A"),
        }
        let _ = writeln!(s, "{RULE}");
    }
    s
}

fn profile_window(s: &mut String, title: &str, w: &cairn_common::proto::ProfileWindow) {
    let _ = writeln!(s, "{title}:");
    // Block sizes that saw any I/O, four columns to a row, as gluster prints.
    let used: Vec<usize> = (0..w.reads.len()).filter(|&i| w.reads[i] + w.writes[i] > 0).collect();
    for chunk in used.chunks(4) {
        let _ = write!(s, "   Block Size:");
        for &i in chunk {
            let _ = write!(s, "{:>20}", format!("{}b+", 1u64 << i));
        }
        let _ = write!(s, "\n No. of Reads:");
        for &i in chunk {
            let _ = write!(s, "{:>20}", w.reads[i]);
        }
        let _ = write!(s, "\nNo. of Writes:");
        for &i in chunk {
            let _ = write!(s, "{:>20}", w.writes[i]);
        }
        let _ = writeln!(s, "\n");
    }
    let total: u64 = w.fops.iter().map(|f| f.total_ns).sum();
    let _ = writeln!(
        s,
        " %-latency   Avg-latency   Min-Latency   Max-Latency   No. of calls         Fop"
    );
    let _ = writeln!(
        s,
        " ---------   -----------   -----------   -----------   ------------        ----"
    );
    for f in &w.fops {
        let pct = if total == 0 {
            0.0
        } else {
            f.total_ns as f64 * 100.0 / total as f64
        };
        let _ = writeln!(
            s,
            "{pct:>10.2} {:>10.2} ns {:>10.2} ns {:>10.2} ns {:>14} {:>11}",
            f.avg_ns as f64, f.min_ns as f64, f.max_ns as f64, f.calls, f.op
        );
    }
    let _ = writeln!(s, "\n    Duration: {} seconds", w.duration_s);
    let _ = writeln!(s, "   Data Read: {} bytes", w.bytes_read);
    let _ = writeln!(s, "Data Written: {} bytes\n", w.bytes_written);
}

fn profile(p: &cairn_common::proto::BrickProfile) -> String {
    let mut s = String::new();
    let title = format!("Brick: {}", p.brick);
    let _ = writeln!(s, "{title}\n{}", "-".repeat(title.len()));
    profile_window(&mut s, "Cumulative Stats", &p.cumulative);
    profile_window(&mut s, &format!("Interval {} Stats", p.interval_number), &p.interval);
    s
}

fn top(t: &cairn_common::proto::BrickTop) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Brick: {}", t.brick);
    if let (Some(mbps), Some(secs)) = (t.throughput_mbps, t.seconds) {
        let _ = writeln!(s, "Throughput {mbps:.2} MBps time {secs:.4} secs");
        return s;
    }
    let _ = writeln!(s, "Count\t\tfilename\n=======================");
    for (n, path) in &t.entries {
        let _ = writeln!(s, "{n}\t\t{path}");
    }
    s
}

/// gluster's `volume status VOL clients`.
fn status_clients(v: &VolumeStatus) -> String {
    let mut s = format!("Client connections for volume {}\n{RULE}\n", v.name);
    for b in &v.bricks {
        let _ = writeln!(s, "Brick : {}", b.brick.label());
        let _ = writeln!(s, "Clients connected : {}", b.clients.len());
        let _ = writeln!(
            s,
            "{:<48}{:>14}{:>16}  Identity",
            "Hostname", "BytesRead", "BytesWritten"
        );
        let _ = writeln!(
            s,
            "{:<48}{:>14}{:>16}  --------",
            "--------", "---------", "------------"
        );
        for c in &b.clients {
            let _ = writeln!(
                s,
                "{:<48}{:>14}{:>16}  {}",
                c.address, c.bytes_read, c.bytes_written, c.identity
            );
        }
        let _ = writeln!(s, "{RULE}");
    }
    s
}

/// `volume status VOL mem`: the serving process's memory per brick.
fn status_memory(v: &VolumeStatus) -> String {
    let mut s = format!("Memory status for volume : {}\n{RULE}\n", v.name);
    for b in &v.bricks {
        let _ = writeln!(s, "Brick : {}", b.brick.label());
        match &b.memory {
            Some(m) => {
                let _ = writeln!(s, "Resident set size : {} KiB", m.rss_kib);
                let _ = writeln!(s, "Peak resident set : {} KiB", m.peak_rss_kib);
                let _ = writeln!(s, "Virtual size      : {} KiB", m.virtual_kib);
                let _ = writeln!(s, "Threads           : {}", m.threads);
            }
            None => {
                let _ = writeln!(s, "Brick is not online");
            }
        }
        let _ = writeln!(s, "{RULE}");
    }
    s
}
