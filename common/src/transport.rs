//! QUIC endpoints and the request/response client shared by the mount and the
//! CLI. One connection per (client, node), one bidirectional stream per
//! request.

use crate::proto::{ErrorReply, Reply, Request, Response, PROTOCOL_VERSION};
use crate::tls::{self, Credentials};
use crate::wire;
use anyhow::Context;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long a silent peer is considered alive: gluster's
/// `network.ping-timeout`, but 10 s rather than its 42. A killed node
/// sends no reset over UDP (unlike TCP's RST), so this is how long a dead
/// node stalls the requests already sent to it. Keep-alives every 2 s are
/// answered by quinn's endpoint driver, not by request workers, so a busy
/// node does not miss them the way a loaded glusterfsd misses pings.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
const KEEP_ALIVE: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed dial, calls fail at once and a background task re-dials
/// the node this often: a down node costs no request a dial, and one that
/// returns is used again within about a second.
const REDIAL_AFTER: Duration = Duration::from_secs(1);
/// A re-dial of a node known to be down gives up sooner than a first dial:
/// a live node answers a QUIC handshake in milliseconds.
const REDIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// After a call timed out, how long a probe of the node may take before
/// calls to it fail at once (see `LinkState::suspect`).
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Socket buffers: the knob that mattered on loopback (losses fell to zero).
const SOCKET_BUFFER: usize = 4 << 20;

fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    // The cap on in-flight requests per connection; beyond it open_bi waits,
    // which is the backpressure we want.
    t.max_concurrent_bidi_streams(1024u32.into());
    t.max_concurrent_uni_streams(64u32.into());
    t.stream_receive_window((8u32 << 20).into());
    t.send_window(64 << 20);
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.max_idle_timeout(Some(IDLE_TIMEOUT.try_into().expect("idle timeout fits")));
    t
}

fn bind_udp(addr: SocketAddr) -> anyhow::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false).ok();
    }
    // Best effort: the kernel caps these at net.core.[rw]mem_max.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket
        .bind(&addr.into())
        .with_context(|| format!("binding UDP {addr}"))?;
    Ok(socket.into())
}

/// A node's endpoint: serves requests and can dial other nodes.
/// `reset_secret` must survive restarts: it keys QUIC's stateless resets, so
/// a restarted node can tell its old peers at once that their connection is
/// gone (with a fresh key they would wait for the idle timeout).
pub fn server_endpoint(addr: SocketAddr, creds: &Credentials, reset_secret: &[u8]) -> anyhow::Result<quinn::Endpoint> {
    let server = server_config(creds)?;
    let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, reset_secret);
    let mut config = quinn::EndpointConfig::new(Arc::new(reset_key));
    // Connection ids are signed with a key; it must persist too, or the
    // restarted node drops old ids as forged instead of resetting them.
    let cid_key = reset_secret.iter().take(8).fold(0u64, |k, &b| (k << 8) | u64::from(b));
    config.cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key)));
    let mut endpoint = quinn::Endpoint::new(config, Some(server), bind_udp(addr)?, Arc::new(quinn::TokioRuntime))?;
    endpoint.set_default_client_config(client_config(creds)?);
    Ok(endpoint)
}

/// What a connection may hold before the server knows who the peer is:
/// a peer without a certificate may only say hello or ask to join (a few
/// KiB), so it gets a few streams and 1 MiB in flight in all. The server
/// raises both for pool members and mounts once it has checked their
/// certificate ([`open_up_verified`]); flow-control credit cannot be taken
/// back, so the small grant must come first.
pub const UNVERIFIED_STREAMS: u32 = 8;
pub const UNVERIFIED_RECEIVE_WINDOW: u32 = 1 << 20;
/// In-flight requests and bytes a pool member's or mount's connection may
/// hold on a server: enough for a mount's pipelined 1 MiB writes, while
/// bounding what one connection can make the server buffer.
pub const VERIFIED_STREAMS: u32 = 1024;
pub const VERIFIED_RECEIVE_WINDOW: u32 = 128 << 20;

