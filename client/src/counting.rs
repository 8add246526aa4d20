//! A pass-through layer that counts what the mount asks of its volume: per
//! fop calls, errors and latency, and bytes read and written — the mount's
//! side of the metrics (`-o metrics=ADDR`).

use crate::layer::{FopFuture, Subvolume};
use bytes::Bytes;
use cairn_common::metrics::OpCounters;
use cairn_common::proto::{Fop, Reply};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub struct Counting {
    inner: Arc<dyn Subvolume>,
    pub ops: OpCounters,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
}

impl Counting {
    pub fn new(inner: Arc<dyn Subvolume>) -> Counting {
        Counting {
            inner,
            ops: OpCounters::default(),
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
        }
    }

    /// Prometheus text for this mount, labelled with its source; `links`:
    /// each node it uses and whether it is connected.
    pub fn render(&self, source: &str, known_inodes: usize, links: &[(String, bool)]) -> String {
        let mut out = String::new();
        cairn_common::metrics::op_family_header(&mut out, "cairn_client_fop", "File operations this mount sent");
        let label = format!("mount=\"{}\",", cairn_common::metrics::escape(source));
        self.ops.render(&mut out, "cairn_client_fop", &label);
        let (r, w) = (
            self.bytes_read.load(Ordering::Relaxed),
            self.bytes_written.load(Ordering::Relaxed),
        );
        out.push_str("# HELP cairn_client_read_bytes_total Bytes read through the mount.\n");
        out.push_str("# TYPE cairn_client_read_bytes_total counter\n");
        out.push_str(&format!(
            "cairn_client_read_bytes_total{{{}}} {r}\n",
            label.trim_end_matches(',')
        ));
        out.push_str("# HELP cairn_client_written_bytes_total Bytes written through the mount.\n");
        out.push_str("# TYPE cairn_client_written_bytes_total counter\n");
        out.push_str(&format!(
            "cairn_client_written_bytes_total{{{}}} {w}\n",
            label.trim_end_matches(',')
        ));
        out.push_str("# HELP cairn_client_inodes Inodes the kernel holds references to.\n");
        out.push_str(&format!(
            "# TYPE cairn_client_inodes gauge\ncairn_client_inodes{{{}}} {known_inodes}\n",
            label.trim_end_matches(',')
        ));
        out.push_str("# HELP cairn_client_node_connected 1 while the mount is connected to the node.\n");
        out.push_str("# TYPE cairn_client_node_connected gauge\n");
        for (node, up) in links {
            let node = cairn_common::metrics::escape(node);
            out.push_str(&format!(
                "cairn_client_node_connected{{{label}node=\"{node}\"}} {}\n",
                u8::from(*up)
            ));
        }
        out
    }
}

impl Subvolume for Counting {
    fn call(&self, op: Fop, payload: Bytes) -> FopFuture<'_> {
        Box::pin(async move {
            let name = op.name();
            let written = match op {
                Fop::Write { len, .. } => u64::from(len),
                _ => 0,
            };
            let started = Instant::now();
            let result = self.inner.call(op, payload).await;
            self.ops.record(name, started.elapsed(), result.is_ok());
            match &result {
                Ok((Reply::Data { len }, _)) => {
                    self.bytes_read.fetch_add(u64::from(*len), Ordering::Relaxed);
                }
                Ok((Reply::Written { len }, _)) if written > 0 => {
                    self.bytes_written.fetch_add(u64::from(*len), Ordering::Relaxed);
                }
                _ => {}
            }
            result
        })
    }

    fn name(&self) -> String {
        self.inner.name()
    }

    fn reconfigure(&self, options: &std::collections::BTreeMap<String, String>) {
        self.inner.reconfigure(options);
    }
}
