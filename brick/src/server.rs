//! The QUIC server: accepts connections from pool members and mounts, checks
//! each peer's role from its certificate, and answers one request per stream.

use crate::fops::{blocking_fop, OpenFiles, Outcome};
use crate::locks::{LockKind, LockManager, LockOwner};
use crate::node::Node;
use crate::store::{Brick, FsError};
use bytes::Bytes;
use cairn_common::proto::{
    Creds, ErrorReply, Fop, LockSpec, LockType, Reply, Request, Response, TxnLock, TxnMark, MAX_IO_SIZE,
    PROTOCOL_VERSION,
};
use cairn_common::tls::Role;
use cairn_common::{wire, Gfid};
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// A peer that opens a stream must send its header within this time; a
/// silent stream is dropped so it cannot pin resources (slowloris).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// How many connections a node holds at once (`cairnd
/// --max-connections`, `--max-anonymous-connections`). Together with the
/// per-connection limits (`transport::VERIFIED_*`, `UNVERIFIED_*`) they
/// bound what a flood of connections can make the daemon buffer.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Every connection, handshakes in progress included.
    pub connections: usize,
    /// Connections without a certificate (only probes need one, briefly).
    pub anonymous: usize,
}

/// Counts a connection while it lives.
struct Slot(Arc<std::sync::atomic::AtomicUsize>);

