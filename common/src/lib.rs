//! Shared pieces of Cairn: the wire protocol, ids, address and name rules, TLS
//! set-up and the QUIC transport used by the daemon, the mount and the CLI.

pub mod addr;
pub mod gfid;
pub mod logging;
pub mod names;
pub mod proto;
pub mod state;
pub mod tls;
pub mod transport;
pub mod wire;

pub use gfid::Gfid;
