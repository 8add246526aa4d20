//! Prometheus text metrics on an opt-in local HTTP port (`--metrics ADDR`):
//! per-brick fop counts, errors, latency histograms and bytes, heal queue
//! length, this node's rebalance progress, open connections and bricks
//! served.

use crate::node::Node;
use cairn_common::metrics::{escape, op_family_header, write_op};
use std::fmt::Write;
use std::sync::Arc;

pub async fn serve(listener: tokio::net::TcpListener, node: Arc<Node>) {
    cairn_common::metrics::serve(listener, Arc::new(move || render(&node))).await
}

/// The metrics document.
pub fn render(node: &Node) -> String {
    let mut out = String::new();
    let labels = node.brick_labels();
    let mut fops = String::new();
    let mut bytes = String::new();
    for (id, stats) in node.stats.all() {
        let brick = escape(labels.get(&id).map_or("unknown", String::as_str));
        let w = stats.lifetime();
        let mut ops: Vec<_> = w.fops.iter().collect();
        ops.sort_by_key(|(op, _)| **op);
        for (op, f) in ops {
            let labels = format!("brick=\"{brick}\",op=\"{op}\"");
            write_op(&mut fops, "cairn_fop", &labels, f.calls, f.errors, f.total, &f.latency);
        }
        let _ = writeln!(bytes, "cairn_read_bytes_total{{brick=\"{brick}\"}} {}", w.bytes_read);
        let _ = writeln!(
            bytes,
            "cairn_written_bytes_total{{brick=\"{brick}\"}} {}",
            w.bytes_written
        );
    }
    op_family_header(&mut out, "cairn_fop", "File operations served, by brick and operation");
    out.push_str(&fops);
    out.push_str("# HELP cairn_read_bytes_total Bytes read from the brick.\n# TYPE cairn_read_bytes_total counter\n");
    out.push_str(
        "# HELP cairn_written_bytes_total Bytes written to the brick.\n# TYPE cairn_written_bytes_total counter\n",
    );
    out.push_str(&bytes);
    let conns = node.stats.connections.load(std::sync::atomic::Ordering::Relaxed);
    let _ = writeln!(out, "# HELP cairn_connections Open client and peer connections.\n# TYPE cairn_connections gauge\ncairn_connections {conns}");
    let _ = writeln!(
        out,
        "# HELP cairn_bricks_served Bricks this node serves now.\n# TYPE cairn_bricks_served gauge\ncairn_bricks_served {}",
        labels.len()
    );
    heal_queue(&mut out, node, &labels);
    rebalance_progress(&mut out, node);
    out
}

/// Entries each brick's heal index holds (what `heal-count` reports).
fn heal_queue(out: &mut String, node: &Node, labels: &std::collections::HashMap<uuid::Uuid, String>) {
    out.push_str("# HELP cairn_heal_pending_entries Inodes in the brick's heal index.\n");
    out.push_str("# TYPE cairn_heal_pending_entries gauge\n");
    let mut bricks: Vec<_> = labels.iter().collect();
    bricks.sort_by(|a, b| a.1.cmp(b.1));
    for (id, label) in bricks {
        if let Some(brick) = node.brick(id) {
            let _ = writeln!(
                out,
                "cairn_heal_pending_entries{{brick=\"{}\"}} {}",
                escape(label),
                brick.heal_index_len()
            );
        }
    }
}

/// This node's part of each volume's rebalance or remove-brick task, as its
/// row of `rebalance status` shows it.
fn rebalance_progress(out: &mut String, node: &Node) {
    const FAMILIES: [(&str, &str, &str); 6] = [
        (
            "cairn_rebalance_files_total",
            "counter",
            "Files this node's rebalance moved.",
        ),
        (
            "cairn_rebalance_bytes_total",
            "counter",
            "Bytes this node's rebalance moved.",
        ),
        (
            "cairn_rebalance_scanned_total",
            "counter",
            "Entries this node's rebalance looked at.",
        ),
        (
            "cairn_rebalance_failures_total",
            "counter",
            "Files this node's rebalance failed to move.",
        ),
        (
            "cairn_rebalance_running",
            "gauge",
            "1 while this node's rebalance runs.",
        ),
        (
            "cairn_rebalance_estimate_seconds",
            "gauge",
            "Estimated seconds left (-1: unknown).",
        ),
    ];
    let applied = node.applied();
    let rows: Vec<_> = applied
        .state
        .volumes
        .values()
        .filter(|spec| spec.task.as_ref().is_some_and(|t| t.nodes.contains(&node.address)))
        .map(|spec| (escape(&spec.name), node.rebalance.local_status(node, spec)))
        .collect();
    for (i, (family, kind, help)) in FAMILIES.iter().enumerate() {
        let _ = writeln!(out, "# HELP {family} {help}\n# TYPE {family} {kind}");
        for (volume, row) in &rows {
            let value = match i {
                0 => row.files as i64,
                1 => row.bytes as i64,
                2 => row.scanned as i64,
                3 => row.failures as i64,
                4 => i64::from(row.state == cairn_common::proto::TaskState::InProgress),
                _ => row.estimate_s.map_or(-1, |s| s as i64),
            };
            let _ = writeln!(out, "{family}{{volume=\"{volume}\"}} {value}");
        }
    }
}