/// The server side of a node's endpoint; swapped in when the node joins a
/// pool and takes its CA.
pub fn server_config(creds: &Credentials) -> anyhow::Result<quinn::ServerConfig> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls::server_crypto(creds)?)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = transport_config();
    transport.max_concurrent_bidi_streams(UNVERIFIED_STREAMS.into());
    transport.max_concurrent_uni_streams(0u32.into());
    transport.receive_window(UNVERIFIED_RECEIVE_WINDOW.into());
    server.transport_config(Arc::new(transport));
    Ok(server)
}

/// Gives a connection whose certificate checked out the full limits.
pub fn open_up_verified(conn: &quinn::Connection) {
    conn.set_max_concurrent_bi_streams(VERIFIED_STREAMS.into());
    conn.set_receive_window(VERIFIED_RECEIVE_WINDOW.into());
}

/// Dialling with these credentials.
pub fn client_config(creds: &Credentials) -> anyhow::Result<quinn::ClientConfig> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls::client_crypto(creds)?)?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport_config()));
    Ok(cfg)
}

/// One request to a node that is not (yet) in our pool, over an anonymous
/// connection (see [`tls::join_client_crypto`]).
pub async fn call_unverified(
    endpoint: &quinn::Endpoint,
    node: &str,
    req: &Request,
    timeout: Duration,
) -> Result<Reply, RpcError> {
    let work = async {
        let addr = crate::addr::resolve_node(node).map_err(|e| RpcError::Unreachable(e.to_string()))?;
        let crypto = tls::join_client_crypto().map_err(|e| RpcError::Protocol(format!("{e:#}")))?;
        let crypto =
            quinn::crypto::rustls::QuicClientConfig::try_from(crypto).map_err(|e| RpcError::Protocol(e.to_string()))?;
        let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
        cfg.transport_config(Arc::new(transport_config()));
        let conn = endpoint
            .connect_with(cfg, addr, tls::NODE_SERVER_NAME)
            .map_err(|e| RpcError::Unreachable(format!("{node}: {e}")))?
            .await
            .map_err(|e| RpcError::Unreachable(format!("cannot connect to {node}: {e}")))?;
        let hello = Request::Hello {
            version: PROTOCOL_VERSION,
        };
        exchange(&conn, &hello, Bytes::new()).await?;
        let reply = exchange(&conn, req, Bytes::new()).await.map(|(r, _)| r);
        conn.close(0u32.into(), b"done");
        reply
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| RpcError::Timeout(node.to_string()))?
}

/// A client-only endpoint on an ephemeral port (dual-stack).
pub fn client_endpoint(creds: &Credentials) -> anyhow::Result<quinn::Endpoint> {
    let any: SocketAddr = "[::]:0".parse().expect("literal");
    let socket = bind_udp(any).or_else(|_| bind_udp("0.0.0.0:0".parse().expect("literal")))?;
    let mut endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        Arc::new(quinn::TokioRuntime),
    )?;
    endpoint.set_default_client_config(client_config(creds)?);
    Ok(endpoint)
}

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    /// The node answered with an error.
    #[error("{message}")]
    Remote { errno: i32, message: String },
    /// The node could not be reached or the connection died.
    #[error("{0}")]
    Unreachable(String),
    /// No answer in time.
    #[error("no answer from {0} in time")]
    Timeout(String),
    /// The peer spoke something we cannot understand.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl RpcError {
    /// The errno an application sees for this failure.
    pub fn errno(&self) -> i32 {
        match self {
            RpcError::Remote { errno, .. } => *errno,
            RpcError::Unreachable(_) => libc::ENOTCONN,
            RpcError::Timeout(_) => libc::EIO,
            RpcError::Protocol(_) => libc::EIO,
        }
    }
}

