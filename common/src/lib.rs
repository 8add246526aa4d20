//! Shared pieces of Cairn: the wire protocol, ids, address and name rules, TLS
//! set-up and the QUIC transport used by the daemon, the mount and the CLI.

pub mod addr;
pub mod changelog;
pub mod checksum;
pub mod gfid;
pub mod layout;
pub mod logging;
pub mod metrics;
pub mod names;
pub mod options;
pub mod proto;
pub mod state;
pub mod tls;
pub mod transport;
pub mod wire;

pub use gfid::Gfid;

/// Async worker threads for a daemon or mount: `CAIRN_WORKER_THREADS`, else 2.
pub fn worker_threads() -> usize {
    std::env::var("CAIRN_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| (1..=64).contains(n))
        .unwrap_or(2)
}
