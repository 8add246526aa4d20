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

/// Async worker threads for a daemon or mount: `CAIRN_WORKER_THREADS`,
/// else half the cores (at least 1, at most 8). A node runs a daemon and
/// usually a mount, each with its own runtime, and each request wakes
/// both: more workers than cores to spare only trade work between threads
/// (futex wake-ups, cache misses). On the 2-core build machine one worker
/// each against two did 10–40 % more small-file operations and 3–20 % more
/// sequential MB/s with a fifth less CPU (docs/performance.md).
pub fn worker_threads() -> usize {
    std::env::var("CAIRN_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| (1..=64).contains(n))
        .unwrap_or_else(|| default_worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get())))
}

fn default_worker_threads(cores: usize) -> usize {
    (cores / 2).clamp(1, 8)
}

#[cfg(test)]
mod worker_tests {
    #[test]
    fn half_the_cores_at_least_one_at_most_eight() {
        let by_cores: Vec<usize> = [1, 2, 3, 4, 16, 64].map(super::default_worker_threads).to_vec();
        assert_eq!(by_cores, vec![1, 1, 1, 2, 8, 8]);
    }
}
