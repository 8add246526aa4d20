//! The interface every client layer speaks: a file operation in, a reply
//! (and raw payload) out. A layer can be tested with any other below it.

use bytes::Bytes;
use cairn_common::proto::{Fop, Reply};
use std::future::Future;
use std::pin::Pin;

/// An errno-carrying failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Errno(pub i32);

impl From<cairn_common::transport::RpcError> for Errno {
    fn from(e: cairn_common::transport::RpcError) -> Self {
        Errno(e.errno())
    }
}

pub type FopResult = Result<(Reply, Bytes), Errno>;
pub type FopFuture<'a> = Pin<Box<dyn Future<Output = FopResult> + Send + 'a>>;

/// One subvolume: a brick, or a layer combining several.
pub trait Subvolume: Send + Sync {
    /// Performs `op`; `payload` carries write data.
    fn call(&self, op: Fop, payload: Bytes) -> FopFuture<'_>;
    /// A short name for logs.
    fn name(&self) -> String;

    /// Applies the volume's options (on mount, and whenever they change).
    fn reconfigure(&self, _options: &std::collections::BTreeMap<String, String>) {}
}

/// The flags to open a file with again (after a reconnect, or on a
/// replica that was away): O_TRUNC, O_CREAT and O_EXCL applied once and
/// must not be repeated.
pub fn reopen_flags(flags: i32) -> i32 {
    flags & !(libc::O_TRUNC | libc::O_CREAT | libc::O_EXCL)
}

/// Runs futures concurrently, keeping their order.
pub async fn join_all<F, T>(futures: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T>,
{
    let pinned: Vec<_> = futures.map(Box::pin).collect();
    let mut results: Vec<Option<T>> = pinned.iter().map(|_| None).collect();
    let mut pending: Vec<(usize, std::pin::Pin<Box<F>>)> = pinned.into_iter().enumerate().collect();
    std::future::poll_fn(|cx| {
        pending.retain_mut(|(i, f)| match f.as_mut().poll(cx) {
            std::task::Poll::Ready(v) => {
                results[*i] = Some(v);
                false
            }
            std::task::Poll::Pending => true,
        });
        if pending.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    results
        .into_iter()
        .map(|r| r.expect("every future completed"))
        .collect()
}

/// A regular file's attributes for tests: mode 0644, `size` bytes, all
/// times zero.
#[cfg(test)]
pub(crate) fn test_file(gfid: cairn_common::Gfid, size: u64) -> cairn_common::proto::Attr {
    let zero = cairn_common::proto::Timespec::default();
    cairn_common::proto::Attr {
        gfid,
        mode: libc::S_IFREG | 0o644,
        nlink: 1,
        uid: 0,
        gid: 0,
        rdev: 0,
        size,
        blocks: 0,
        blksize: 4096,
        atime: zero,
        mtime: zero,
        ctime: zero,
        linkto: None,
    }
}
