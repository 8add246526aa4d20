//! The protocol client layer: one brick on one node. It owns the mapping
//! from the handles it gives out to the brick's handles, so that after a
//! reconnect (a restarted daemon forgets its open files) files are reopened
//! by gfid and the application's open descriptors keep working.

use crate::layer::{Errno, FopFuture, FopResult, Subvolume};
use bytes::Bytes;
use cairn_common::proto::{Fop, Reply, Request};
use cairn_common::transport::{NodeClient, RpcError};
use cairn_common::Gfid;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

#[derive(Clone, Copy)]
struct OpenState {
    gfid: Gfid,
    flags: i32,
    remote: u64,
    epoch: u64,
}

pub struct ProtocolClient {
    node: Arc<NodeClient>,
    brick: Uuid,
    label: String,
    open: Mutex<HashMap<u64, OpenState>>,
    next_fh: AtomicU64,
}

impl ProtocolClient {
    pub fn new(node: Arc<NodeClient>, brick: Uuid, label: String) -> ProtocolClient {
        ProtocolClient {
            node,
            brick,
            label,
            open: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
        }
    }

    async fn raw(&self, op: Fop, payload: Bytes) -> Result<(Reply, Bytes), RpcError> {
        let wait = matches!(op, Fop::SetLk { wait: true, .. });
        let req = match crate::caller::current() {
            Some(caller) => Request::FopAs {
                brick: self.brick,
                op,
                caller,
            },
            None => Request::Fop { brick: self.brick, op },
        };
        if wait {
            // A blocked lock waits as long as the holder holds it.
            self.node.call_with_timeout(&req, payload, None).await
        } else {
            self.node.call(&req, payload).await
        }
    }

    fn remember(&self, gfid: Gfid, flags: i32, remote: u64, epoch: u64) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let flags = crate::layer::reopen_flags(flags);
        self.open.lock().expect("open poisoned").insert(
            fh,
            OpenState {
                gfid,
                flags,
                remote,
                epoch,
            },
        );
        fh
    }

    /// The brick's handle for our `fh`, reopening it on a new connection.
    async fn remote_fh(&self, fh: u64) -> Result<u64, Errno> {
        let state = *self
            .open
            .lock()
            .expect("open poisoned")
            .get(&fh)
            .ok_or(Errno(libc::EBADF))?;
        let epoch = self.node.ensure_connected().await?;
        if state.epoch == epoch {
            return Ok(state.remote);
        }
        tracing::info!(brick = %self.label, gfid = %state.gfid, "reopening a file after reconnecting");
        match self
            .raw(
                Fop::Open {
                    gfid: state.gfid,
                    flags: state.flags,
                },
                Bytes::new(),
            )
            .await?
        {
            (Reply::Opened { fh: remote }, _) => {
                if let Some(s) = self.open.lock().expect("open poisoned").get_mut(&fh) {
                    s.remote = remote;
                    s.epoch = epoch;
                }
                Ok(remote)
            }
            _ => Err(Errno(libc::EIO)),
        }
    }

    /// Does `op` write to a file opened with O_APPEND (where a repeat would
    /// append twice)?
    fn appends(&self, op: &Fop) -> bool {
        match op {
            Fop::Write { fh, .. } => self
                .open
                .lock()
                .expect("open poisoned")
                .get(fh)
                .is_none_or(|s| s.flags & libc::O_APPEND != 0),
            _ => false,
        }
    }

    /// Rewrites our handles in `op` to the brick's.
    async fn translate(&self, op: Fop) -> Result<Fop, Errno> {
        let mut remote = Vec::new();
        for fh in op.handles() {
            remote.push((fh, self.remote_fh(fh).await?));
        }
        Ok(op.map_handles(|fh| remote.iter().find(|(ours, _)| *ours == fh).map_or(fh, |(_, r)| *r)))
    }

    async fn perform(&self, op: Fop, payload: Bytes) -> FopResult {
        match op {
            Fop::Open { gfid, flags } => {
                let epoch = self.node.ensure_connected().await?;
                match self.raw(Fop::Open { gfid, flags }, payload).await? {
                    (Reply::Opened { fh }, data) => Ok((
                        Reply::Opened {
                            fh: self.remember(gfid, flags, fh, epoch),
                        },
                        data,
                    )),
                    _ => Err(Errno(libc::EIO)),
                }
            }
            op @ Fop::OpenRead { gfid, flags, .. } => {
                let epoch = self.node.ensure_connected().await?;
                match self.raw(op, payload).await? {
                    (Reply::Opened { fh }, data) => Ok((
                        Reply::Opened {
                            fh: self.remember(gfid, flags, fh, epoch),
                        },
                        data,
                    )),
                    (Reply::OpenedWhole { fh, len }, data) => Ok((
                        Reply::OpenedWhole {
                            fh: self.remember(gfid, flags, fh, epoch),
                            len,
                        },
                        data,
                    )),
                    _ => Err(Errno(libc::EIO)),
                }
            }
            Fop::Create {
                parent,
                name,
                gfid,
                mode,
                umask,
                flags,
                creds,
            } => {
                let epoch = self.node.ensure_connected().await?;
                let op = Fop::Create {
                    parent,
                    name,
                    gfid,
                    mode,
                    umask,
                    flags,
                    creds,
                };
                match self.raw(op, payload).await? {
                    (Reply::Created { attr, fh }, data) => Ok((
                        Reply::Created {
                            attr,
                            fh: self.remember(attr.gfid, flags, fh, epoch),
                        },
                        data,
                    )),
                    _ => Err(Errno(libc::EIO)),
                }
            }
            op @ Fop::TxnCreate { flags, .. } => {
                let epoch = self.node.ensure_connected().await?;
                match self.raw(op, payload).await? {
                    (Reply::TxnCreated(Ok((attr, fh))), data) => Ok((
                        Reply::TxnCreated(Ok((attr, self.remember(attr.gfid, flags, fh, epoch)))),
                        data,
                    )),
                    (refused @ Reply::TxnCreated(Err(_)), data) => Ok((refused, data)),
                    _ => Err(Errno(libc::EIO)),
                }
            }
            Fop::Release { fh } => {
                let state = self
                    .open
                    .lock()
                    .expect("open poisoned")
                    .remove(&fh)
                    .ok_or(Errno(libc::EBADF))?;
                if state.epoch == self.node.epoch() {
                    // Best effort: a dead connection already released it.
                    let _ = self.raw(Fop::Release { fh: state.remote }, payload).await;
                }
                Ok((Reply::Empty, Bytes::new()))
            }
            op => {
                // A request that met a dead connection is sent once more on a
                // fresh one (a restarted daemon answers the first packet with
                // a reset) when repeating it cannot change the outcome.
                let retry = op.is_idempotent() && !self.appends(&op);
                let translated = self.translate(op.clone()).await?;
                match self.raw(translated, payload.clone()).await {
                    Err(RpcError::Unreachable(why)) if retry => {
                        tracing::debug!(brick = %self.label, %why, "retrying on a new connection");
                        let translated = self.translate(op).await?;
                        Ok(self.raw(translated, payload).await?)
                    }
                    other => Ok(other?),
                }
            }
        }
    }
}

impl Subvolume for ProtocolClient {
    fn call(&self, op: Fop, payload: Bytes) -> FopFuture<'_> {
        Box::pin(self.perform(op, payload))
    }

    fn name(&self) -> String {
        self.label.clone()
    }
}