impl From<wire::WireError> for RpcError {
    fn from(e: wire::WireError) -> Self {
        match e {
            wire::WireError::Stream(s) | wire::WireError::Truncated(s) => RpcError::Unreachable(s),
            other => RpcError::Protocol(other.to_string()),
        }
    }
}

/// A reconnecting connection to one node.
pub struct NodeClient {
    target: Arc<Target>,
    state: Arc<LinkState>,
    call_timeout: Duration,
}

/// Where and how to dial.
struct Target {
    endpoint: quinn::Endpoint,
    /// Dial with these credentials instead of the endpoint's default.
    config: Option<quinn::ClientConfig>,
    node: String,
}

/// The connection and what is known of the node's reachability; shared
/// with background re-dials.
struct LinkState {
    conn: tokio::sync::Mutex<Option<quinn::Connection>>,
    /// Bumped on every new connection: server-side state (open files,
    /// locks) of an older epoch is gone.
    epoch: std::sync::atomic::AtomicU64,
    /// When the last dial failed, and why.
    dial_failed: std::sync::Mutex<Option<(std::time::Instant, RpcError)>>,
    /// A background re-dial is under way.
    redialing: std::sync::atomic::AtomicBool,
    /// A call timed out: the node may be frozen, its connection alive
    /// until the idle timeout. Until a probe answers, each call probes
    /// first (one probe at a time, PROBE_TIMEOUT) instead of waiting its
    /// whole call timeout on a node that answers nothing (the chaos
    /// checker's SIGSTOP cost every request its timeout).
    suspect: std::sync::atomic::AtomicBool,
    /// Serialises probes; holds when the last one failed.
    probe: tokio::sync::Mutex<Option<std::time::Instant>>,
}

impl LinkState {
    fn install(&self, slot: &mut Option<quinn::Connection>, conn: quinn::Connection) {
        *self.dial_failed.lock().expect("dial state poisoned") = None;
        // A handshake just completed: the node answers.
        self.suspect.store(false, std::sync::atomic::Ordering::SeqCst);
        *slot = Some(conn);
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    fn failed(&self, e: &RpcError) {
        *self.dial_failed.lock().expect("dial state poisoned") = Some((std::time::Instant::now(), e.clone()));
    }
}

impl NodeClient {
    pub fn new(endpoint: quinn::Endpoint, node: String, call_timeout: Duration) -> NodeClient {
        NodeClient {
            target: Arc::new(Target {
                endpoint,
                config: None,
                node,
            }),
            state: Arc::new(LinkState {
                conn: tokio::sync::Mutex::new(None),
                epoch: std::sync::atomic::AtomicU64::new(0),
                dial_failed: std::sync::Mutex::new(None),
                redialing: std::sync::atomic::AtomicBool::new(false),
                suspect: std::sync::atomic::AtomicBool::new(false),
                probe: tokio::sync::Mutex::new(None),
            }),
            call_timeout,
        }
    }

    /// A client that dials with `config` (a node whose credentials can
    /// change while it runs).
    pub fn with_config(self, config: quinn::ClientConfig) -> NodeClient {
        NodeClient {
            target: Arc::new(Target {
                endpoint: self.target.endpoint.clone(),
                config: Some(config),
                node: self.target.node.clone(),
            }),
            ..self
        }
    }

