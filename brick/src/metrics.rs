//! Prometheus text metrics on an opt-in local HTTP port (`--metrics ADDR`):
//! per-brick fop counts, errors, latency histograms and bytes, open
//! connections and bricks served. A few lines of HTTP/1.1 are enough for a
//! scraper; anything but `GET /metrics` gets 404.

use crate::node::Node;
use crate::stats::LATENCY_BOUNDS;
use std::fmt::Write;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub async fn serve(listener: tokio::net::TcpListener, node: Arc<Node>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            // Read the whole request head (a scraper's fits in 4 KiB) so that
            // closing does not reset the connection over unread bytes.
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            let head = async {
                while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k,
                    }
                }
            };
            if tokio::time::timeout(std::time::Duration::from_secs(5), head)
                .await
                .is_err()
            {
                return;
            }
            let request = String::from_utf8_lossy(&buf[..n]);
            let response = if request.starts_with("GET /metrics ") || request.starts_with("GET /metrics?") {
                let body = render(&node);
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
            };
            let _ = sock.write_all(response.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
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
            let l = format!("brick=\"{brick}\",op=\"{op}\"");
            let _ = writeln!(fops, "cairn_fop_calls_total{{{l}}} {}", f.calls);
            let _ = writeln!(fops, "cairn_fop_errors_total{{{l}}} {}", f.errors);
            let mut cumulative = 0;
            for (i, bound) in LATENCY_BOUNDS.iter().enumerate() {
                cumulative += f.latency[i];
                let _ = writeln!(
                    fops,
                    "cairn_fop_duration_seconds_bucket{{{l},le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(fops, "cairn_fop_duration_seconds_bucket{{{l},le=\"+Inf\"}} {}", f.calls);
            let _ = writeln!(fops, "cairn_fop_duration_seconds_sum{{{l}}} {}", f.total.as_secs_f64());
            let _ = writeln!(fops, "cairn_fop_duration_seconds_count{{{l}}} {}", f.calls);
        }
        let _ = writeln!(bytes, "cairn_read_bytes_total{{brick=\"{brick}\"}} {}", w.bytes_read);
        let _ = writeln!(
            bytes,
            "cairn_written_bytes_total{{brick=\"{brick}\"}} {}",
            w.bytes_written
        );
    }
    out.push_str("# HELP cairn_fop_calls_total File operations served, by brick and operation.\n");
    out.push_str("# TYPE cairn_fop_calls_total counter\n");
    out.push_str("# HELP cairn_fop_errors_total File operations that failed.\n# TYPE cairn_fop_errors_total counter\n");
    out.push_str("# HELP cairn_fop_duration_seconds Time to serve a file operation.\n");
    out.push_str("# TYPE cairn_fop_duration_seconds histogram\n");
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
