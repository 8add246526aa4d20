//! The Cairn client: the cluster logic a mount runs, as a stack of layers
//! that each speak [`layer::Subvolume`] (file operations in, replies out),
//! like GlusterFS translators, under a thin FUSE adapter.
//!
//! FUSE adapter (`fuse`) → filesystem semantics (`fs`) → write-behind
//! (`write_behind`) → volume graph (`volume`) → protocol client
//! (`protocol`) → QUIC (`cairn_common`).

pub mod afr;
pub mod caller;
pub mod counting;
pub mod dht;
pub mod fs;
pub mod fuse;
pub mod layer;
pub mod listing_ahead;
pub mod mount;
pub mod protocol;
pub mod skip;
pub mod volume;
pub mod write_behind;