    /// The current connection's epoch (0 before the first connection).
    pub fn epoch(&self) -> u64 {
        self.state.epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Connects now (if not connected) and returns the connection epoch.
    pub async fn ensure_connected(&self) -> Result<u64, RpcError> {
        self.connection().await?;
        Ok(self.epoch())
    }

    pub fn node(&self) -> &str {
        &self.target.node
    }

    /// Whether a connection to the node is open now, without dialling or
    /// waiting (for metrics). While the connection slot is busy, the last
    /// dial's outcome answers.
    pub fn is_connected(&self) -> bool {
        match self.state.conn.try_lock() {
            Ok(slot) => slot.as_ref().is_some_and(|c| c.close_reason().is_none()),
            Err(_) => self.epoch() > 0 && self.state.dial_failed.lock().expect("dial state poisoned").is_none(),
        }
    }

    /// The live connection, dialling (and saying hello) if there is none.
    /// A node known to be down is re-dialled in the background, at most
    /// every REDIAL_AFTER, while requests fail at once: no request waits
    /// on a dead node's dial, and a node that comes back is used within a
    /// second.
    async fn connection(&self) -> Result<quinn::Connection, RpcError> {
        let known_down = self.state.dial_failed.lock().expect("dial state poisoned").clone();
        if let Some((_, err)) = known_down {
            // A successful re-dial clears `dial_failed`, so this node is
            // still down.
            self.keep_redialing();
            return Err(err);
        }
        let mut slot = self.state.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
        }
        // A connection that just died: its node is likely down, so give
        // up sooner than on a first dial.
        let limit = if slot.is_some() {
            REDIAL_TIMEOUT
        } else {
            CONNECT_TIMEOUT
        };
        let dialled = tokio::time::timeout(limit, self.target.dial())
            .await
            .map_err(|_| RpcError::Unreachable(format!("connecting to {} timed out", self.target.node)))
            .and_then(|r| r);
        match dialled {
            Ok(conn) => {
                self.state.install(&mut slot, conn.clone());
                Ok(conn)
            }
            Err(e) => {
                self.state.failed(&e);
                drop(slot);
                self.keep_redialing();
                Err(e)
            }
        }
    }

    /// Re-dials a node that is down every REDIAL_AFTER in the background
    /// until it answers (gluster's reconnect timer), so a node that returns
    /// is used again within about a second. Stops when this client is
    /// dropped.
    fn keep_redialing(&self) {
        if self.state.redialing.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let target = self.target.clone();
        let weak = Arc::downgrade(&self.state);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REDIAL_AFTER).await;
                let Some(state) = weak.upgrade() else { return };
                let dialled = tokio::time::timeout(REDIAL_TIMEOUT, target.dial())
                    .await
                    .map_err(|_| RpcError::Unreachable(format!("connecting to {} timed out", target.node)))
                    .and_then(|r| r);
                match dialled {
                    Ok(conn) => {
                        let mut slot = state.conn.lock().await;
                        state.install(&mut slot, conn);
                        state.redialing.store(false, std::sync::atomic::Ordering::SeqCst);
                        return;
                    }
                    Err(e) => state.failed(&e),
                }
            }
        });
    }
}

impl Target {
    async fn dial(&self) -> Result<quinn::Connection, RpcError> {
        let addr = crate::addr::resolve_node(&self.node).map_err(|e| RpcError::Unreachable(e.to_string()))?;
        let connecting = match &self.config {
            Some(cfg) => self.endpoint.connect_with(cfg.clone(), addr, tls::NODE_SERVER_NAME),
            None => self.endpoint.connect(addr, tls::NODE_SERVER_NAME),
        };
        let conn = connecting
            .map_err(|e| RpcError::Unreachable(format!("{}: {e}", self.node)))?
            .await
            .map_err(|e| RpcError::Unreachable(format!("cannot connect to {}: {e}", self.node)))?;
        let hello = Request::Hello {
            version: PROTOCOL_VERSION,
        };
        match exchange(&conn, &hello, Bytes::new()).await? {
            (Reply::Hello { version, .. }, _) if version == PROTOCOL_VERSION => Ok(conn),
            (Reply::Hello { version, .. }, _) => Err(RpcError::Protocol(format!(
                "{} speaks protocol version {version}, we speak {PROTOCOL_VERSION}",
                self.node
            ))),
            (other, _) => Err(RpcError::Protocol(format!("unexpected hello reply {other:?}"))),
        }
    }
}

impl NodeClient {
    /// Sends one request with its payload; returns the reply and its payload.
    pub async fn call(&self, req: &Request, payload: Bytes) -> Result<(Reply, Bytes), RpcError> {
        self.call_with_timeout(req, payload, Some(self.call_timeout)).await
    }