impl Slot {
    /// Takes one of `limit` slots, or None if all are taken.
    fn take(count: &Arc<std::sync::atomic::AtomicUsize>, limit: usize) -> Option<Slot> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < limit).then_some(n + 1))
            .ok()
            .map(|_| Slot(count.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pub struct Server {
    pub node: Arc<Node>,
    limits: Limits,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    anonymous: Arc<std::sync::atomic::AtomicUsize>,
    locks: Arc<LockManager>,
    /// Replicate's inode and entry locks.
    domain_locks: Arc<crate::domain_locks::DomainLocks>,
    /// Files being migrated away (rebalance): frozen or moved.
    migrations: crate::migration::Migrations,
    next_conn: AtomicU64,
}

/// What one connection owns; dropped (closing its files and locks) when the
/// peer goes away.
struct ConnState {
    id: u64,
    role: Role,
    /// The peer's address, for auth.allow / auth.reject.
    remote: std::net::IpAddr,
    conn: quinn::Connection,
    files: OpenFiles,
    /// Set before the connection's locks are released, so a lock granted to
    /// a request still in flight is given back instead of leaking.
    closed: std::sync::atomic::AtomicBool,
}

impl Server {
    pub fn new(node: Arc<Node>, limits: Limits) -> Arc<Server> {
        Arc::new(Server {
            node,
            limits,
            connections: Default::default(),
            anonymous: Default::default(),
            locks: Arc::new(LockManager::new()),
            domain_locks: Arc::new(crate::domain_locks::DomainLocks::default()),
            migrations: crate::migration::Migrations::default(),
            next_conn: AtomicU64::new(1),
        })
    }

    /// Accepts connections until `shutdown` fires.
    pub async fn run(self: Arc<Self>, endpoint: quinn::Endpoint, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                incoming = endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    let Some(slot) = Slot::take(&self.connections, self.limits.connections) else {
                        tracing::warn!(remote = %incoming.remote_address(), limit = self.limits.connections, "refusing a connection: too many open");
                        incoming.refuse();
                        continue;
                    };
                    let server = self.clone();
                    tokio::spawn(async move {
                        server.serve_connection(incoming).await;
                        drop(slot);
                    });
                }
                _ = shutdown.changed() => break,
            }
        }
        endpoint.close(0u32.into(), b"node shutting down");
    }

    async fn serve_connection(self: Arc<Self>, incoming: quinn::Incoming) {
        let remote = incoming.remote_address();
        let conn = match incoming.await {
            Ok(c) => c,
            Err(e) => {
                tracing::info!(%remote, error = %e, "connection refused in handshake");
                return;
            }
        };
        let chain = conn
            .peer_identity()
            .and_then(|id| id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok());
        let role = match chain {
            // No certificate at all: a prober asking this node to join.
            None => Some(Role::Anonymous),
            Some(chain) if chain.is_empty() => Some(Role::Anonymous),
            Some(chain) => cairn_common::tls::peer_role(&chain),
        };
        let Some(role) = role else {
            tracing::warn!(%remote, "refusing a certificate without a cairn role");
            conn.close(1u32.into(), b"certificate carries no cairn role");
            return;
        };
        let _anonymous_slot = if role == Role::Anonymous {
            match Slot::take(&self.anonymous, self.limits.anonymous) {
                Some(slot) => Some(slot),
                None => {
                    tracing::warn!(%remote, limit = self.limits.anonymous, "refusing a connection without a certificate: too many open");
                    conn.close(3u32.into(), b"too many connections without a certificate");
                    return;
                }
            }
        } else {
            // A pool member or mount: the full stream and window limits.
            cairn_common::transport::open_up_verified(&conn);
            None
        };
        if let Role::Client(name) = &role {
            if self.node.is_revoked(name) {
                tracing::warn!(%remote, client = %name, "refusing a revoked client certificate");
                conn.close(2u32.into(), b"client certificate revoked");
                return;
            }
        }
        let state = Arc::new(ConnState {
            id: self.next_conn.fetch_add(1, Ordering::Relaxed),
            role,
            remote: remote.ip().to_canonical(),
            conn: conn.clone(),
            files: OpenFiles::default(),
            closed: std::sync::atomic::AtomicBool::new(false),
        });
        tracing::debug!(%remote, role = ?state.role, conn = state.id, "connection up");
        let identity = match &state.role {
            Role::Node(id) => format!("node-{id}"),
            Role::Client(name) => format!("client-{name}"),
            Role::Anonymous => "anonymous".to_string(),
        };
        self.node.stats.connection_up(state.id, remote.to_string(), identity);
        while let Ok((send, recv)) = conn.accept_bi().await {
            let server = self.clone();
            let state = state.clone();
            tokio::spawn(async move { server.serve_stream(state, send, recv).await });
        }
        tracing::debug!(%remote, conn = state.id, "connection down");
        self.node.stats.connection_down(state.id);
        state.closed.store(true, Ordering::SeqCst);
        self.locks.release_connection(state.id);
        self.domain_locks.release_connection(state.id);
        self.migrations.release_connection(state.id);
        state.files.close_all();
    }

    async fn serve_stream(
        self: Arc<Self>,
        state: Arc<ConnState>,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
    ) {
        let (resp, payload) = match tokio::time::timeout(HEADER_TIMEOUT, wire::recv_header::<Request>(&mut recv)).await
        {
            Err(_) => (
                Response::error(libc::ETIMEDOUT, "no request header in time"),
                Bytes::new(),
            ),
            Ok(Err(e)) => {
                tracing::debug!(conn = state.id, error = %e, "bad request frame");
                (Response::error(libc::EPROTO, format!("bad request: {e}")), Bytes::new())
            }
            Ok(Ok(req)) => {
                if let Some(lock) = waited_lock(&req) {
                    return self.serve_waited_lock(&state, req, lock, send, recv).await;
                }
                if let Some((brick, Fop::TxnBegin { .. } | Fop::TxnCreate { .. })) = fop_of(&req) {
                    let brick = *brick;
                    return self.serve_txn_begin(&state, brick, req, send, recv).await;
                }
                self.dispatch(&state, req, &mut recv).await
            }
        };
        done_reading(recv);
        let mut chunks = if payload.is_empty() { vec![] } else { vec![payload] };
        if let Err(e) = wire::send_message(&mut send, &resp, &mut chunks).await {
            tracing::debug!(conn = state.id, error = %e, "could not send a reply");
        }
    }

    /// A blocking replicate lock request: the lock is granted only to a
    /// client still waiting for the answer. A client that gives up (its
    /// call timed out: it stops the stream) and still gets the lock later
    /// would hold it, unknowingly, until its connection dies — every other
    /// writer and healer of that file waits meanwhile (found by the
    /// partition test of `tests/tests/netns_faults.rs`: a heal index that
    /// never emptied). So the wait ends when the stream is stopped, and a
    /// lock whose grant the client stopped reading is given back.
    async fn serve_waited_lock(
        self: Arc<Self>,
        state: &Arc<ConnState>,
        req: Request,
        lock: crate::domain_locks::LockTarget,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
    ) {
        let Some((_, op)) = fop_of(&req) else {
            unreachable!("waited_lock only matches fops")
        };
        let holder = crate::domain_locks::Holder {
            conn: state.id,
            owner: lock_owner(op),
        };
        // Cancel-safe: the lock is taken and the answer made in one poll
        // of `dispatch`, so dropping it either leaves the lock untaken or
        // never happens.
        let (resp, payload) = tokio::select! {
            answer = self.dispatch(state, req, &mut recv) => answer,
            _ = send.stopped() => {
                tracing::debug!(conn = state.id, ?lock, "the client gave up waiting for a lock");
                return;
            }
        };
        let granted = matches!(resp, Response::Ok(_));
        done_reading(recv);
        let mut chunks = if payload.is_empty() { vec![] } else { vec![payload] };
        if let Err(e) = wire::send_message(&mut send, &resp, &mut chunks).await {
            tracing::debug!(conn = state.id, error = %e, "could not send a reply");
        }
        // `Some`: the client stopped the stream before reading the grant.
        if granted && matches!(send.stopped().await, Ok(Some(_))) {
            tracing::debug!(
                conn = state.id,
                ?lock,
                "giving back a lock the client stopped waiting for"
            );
            let _ = self.domain_locks.unlock(&lock, holder);
        }
    }

    /// `TxnBegin`, undone if the client stopped reading (or its connection
    /// was lost) before its answer arrived: a client whose call timed out
    /// (replies lost one way, say)
    /// counts this brick out of the transaction and never ends it here, so
    /// the locks would stay held until its connection died and the pre-op
    /// would leave a `dirty` mark nobody clears (found by the one-way loss
    /// scenario of `tests/tests/netns_faults.rs`). The same rule as
    /// [`serve_waited_lock`](Self::serve_waited_lock).
    async fn serve_txn_begin(
        self: Arc<Self>,
        state: &Arc<ConnState>,
        brick_id: Uuid,
        req: Request,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
    ) {
        let undo = match fop_of(&req) {
            Some((
                _,
                Fop::TxnBegin {
                    domain,
                    owner,
                    locks,
                    marks,
                }
                | Fop::TxnCreate {
                    domain,
                    owner,
                    locks,
                    marks,
                    ..
                },
            )) => (domain.clone(), *owner, locks.clone(), marks.clone()),
            _ => unreachable!("only TxnBegin and TxnCreate come here"),
        };
        let (resp, payload) = self.dispatch(state, req, &mut recv).await;
        let begun = matches!(resp, Response::Ok(_));
        // A create made here stays, and so does its mark, so heal looks at
        // it: the client counts this brick out and blames it.
        let made = match &resp {
            Response::Ok(Reply::TxnCreated(Ok((_, fh)))) => Some(*fh),
            _ => None,
        };
        done_reading(recv);
        let mut chunks = if payload.is_empty() { vec![] } else { vec![payload] };
        if let Err(e) = wire::send_message(&mut send, &resp, &mut chunks).await {
            tracing::debug!(conn = state.id, error = %e, "could not send a reply");
        }
        // Ok(None): the client has the answer. Stopped, or the connection
        // lost before it acknowledged the answer: it counts us out.
        if !begun || matches!(send.stopped().await, Ok(None)) {
            return;
        }
        let (domain, owner, locks, marks) = undo;
        tracing::debug!(
            conn = state.id,
            "undoing a transaction start the client stopped waiting for"
        );
        let Some(brick) = self.node.brick(&brick_id) else {
            return;
        };
        if let Some(fh) = made {
            // Nobody will release the file the create opened.
            state.files.close(fh);
        }
        for m in marks.into_iter().filter(|_| made.is_none()) {
            let back: Vec<(String, [i32; 3])> = m.deltas.into_iter().map(|(n, d)| (n, d.map(|v| -v))).collect();
            if let Err(e) = brick.xattrop(&m.gfid, &back) {
                tracing::warn!(conn = state.id, gfid = %m.gfid, error = %e.context, "could not undo an abandoned pre-op; heal will look at it");
            }
        }
        // A lost connection has already given its locks back.
        let holder = crate::domain_locks::Holder { conn: state.id, owner };
        for l in locks.iter().rev() {
            let _ = self.domain_locks.unlock(&txn_lock_target(brick_id, &domain, l), holder);
        }
    }

    async fn dispatch(&self, state: &Arc<ConnState>, req: Request, recv: &mut quinn::RecvStream) -> (Response, Bytes) {
        // A certificate revoked while connected loses the connection at its
        // next request.
        if let Role::Client(name) = &state.role {
            if self.node.is_revoked(name) {
                state.conn.close(2u32.into(), b"client certificate revoked");
                return (
                    Response::error(libc::EACCES, "client certificate revoked"),
                    Bytes::new(),
                );
            }
        }
        if state.role == Role::Anonymous
            && !matches!(
                req,
                Request::Hello { .. } | Request::Pool(cairn_common::proto::PoolRequest::Join { .. })
            )
        {
            return (
                Response::error(libc::EACCES, "this request needs a pool certificate"),
                Bytes::new(),
            );
        }
        match req {
            Request::Pool(req) => {
                if matches!(state.role, Role::Client(_)) {
                    return (
                        Response::error(libc::EACCES, "pool requests need node credentials"),
                        Bytes::new(),
                    );
                }
                match crate::pool_service::handle(&self.node, req).await {
                    Ok(reply) => (Response::Ok(Reply::Pool(reply)), Bytes::new()),
                    Err(e) => (Response::error(libc::EINVAL, format!("{e:#}")), Bytes::new()),
                }
            }
            Request::Hello { version } => {
                if version != PROTOCOL_VERSION {
                    return (
                        Response::error(
                            libc::EPROTO,
                            format!("protocol version {version} is not supported; this node speaks {PROTOCOL_VERSION}"),
                        ),
                        Bytes::new(),
                    );
                }
                (
                    Response::Ok(Reply::Hello {
                        version: PROTOCOL_VERSION,
                        node_id: self.node.id,
                    }),
                    Bytes::new(),
                )
            }
            Request::Admin(admin) => {
                if matches!(state.role, Role::Client(_) | Role::Anonymous) && !admin.allowed_for_clients() {
                    return (
                        Response::error(libc::EACCES, "management requests need node credentials"),
                        Bytes::new(),
                    );
                }
                if let cairn_common::proto::AdminRequest::GetVolume { name } = &admin {
                    if !self.node.volume_admits(name, state.remote) {
                        return (
                            Response::error(
                                libc::EACCES,
                                format!(
                                    "{} is not allowed to mount {name} (auth.allow / auth.reject)",
                                    state.remote
                                ),
                            ),
                            Bytes::new(),
                        );
                    }
                }
                let node = self.node.clone();
                match tokio::task::spawn_blocking(move || node.admin(admin)).await {
                    Ok(Ok(reply)) => (Response::Ok(Reply::Admin(reply)), Bytes::new()),
                    Ok(Err(e)) => (Response::error(libc::EINVAL, format!("{e:#}")), Bytes::new()),
                    Err(e) => (
                        Response::error(libc::EIO, format!("management task failed: {e}")),
                        Bytes::new(),
                    ),
                }
            }
            Request::Fop { brick, op } => self.serve_fop(state, brick, op, None, recv).await,
            Request::FopAs { brick, op, caller } => self.serve_fop(state, brick, op, Some(caller), recv).await,
        }
    }

    /// Runs a fop and records it for `volume profile` / `top` / `status`.
    async fn serve_fop(
        &self,
        state: &Arc<ConnState>,
        brick: Uuid,
        op: Fop,
        caller: Option<Creds>,
        recv: &mut quinn::RecvStream,
    ) -> (Response, Bytes) {
        let name = op.name();
        tracing::trace!(op = name, detail = ?op, "fop");
        let started = std::time::Instant::now();
        let subject = self.subject_of(state, brick, &op);
        let first_listing = matches!(op, Fop::Readdir { cookie: 0, .. });
        let written = match op {
            Fop::Write { len, .. } => Some(u64::from(len)),
            _ => None,
        };
        let outcome = self.fop(state, brick, op, caller, recv).await;
        self.record(
            brick,
            name,
            started.elapsed(),
            &outcome,
            written,
            subject,
            first_listing,
        );
        let read = match &outcome {
            Ok((Reply::Data { len }, _)) => u64::from(*len),
            _ => 0,
        };
        self.node
            .stats
            .connection_used(state.id, brick, read, written.unwrap_or(0));
        match outcome {
            Ok((reply, payload)) => (Response::Ok(reply), payload),
            Err(e) => {
                tracing::trace!(op = name, errno = e.errno, context = %e.context, "fop failed");
                (Response::error(e.errno, e.context), Bytes::new())
            }
        }
    }

    async fn fop(
        &self,
        state: &Arc<ConnState>,
        brick_id: Uuid,
        op: Fop,
        caller: Option<Creds>,
        recv: &mut quinn::RecvStream,
    ) -> Outcome {
        if !self.node.brick_admits(&brick_id, state.remote) {
            return Err(FsError::new(
                libc::EACCES,
                format!("{} is refused by auth.allow / auth.reject", state.remote),
            ));
        }
        let brick = self.node.brick(&brick_id).ok_or_else(|| {
            FsError::new(
                libc::ENOTCONN,
                format!("brick {brick_id} is not served here (volume stopped?)"),
            )
        })?;
        let op = self.apply_root_squash(state, &brick, op, caller)?;
        let payload = match op.payload_len() {
            0 => Bytes::new(),
            n if n > u64::from(MAX_IO_SIZE) => {
                return Err(FsError::new(libc::EINVAL, "write larger than the protocol allows"))
            }
            n => wire::recv_payload(recv, n)
                .await
                .map_err(|e| FsError::new(libc::EIO, e.to_string()))?,
        };
        let concern = crate::migration::concern(&op, |fh| state.files.gfid_of(&brick_id, fh));
        let _pass = self.migrations.enter(brick_id, concern).await?;
        if let Fop::MakeLink { gfid, .. } | Fop::SetLinkto { gfid, .. } = &op {
            self.migrations.arriving(brick_id, *gfid);
        }
        if let Fop::Unlink { parent, name } = &op {
            // The old copy of a migrated file loses its last name: its
            // handle goes with it, open or not (see `drop_moved_handle`).
            if self.migrations.any_moved() {
                let moved = brick
                    .lookup(parent, name)
                    .ok()
                    .map(|a| a.gfid)
                    .filter(|g| self.migrations.is_moved(brick_id, *g));
                if let Some(gfid) = moved {
                    let r = blocking_fop(&brick, &state.files, op, payload);
                    if r.is_ok() {
                        brick.drop_moved_handle(&gfid);
                    }
                    return r;
                }
            }
        }
        match op {
            Fop::MigrateFreeze { gfid, freeze } => {
                if freeze {
                    self.migrations.freeze(brick_id, gfid, state.id).await?;
                } else {
                    self.migrations.thaw(brick_id, gfid, state.id);
                }
                Ok((Reply::Empty, Bytes::new()))
            }
            Fop::MigrateDone { gfid, target } => {
                self.migrations.mark_moved(brick_id, gfid, state.id)?;
                tracing::debug!(brick = %brick_id, %gfid, %target, "file migrated away");
                Ok((Reply::Empty, Bytes::new()))
            }
            Fop::GetLk { fh, lock } => {
                let (_, gfid) = self.open_file(state, &brick, fh)?;
                let owner = LockOwner {
                    conn: state.id,
                    owner: lock.owner,
                };
                let found = self
                    .locks
                    .get_lock(gfid.0, owner, kind_of(lock.typ), lock.start, lock.end);
                Ok((
                    Reply::Lock(found.map(|l| LockSpec {
                        typ: match l.kind {
                            LockKind::Read => LockType::Read,
                            _ => LockType::Write,
                        },
                        start: l.start,
                        end: l.end,
                        pid: l.pid,
                        owner: 0,
                    })),
                    Bytes::new(),
                ))
            }
            Fop::SetLk { fh, lock, wait } => {
                let (_, gfid) = self.open_file(state, &brick, fh)?;
                let owner = LockOwner {
                    conn: state.id,
                    owner: lock.owner,
                };
                let kind = kind_of(lock.typ);
                let result = if wait && kind != LockKind::Unlock {
                    self.locks
                        .set_lock_wait(gfid.0, owner, kind, lock.start, lock.end, lock.pid)
                        .await
                } else {
                    self.locks.set_lock(gfid.0, owner, kind, lock.start, lock.end, lock.pid)
                };
                result.map_err(|e| FsError::new(e.errno(), e.to_string()))?;
                if state.closed.load(Ordering::SeqCst) {
                    self.locks.release_owner(gfid.0, owner);
                    return Err(FsError::new(libc::ENOTCONN, "connection closed while locking"));
                }
                Ok((Reply::Empty, Bytes::new()))
            }
            Fop::Flush { fh, lock_owner } => {
                let (_, gfid) = self.open_file(state, &brick, fh)?;
                self.locks.release_owner(
                    gfid.0,
                    LockOwner {
                        conn: state.id,
                        owner: lock_owner,
                    },
                );
                Ok((Reply::Empty, Bytes::new()))
            }
            Fop::Release { fh } => {
                state.files.close(fh);
                Ok((Reply::Empty, Bytes::new()))
            }
            Fop::InodeLk { owner, lock, wait, .. } | Fop::EntryLk { owner, lock, wait, .. } => {
                let target =
                    lock_target(brick_id, &op).ok_or_else(|| FsError::new(libc::EINVAL, "not a lock request"))?;
                self.domain_lock(state, target, owner, lock, wait).await
            }
            Fop::TxnBegin {
                domain,
                owner,
                locks,
                marks,
            } => self.txn_begin(state, &brick, brick_id, domain, owner, locks, marks),
            Fop::TxnEnd {
                domain,
                owner,
                locks,
                marks,
            } => self.txn_end(state, &brick, brick_id, domain, owner, &locks, &marks),
            op @ Fop::TxnCreate { .. } => self.txn_create(state, &brick, brick_id, op, caller, recv).await,
            op if runs_inline(&op) => blocking_fop(&brick, &state.files, op, payload),
            op => {
                let state = state.clone();
                tokio::task::spawn_blocking(move || blocking_fop(&brick, &state.files, op, payload))
                    .await
                    .map_err(|e| FsError::new(libc::EIO, format!("fop task failed: {e}")))?
            }
        }
    }

    /// `TxnBegin`: every lock without waiting, then every mark; on any
    /// failure, what was done is undone so the client holds nothing.
    #[allow(clippy::too_many_arguments)]
    fn txn_begin(
        &self,
        state: &ConnState,
        brick: &Brick,
        brick_id: Uuid,
        domain: String,
        owner: u64,
        locks: Vec<TxnLock>,
        marks: Vec<TxnMark>,
    ) -> Outcome {
        let holder = crate::domain_locks::Holder { conn: state.id, owner };
        let targets: Vec<_> = locks.iter().map(|l| txn_lock_target(brick_id, &domain, l)).collect();
        for (taken, target) in targets.iter().enumerate() {
            if let Err(e) = self.domain_locks.try_lock(target.clone(), holder) {
                self.give_back(&targets[..taken], holder);
                return Err(FsError::new(e, "lock held by another client"));
            }
        }
        if state.closed.load(Ordering::SeqCst) {
            self.give_back(&targets, holder);
            return Err(FsError::new(libc::ENOTCONN, "connection closed while locking"));
        }
        for (done, mark) in marks.iter().enumerate() {
            if let Err(e) = brick.xattrop(&mark.gfid, &mark.deltas) {
                for undo in &marks[..done] {
                    let back: Vec<_> = undo.deltas.iter().map(|(n, d)| (n.clone(), d.map(|v| -v))).collect();
                    if let Err(u) = brick.xattrop(&undo.gfid, &back) {
                        tracing::warn!(gfid = %undo.gfid, error = %u, "could not undo a pre-op; heal will look at it");
                    }
                }
                self.give_back(&targets, holder);
                return Err(e);
            }
        }
        Ok((Reply::Empty, Bytes::new()))
    }

    /// `TxnCreate`: `TxnBegin`, then — begun — the create as any create
    /// is served (access checks, root squash), its outcome in the answer.
    async fn txn_create(
        &self,
        state: &Arc<ConnState>,
        brick: &Brick,
        brick_id: Uuid,
        op: Fop,
        caller: Option<Creds>,
        recv: &mut quinn::RecvStream,
    ) -> Outcome {
        let Some((
            Fop::TxnBegin {
                domain,
                owner,
                locks,
                marks,
            },
            create,
        )) = op.split_txn_create()
        else {
            unreachable!("only TxnCreate comes here")
        };
        if let Fop::Create { parent, name, .. } = &create {
            // A name no create could make takes nothing.
            brick.entry_name(parent, name)?;
        }
        self.txn_begin(state, brick, brick_id, domain, owner, locks, marks)?;
        let started = std::time::Instant::now();
        let created = Box::pin(self.fop(state, brick_id, create, caller, recv)).await;
        // `volume profile` counts the create as a create too.
        self.record(brick_id, "create", started.elapsed(), &created, None, None, false);
        let outcome = match created {
            Ok((Reply::Created { attr, fh }, _)) => Ok((attr, fh)),
            Ok((other, _)) => Err(ErrorReply {
                errno: libc::EIO,
                message: format!("a create answered {other:?}"),
            }),
            Err(e) => Err(ErrorReply {
                errno: e.errno,
                message: e.context,
            }),
        };
        Ok((Reply::TxnCreated(outcome), Bytes::new()))
    }

    /// `TxnEnd`: every mark (the first failure is the answer), then every
    /// lock released, whatever the marks did.
    #[allow(clippy::too_many_arguments)]
    fn txn_end(
        &self,
        state: &ConnState,
        brick: &Brick,
        brick_id: Uuid,
        domain: String,
        owner: u64,
        locks: &[TxnLock],
        marks: &[TxnMark],
    ) -> Outcome {
        let mut first_err = None;
        for mark in marks {
            if let Err(e) = brick.xattrop(&mark.gfid, &mark.deltas) {
                first_err.get_or_insert(e);
            }
        }
        let holder = crate::domain_locks::Holder { conn: state.id, owner };
        for l in locks.iter().rev() {
            if self
                .domain_locks
                .unlock(&txn_lock_target(brick_id, &domain, l), holder)
                .is_err()
            {
                first_err.get_or_insert_with(|| FsError::new(libc::EINVAL, "unlocking a lock not held"));
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        if marks.is_empty() {
            return Ok((Reply::Empty, Bytes::new()));
        }
        // The marked inodes as the change left them: a directory's new
        // times spare the client the GETATTR the kernel sends after every
        // create or unlink in it. One that cannot be read is left out.
        let attrs = marks.iter().filter_map(|m| brick.getattr(&m.gfid).ok()).collect();
        Ok((Reply::MarkedAttrs(attrs), Bytes::new()))
    }

    fn give_back(&self, targets: &[crate::domain_locks::LockTarget], holder: crate::domain_locks::Holder) {
        for t in targets.iter().rev() {
            let _ = self.domain_locks.unlock(t, holder);
        }
    }

    async fn domain_lock(
        &self,
        state: &Arc<ConnState>,
        target: crate::domain_locks::LockTarget,
        owner: u64,
        lock: bool,
        wait: bool,
    ) -> Outcome {
        let holder = crate::domain_locks::Holder { conn: state.id, owner };
        if !lock {
            self.domain_locks
                .unlock(&target, holder)
                .map_err(|e| FsError::new(e, "unlocking a lock not held"))?;
            return Ok((Reply::Empty, Bytes::new()));
        }
        self.domain_locks
            .lock(target.clone(), holder, wait)
            .await
            .map_err(|e| FsError::new(e, "lock held by another client"))?;
        // The connection died while we waited: give the lock back.
        if state.closed.load(Ordering::SeqCst) {
            let _ = self.domain_locks.unlock(&target, holder);
            return Err(FsError::new(libc::ENOTCONN, "connection closed while locking"));
        }
        Ok((Reply::Empty, Bytes::new()))
    }

    /// Under `server.root-squash`, a mount's root acts as the anonymous
    /// user: the brick checks the modes the kernel skipped for root, and
    /// what root creates goes to the anonymous ids. Only fops a mount sent
    /// for a user (`FopAs`) are squashed; node certificates (self-heal,
    /// rebalance) and a mount's own background work are trusted as gluster
    /// trusts its internal clients.
    fn apply_root_squash(
        &self,
        state: &ConnState,
        brick: &Brick,
        op: Fop,
        caller: Option<Creds>,
    ) -> Result<Fop, FsError> {
        let Some(caller) = caller.filter(|c| c.uid == 0 || c.gid == 0) else {
            return Ok(op);
        };
        if !matches!(state.role, Role::Client(_)) {
            return Ok(op);
        }
        let Some(squash) = self.node.root_squash(&brick.id) else {
            return Ok(op);
        };
        if caller.uid == 0 {
            // The kernel let root through: the brick checks instead. (A
            // caller with only gid 0 had its modes checked by the kernel.)
            crate::access::check(brick, &op, &squash.map(caller))?;
        }
        Ok(squash.squash_new_owner(op))
    }

    /// The file a fop is about, for `volume top`'s per-file counters.
    fn subject_of(&self, state: &ConnState, brick: Uuid, op: &Fop) -> Option<Gfid> {
        match op {
            Fop::Open { gfid, .. } | Fop::OpenRead { gfid, .. } | Fop::Readdir { gfid, .. } => Some(*gfid),
            Fop::Read { fh, .. } | Fop::Write { fh, .. } => state.files.gfid_of(&brick, *fh),
            _ => None,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        brick_id: Uuid,
        op: &'static str,
        elapsed: std::time::Duration,
        outcome: &Outcome,
        written: Option<u64>,
        subject: Option<Gfid>,
        first_listing: bool,
    ) {
        let read = match outcome {
            Ok((Reply::Data { len } | Reply::OpenedWhole { len, .. }, _)) => Some(u64::from(*len)),
            _ => None,
        };
        // A create's subject is only known from its reply.
        let subject = subject.or(match outcome {
            Ok((Reply::Created { attr, .. }, _)) => Some(attr.gfid),
            _ => None,
        });
        let sample = crate::stats::Sample {
            op,
            elapsed,
            ok: outcome.is_ok(),
            read,
            written,
            file: subject,
            first_listing,
        };
        self.node.stats.brick(brick_id).record(&sample);
    }

    fn open_file(&self, state: &ConnState, brick: &Brick, fh: u64) -> Result<(Arc<File>, Gfid), FsError> {
        state.files.get(brick, fh)
    }
}

/// The brick lock a transaction names.
fn txn_lock_target(brick: Uuid, domain: &str, lock: &TxnLock) -> crate::domain_locks::LockTarget {
    match lock {
        TxnLock::Inode(gfid) => crate::domain_locks::LockTarget::Inode {
            brick,
            domain: domain.to_string(),
            gfid: gfid.0,
        },
        TxnLock::Entry(parent, name) => crate::domain_locks::LockTarget::Entry {
            brick,
            domain: domain.to_string(),
            parent: parent.0,
            name: name.clone(),
        },
    }
}

/// Metadata operations and small I/O take microseconds on a local disk:
/// running them on the async worker saves two thread hand-offs per request,
/// which dominated the cost of small-file work. Anything that can wait on
/// the disk for long (sync, large transfers, allocation) goes to the
/// blocking pool so it cannot stall other requests.
fn runs_inline(op: &Fop) -> bool {
    const SMALL_IO: u32 = 64 * 1024;
    match op {
        Fop::Read { size, .. } => *size <= SMALL_IO,
        Fop::Checksum { .. } => false,
        Fop::Write { len, .. } => *len <= SMALL_IO,
        Fop::Fsync { .. } | Fop::Fsyncdir { .. } | Fop::Fallocate { .. } | Fop::CopyFileRange { .. } => false,
        // Truncation can free a large file's blocks.
        Fop::SetAttr { set, .. } => set.size.is_none(),
        // Listings stat every entry.
        Fop::Readdir { .. } => false,
        _ => true,
    }
}

fn kind_of(t: LockType) -> LockKind {
    match t {
        LockType::Read => LockKind::Read,
        LockType::Write => LockKind::Write,
        LockType::Unlock => LockKind::Unlock,
    }
}

/// What a replicate lock fop (`InodeLk`, `EntryLk`) locks.
fn lock_target(brick: Uuid, op: &Fop) -> Option<crate::domain_locks::LockTarget> {
    let (domain, lock) = match op {
        Fop::InodeLk { gfid, domain, .. } => (domain, TxnLock::Inode(*gfid)),
        Fop::EntryLk {
            parent, name, domain, ..
        } => (domain, TxnLock::Entry(*parent, name.clone())),
        _ => return None,
    };
    Some(txn_lock_target(brick, domain, &lock))
}

fn lock_owner(op: &Fop) -> u64 {
    match op {
        Fop::InodeLk { owner, .. } | Fop::EntryLk { owner, .. } => *owner,
        _ => 0,
    }
}

/// The brick and file operation of a request, whether it names its
/// caller (`FopAs`, a mount's requests) or not.
fn fop_of(req: &Request) -> Option<(&Uuid, &Fop)> {
    match req {
        Request::Fop { brick, op } | Request::FopAs { brick, op, .. } => Some((brick, op)),
        _ => None,
    }
}

/// The target of a request that takes a replicate lock and may wait for it.
fn waited_lock(req: &Request) -> Option<crate::domain_locks::LockTarget> {
    match fop_of(req)? {
        (
            brick,
            op @ (Fop::InodeLk {
                lock: true, wait: true, ..
            }
            | Fop::EntryLk {
                lock: true, wait: true, ..
            }),
        ) => lock_target(*brick, op),
        _ => None,
    }
}

/// Ends reading a request's stream before its reply goes out. The
/// request's FIN normally comes with its last bytes: taken here, the
/// stream closes quietly. Dropped unread, quinn tells the client with a
/// STOP_SENDING frame, which went out in a packet of its own after the
/// reply (about a fifth of a node's packets under small-file load).
/// Never waits: a client that has not finished its stream gets the
/// STOP_SENDING, in the reply's packet.
fn done_reading(mut recv: quinn::RecvStream) {
    use futures::FutureExt;
    let _ = recv.read_chunk(1, true).now_or_never();
}
