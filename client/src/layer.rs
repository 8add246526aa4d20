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
