//! Prometheus text metrics on an opt-in local HTTP port (`--metrics ADDR`):
//! per-brick fop counts, errors, latency histograms and bytes, open
//! connections and bricks served.

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
    out
}