    /// As [`call`](Self::call), with a chosen timeout (`None`: wait as long as
    /// the connection lives, for blocking lock requests).
    pub async fn call_with_timeout(
        &self,
        req: &Request,
        payload: Bytes,
        timeout: Option<Duration>,
    ) -> Result<(Reply, Bytes), RpcError> {
        // The timeout covers dialling too: a dead node costs the caller its
        // timeout, not the longer connect timeout.
        let fut = async {
            let conn = self.connection().await?;
            exchange(&conn, req, payload).await
        };
        match timeout {
            Some(t) => {
                // What gives back server state is always sent: skipped,
                // a frozen node would hold it once it resumes (a lock kept
                // every later heal and writer of a file waiting).
                if self.state.suspect.load(std::sync::atomic::Ordering::SeqCst) && !releases(req) {
                    self.probe().await?;
                }
                let r = tokio::time::timeout(t, fut).await;
                if r.is_err() {
                    self.state.suspect.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                r.map_err(|_| RpcError::Timeout(self.target.node.clone()))?
            }
            None => fut.await,
        }
    }

    /// Asks a suspect node for a hello (the server answers it without
    /// touching a disk): Ok and no longer suspect if it answers within
    /// PROBE_TIMEOUT. Calls arriving while a probe runs wait for it; for
    /// PROBE_TIMEOUT after a failed one they fail at once, then the next
    /// call probes again.
    async fn probe(&self) -> Result<(), RpcError> {
        use std::sync::atomic::Ordering::SeqCst;
        let mut last_failed = self.state.probe.lock().await;
        if !self.state.suspect.load(SeqCst) {
            return Ok(());
        }
        let silent = || RpcError::Unreachable(format!("{} is not answering", self.target.node));
        if last_failed.is_some_and(|t| t.elapsed() < PROBE_TIMEOUT) {
            return Err(silent());
        }
        let hello = Request::Hello {
            version: PROTOCOL_VERSION,
        };
        let answered = tokio::time::timeout(PROBE_TIMEOUT, async {
            let conn = self.connection().await?;
            exchange(&conn, &hello, Bytes::new()).await
        })
        .await;
        match answered {
            Ok(Ok(_)) => {
                self.state.suspect.store(false, SeqCst);
                *last_failed = None;
                Ok(())
            }
            // Refused or unreachable: the call would meet the same.
            Ok(Err(e)) => Err(e),
            Err(_) => {
                *last_failed = Some(std::time::Instant::now());
                tracing::debug!(node = %self.target.node, "a node that let a call time out does not answer a probe either");
                Err(silent())
            }
        }
    }
}

fn releases(req: &Request) -> bool {
    match req {
        Request::Fop { op, .. } | Request::FopAs { op, .. } => op.releases(),
        _ => false,
    }
}

/// One request/response exchange on a new stream of `conn`.
pub async fn exchange(conn: &quinn::Connection, req: &Request, payload: Bytes) -> Result<(Reply, Bytes), RpcError> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| RpcError::Unreachable(e.to_string()))?;
    let mut chunks = if payload.is_empty() { vec![] } else { vec![payload] };
    wire::send_message(&mut send, req, &mut chunks).await?;
    let resp: Response = wire::recv_header(&mut recv).await?;
    let data = match resp.payload_len() {
        0 => Bytes::new(),
        n => wire::recv_payload(&mut recv, n).await?,
    };
    // Read on to the end of the stream: a stream dropped before its end
    // tells the server we stopped listening (STOP_SENDING), which it takes
    // as "gave up waiting" for a lock and gives the lock back. Nothing
    // follows a reply, so this only waits for the FIN, which usually
    // comes with the reply's last bytes.
    let _ = recv.read_to_end(0).await;
    match resp {
        Response::Ok(reply) => Ok((reply, data)),
        Response::Err(ErrorReply { errno, message }) => Err(RpcError::Remote { errno, message }),
    }
}
