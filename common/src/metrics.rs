//! Prometheus text metrics: a minimal HTTP endpoint (`GET /metrics`, all
//! else 404) and per-operation counters with a latency histogram, shared by
//! cairnd and the mount. A few lines of HTTP/1.1 are all a scraper needs.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Upper bounds (seconds) of the latency histogram's buckets; a last,
/// unbounded bucket follows.
pub const LATENCY_BOUNDS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// The latency bucket of one call.
pub fn latency_bucket(elapsed: Duration) -> usize {
    let secs = elapsed.as_secs_f64();
    LATENCY_BOUNDS
        .iter()
        .position(|&bound| secs <= bound)
        .unwrap_or(LATENCY_BOUNDS.len())
}

/// Serves `render()` at `/metrics` until the listener fails.
pub async fn serve(listener: tokio::net::TcpListener, render: Arc<dyn Fn() -> String + Send + Sync>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let render = render.clone();
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
            if tokio::time::timeout(Duration::from_secs(5), head).await.is_err() {
                return;
            }
            let request = String::from_utf8_lossy(&buf[..n]);
            let response = if request.starts_with("GET /metrics ") || request.starts_with("GET /metrics?") {
                let body = render();
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

/// Escapes a label value.
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Writes one operation's counter, error counter and latency histogram.
/// `labels` is the label text without braces, e.g. `op="lookup"`.
pub fn write_op(
    out: &mut String,
    prefix: &str,
    labels: &str,
    calls: u64,
    errors: u64,
    total: Duration,
    latency: &[u64],
) {
    let _ = writeln!(out, "{prefix}_calls_total{{{labels}}} {calls}");
    let _ = writeln!(out, "{prefix}_errors_total{{{labels}}} {errors}");
    let mut cumulative = 0;
    for (i, bound) in LATENCY_BOUNDS.iter().enumerate() {
        cumulative += latency.get(i).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "{prefix}_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
        );
    }
    let _ = writeln!(out, "{prefix}_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {calls}");
    let _ = writeln!(out, "{prefix}_duration_seconds_sum{{{labels}}} {}", total.as_secs_f64());
    let _ = writeln!(out, "{prefix}_duration_seconds_count{{{labels}}} {calls}");
}

/// `# HELP` and `# TYPE` lines for an op family written by [`write_op`].
pub fn op_family_header(out: &mut String, prefix: &str, what: &str) {
    let _ = writeln!(
        out,
        "# HELP {prefix}_calls_total {what}.\n# TYPE {prefix}_calls_total counter"
    );
    let _ = writeln!(
        out,
        "# HELP {prefix}_errors_total {what} that failed.\n# TYPE {prefix}_errors_total counter"
    );
    let _ = writeln!(
        out,
        "# HELP {prefix}_duration_seconds Time per call.\n# TYPE {prefix}_duration_seconds histogram"
    );
}

#[derive(Default, Clone)]
struct OpCounter {
    calls: u64,
    errors: u64,
    total: Duration,
    latency: [u64; LATENCY_BOUNDS.len() + 1],
}

/// Per-operation counters (the mount's view of its requests).
#[derive(Default)]
pub struct OpCounters {
    ops: Mutex<HashMap<&'static str, OpCounter>>,
}

impl OpCounters {
    pub fn record(&self, op: &'static str, elapsed: Duration, ok: bool) {
        let mut ops = self.ops.lock().expect("op counters poisoned");
        let c = ops.entry(op).or_default();
        c.calls += 1;
        if !ok {
            c.errors += 1;
        }
        c.total += elapsed;
        c.latency[latency_bucket(elapsed)] += 1;
    }

    /// Writes every operation's family, labelled `op="…"` plus `extra`.
    pub fn render(&self, out: &mut String, prefix: &str, extra: &str) {
        let ops = self.ops.lock().expect("op counters poisoned").clone();
        let mut names: Vec<_> = ops.keys().copied().collect();
        names.sort_unstable();
        for op in names {
            let c = &ops[op];
            write_op(
                out,
                prefix,
                &format!("{extra}op=\"{op}\""),
                c.calls,
                c.errors,
                c.total,
                &c.latency,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_complete() {
        let c = OpCounters::default();
        c.record("lookup", Duration::from_micros(50), true);
        c.record("lookup", Duration::from_millis(3), false);
        c.record("lookup", Duration::from_secs(2), true);
        let mut out = String::new();
        c.render(&mut out, "x", "");
        assert!(out.contains("x_calls_total{op=\"lookup\"} 3"));
        assert!(out.contains("x_errors_total{op=\"lookup\"} 1"));
        assert!(out.contains("x_duration_seconds_bucket{op=\"lookup\",le=\"0.0001\"} 1"));
        assert!(out.contains("x_duration_seconds_bucket{op=\"lookup\",le=\"0.005\"} 2"));
        assert!(out.contains("x_duration_seconds_bucket{op=\"lookup\",le=\"1\"} 2"));
        assert!(out.contains("x_duration_seconds_bucket{op=\"lookup\",le=\"+Inf\"} 3"));
    }
}
