//! Hostile peers and bad input: malformed frames, idle streams, foreign
//! certificates, client certificates asking for management, and CLI misuse.
//! The daemon must refuse cleanly, keep serving everyone else, and change
//! nothing.

use bytes::Bytes;
use cairn_common::proto::{AdminReply, AdminRequest, Reply, Request, Response, PROTOCOL_VERSION};
use cairn_common::tls::{self, Credentials, Role};
use cairn_common::transport::{self, RpcError};
use cairn_common::{state, wire};
use cairn_tests::{pattern, read_file, write_file, Cluster};
use rand::{Rng, SeedableRng};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

const STEP: Duration = Duration::from_secs(15);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {STEP:?}"))
}

fn addr_of(c: &Cluster) -> SocketAddr {
    c.daemon.addr.parse().expect("daemon address")
}

async fn connect(ep: &quinn::Endpoint, addr: SocketAddr) -> Result<quinn::Connection, String> {
    ep.connect(addr, tls::NODE_SERVER_NAME)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())
}

/// A well-formed Hello, then `volume info`, on `conn`.
async fn hello_and_info(conn: &quinn::Connection) -> Result<Vec<String>, String> {
    let hello = Request::Hello {
        version: PROTOCOL_VERSION,
    };
    match transport::exchange(conn, &hello, Bytes::new()).await {
        Ok((Reply::Hello { version, .. }, _)) if version == PROTOCOL_VERSION => {}
        other => return Err(format!("hello: {other:?}")),
    }
    let info = Request::Admin(AdminRequest::VolumeInfo { name: None });
    match transport::exchange(conn, &info, Bytes::new()).await {
        Ok((Reply::Admin(AdminReply::Volumes(v)), _)) => Ok(v.into_iter().map(|s| s.name).collect()),
        other => Err(format!("volume info: {other:?}")),
    }
}

/// The daemon still answers on `conn` and on a brand new connection, and
/// its process is alive.
async fn assert_healthy(c: &mut Cluster, ep: &quinn::Endpoint, conn: &quinn::Connection, after: &str) {
    let vols = bounded(after, hello_and_info(conn))
        .await
        .unwrap_or_else(|e| panic!("after {after}: the same connection failed: {e}"));
    assert_eq!(vols, vec!["vol".to_string()], "after {after}");
    let fresh = bounded(after, connect(ep, addr_of(c)))
        .await
        .unwrap_or_else(|e| panic!("after {after}: cannot connect anew: {e}"));
    let vols = bounded(after, hello_and_info(&fresh))
        .await
        .unwrap_or_else(|e| panic!("after {after}: a new connection failed: {e}"));
    assert_eq!(vols, vec!["vol".to_string()], "after {after}");
    fresh.close(0u32.into(), b"done");
    assert!(c.daemon.is_alive(), "cairnd died after {after}");
}

/// Sends raw bytes as a request on a new stream (finishing it) and reads the
/// framed reply.
async fn raw_request(conn: &quinn::Connection, bytes: &[u8]) -> Result<Response, String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(bytes).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    wire::recv_header::<Response>(&mut recv)
        .await
        .map_err(|e| e.to_string())
}

fn node_endpoint(c: &Cluster) -> quinn::Endpoint {
    let creds = state::node_credentials(&c.daemon.state_dir).expect("node credentials");
    transport::client_endpoint(&creds).expect("client endpoint")
}

#[test]
fn malformed_frames_are_refused_and_the_daemon_keeps_serving() {
    let mut c = Cluster::unmounted();
    let rt = runtime();
    rt.block_on(async {
        let ep = node_endpoint(&c);
        let conn = bounded("connect", connect(&ep, addr_of(&c))).await.expect("connect");
        assert_healthy(&mut c, &ep, &conn, "start").await;

        let mut rng = rand::rngs::StdRng::seed_from_u64(0xbad);
        let mut garbage = vec![0u8; 1000];
        rng.fill(&mut garbage[..]);
        // Keep the random prefix small so it is refused as a bad header,
        // not as an oversized one.
        garbage[..4].copy_from_slice(&200u32.to_le_bytes());
        let mut huge_prefix = vec![0xff, 0xff, 0xff, 0xff];
        huge_prefix.extend_from_slice(&garbage[..100]);
        let info = Request::Admin(AdminRequest::VolumeInfo {
            name: Some("a-long-volume-name-to-cut".into()),
        });
        let frame = wire::encode_header(&info).expect("encode");
        // A length prefix that promises more than the stream carries.
        let short_stream = frame[..frame.len() - 5].to_vec();
        // A consistent prefix around a postcard body cut short.
        let body = &frame[4..frame.len() - 5];
        let mut cut_body = (body.len() as u32).to_le_bytes().to_vec();
        cut_body.extend_from_slice(body);
        // At the limit: a quarter MiB of garbage that must not decode.
        let limit = cairn_common::proto::MAX_HEADER_LEN;
        let mut at_limit = (limit as u32).to_le_bytes().to_vec();
        at_limit.extend(std::iter::repeat_n(0xffu8, limit));

        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("random garbage", garbage.clone()),
            ("a 0xFFFFFFFF length prefix", huge_prefix),
            ("a stream shorter than its length prefix", short_stream),
            ("a truncated postcard header", cut_body),
            ("an empty stream", Vec::new()),
            ("two bytes of a length prefix", vec![4, 0]),
            ("a maximum-length garbage header", at_limit),
        ];
        for (what, bytes) in cases {
            match bounded(what, raw_request(&conn, &bytes)).await {
                Ok(Response::Err(e)) => assert_eq!(
                    e.errno,
                    libc::EPROTO,
                    "{what}: refused with errno {} ({})",
                    e.errno,
                    e.message
                ),
                Ok(Response::Ok(r)) => panic!("{what}: accepted as {r:?}"),
                Err(e) => panic!("{what}: no error reply, the stream failed: {e}"),
            }
            assert_healthy(&mut c, &ep, &conn, what).await;
        }

        // A stream reset mid-header, and a connection dropped mid-request.
        let (mut send, _recv) = conn.open_bi().await.expect("open_bi");
        send.write_all(&[9, 0, 0]).await.expect("write");
        send.reset(7u32.into()).expect("reset");
        assert_healthy(&mut c, &ep, &conn, "a reset stream").await;
        let doomed = connect(&ep, addr_of(&c)).await.expect("connect");
        let (mut send, _recv) = doomed.open_bi().await.expect("open_bi");
        send.write_all(&frame[..6]).await.expect("write");
        doomed.close(99u32.into(), b"gone");
        assert_healthy(&mut c, &ep, &conn, "a connection closed mid-request").await;
        // A request that is not the first Hello on a fresh connection.
        let rude = connect(&ep, addr_of(&c)).await.expect("connect");
        let info = Request::Admin(AdminRequest::VolumeInfo { name: None });
        let r = bounded("request before hello", transport::exchange(&rude, &info, Bytes::new())).await;
        assert!(
            matches!(
                &r,
                Ok((Reply::Admin(AdminReply::Volumes(_)), _)) | Err(RpcError::Remote { .. })
            ),
            "a request before Hello must get an answer, got {r:?}"
        );
        assert_healthy(&mut c, &ep, &conn, "a request before hello").await;
        // A Hello with an unknown protocol version is refused.
        let bad = Request::Hello { version: 9999 };
        match bounded("hello v9999", transport::exchange(&conn, &bad, Bytes::new())).await {
            Err(RpcError::Remote { errno, .. }) => assert_eq!(errno, libc::EPROTO),
            other => panic!("hello with version 9999: {other:?}"),
        }
        assert_healthy(&mut c, &ep, &conn, "a bad protocol version").await;
        ep.close(0u32.into(), b"done");
    });
}

#[test]
fn idle_streams_do_not_block_other_requests() {
    let mut c = Cluster::new();
    let rt = runtime();
    let mnt = c.mnt().to_path_buf();
    rt.block_on(async {
        let ep = node_endpoint(&c);
        let conn = connect(&ep, addr_of(&c)).await.expect("connect");
        bounded("hello", hello_and_info(&conn)).await.expect("hello");
        // Streams that started a header and went silent, on this connection
        // and on idle extra connections (no waiting for the server's own
        // header timeout).
        let mut idle = Vec::new();
        for i in 0..50u8 {
            let (mut send, recv) = conn.open_bi().await.expect("open_bi");
            send.write_all(&[i % 4 + 1]).await.expect("write one byte");
            idle.push((send, recv));
        }
        let (mut send, recv) = conn.open_bi().await.expect("open_bi");
        send.write_all(&[100, 0, 0, 0, 1, 2, 3])
            .await
            .expect("write a partial header");
        idle.push((send, recv));
        let mut idle_conns = Vec::new();
        for _ in 0..10 {
            let extra = connect(&ep, addr_of(&c)).await.expect("connect");
            let (mut send, recv) = extra.open_bi().await.expect("open_bi");
            send.write_all(&[1]).await.expect("write");
            idle_conns.push((extra, send, recv));
        }
        for round in 0..10 {
            assert_healthy(&mut c, &ep, &conn, &format!("idle streams (round {round})")).await;
        }
        // The mount (another client) works meanwhile.
        let data = pattern(7, 300_000);
        let mnt2 = mnt.clone();
        let data2 = data.clone();
        let io = tokio::task::spawn_blocking(move || {
            write_file(&mnt2.join("during-idle"), &data2);
            read_file(&mnt2.join("during-idle"))
        });
        let back = bounded("mount I/O during idle streams", io).await.expect("io task");
        assert!(back == data, "mount I/O while streams idle");
        // The idle streams are still pending: the server has not answered them.
        let (_, recv) = idle.last_mut().expect("an idle stream");
        let mut buf = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_millis(200), recv.read(&mut buf)).await;
        assert!(r.is_err(), "the idle stream got an answer already: {r:?}");
        drop(idle);
        drop(idle_conns);
        ep.close(0u32.into(), b"done");
    });
    assert!(c.daemon.is_alive(), "cairnd died");
}

fn foreign_attempt(c: &Cluster, creds: Credentials) -> Result<Vec<String>, String> {
    let rt = runtime();
    rt.block_on(async {
        let ep = transport::client_endpoint(&creds).map_err(|e| e.to_string())?;
        let r = tokio::time::timeout(STEP, async {
            let conn = connect(&ep, addr_of(c)).await?;
            hello_and_info(&conn).await
        })
        .await
        .map_err(|_| "timed out".to_string())
        .and_then(|r| r);
        ep.close(0u32.into(), b"done");
        r
    })
}

#[test]
fn certificates_from_another_ca_are_refused() {
    let mut c = Cluster::unmounted();
    let pool_ca = std::fs::read_to_string(state::ca_cert(&c.daemon.state_dir)).expect("pool CA");
    let (evil_ca, evil_key) = tls::create_ca("evil").expect("foreign CA");
    for role in [Role::Node("evil".into()), Role::Client("evil".into())] {
        let (cert, key) = tls::issue(&evil_ca, &evil_key, &role).expect("issue");
        // Trusting the real pool CA, presenting a foreign certificate.
        let r = foreign_attempt(
            &c,
            Credentials {
                ca_pem: pool_ca.clone(),
                cert_pem: cert.clone(),
                key_pem: key.clone(),
            },
        );
        match r {
            Err(e) => assert_ne!(e, "timed out", "{role:?}: refused only by timing out"),
            Ok(v) => panic!("a {role:?} certificate of a foreign CA was served: {v:?}"),
        }
        // Trusting only the foreign CA: the node's certificate is refused.
        let r = foreign_attempt(
            &c,
            Credentials {
                ca_pem: evil_ca.clone(),
                cert_pem: cert,
                key_pem: key,
            },
        );
        assert!(r.is_err(), "a client of a foreign CA accepted the node: {r:?}");
    }
    // The legitimate node credentials still work.
    let good = state::node_credentials(&c.daemon.state_dir).expect("creds");
    assert_eq!(foreign_attempt(&c, good), Ok(vec!["vol".to_string()]));
    assert!(c.daemon.is_alive());
}

#[test]
fn client_certificates_cannot_manage_the_pool() {
    let mut c = Cluster::unmounted();
    let before = c.daemon.info_json();
    let creds = state::client_credentials(&c.daemon.state_dir).expect("client credentials");
    let rt = runtime();
    rt.block_on(async {
        let ep = transport::client_endpoint(&creds).expect("endpoint");
        let conn = bounded("connect", connect(&ep, addr_of(&c))).await.expect("connect");
        let hello = Request::Hello {
            version: PROTOCOL_VERSION,
        };
        bounded("hello", transport::exchange(&conn, &hello, Bytes::new()))
            .await
            .expect("a client may say hello");
        let spec = Request::Admin(AdminRequest::GetVolume { name: "vol".into() });
        match bounded("get volume", transport::exchange(&conn, &spec, Bytes::new())).await {
            Ok((Reply::Admin(AdminReply::Spec(s)), _)) => assert_eq!(s.name, "vol"),
            other => panic!("a client may fetch a volume spec: {other:?}"),
        }
        let brick = format!("{}:{}", c.daemon.addr, c.dir.join("evil").display());
        let forbidden = [
            AdminRequest::VolumeInfo { name: None },
            AdminRequest::VolumeStop {
                name: "vol".into(),
                force: true,
            },
            AdminRequest::VolumeDelete { name: "vol".into() },
            AdminRequest::VolumeCreate {
                name: "evil".into(),
                bricks: vec![brick],
                force: true,
                replica: 1,
                arbiter: false,
            },
        ];
        for req in forbidden {
            let r = bounded(
                "admin",
                transport::exchange(&conn, &Request::Admin(req.clone()), Bytes::new()),
            )
            .await;
            match r {
                Err(RpcError::Remote { errno, .. }) => {
                    assert_eq!(errno, libc::EACCES, "{req:?} as a client")
                }
                other => panic!("{req:?} as a client: {other:?}"),
            }
        }
        ep.close(0u32.into(), b"done");
    });
    assert_eq!(c.daemon.info_json(), before, "nothing changed");
    assert!(!c.dir.join("evil").exists(), "no brick directory was made");
    assert!(c.daemon.is_alive());
}

/// Runs the CLI; returns what is wrong with its refusal, if anything.
fn refusal_problem(c: &Cluster, args: &[&str]) -> Option<String> {
    let o = c.daemon.cli(args);
    let err = o.stderr.trim_end();
    if o.ok() {
        Some(format!("cairn {args:?} succeeded: {}", o.stdout))
    } else if err.is_empty() {
        Some(format!("cairn {args:?}: nothing on stderr"))
    } else if err.lines().count() != 1 {
        Some(format!(
            "cairn {args:?}: stderr must be one line, got {} lines:\n{err}",
            err.lines().count()
        ))
    } else {
        None
    }
}

#[test]
fn cli_rejects_bad_arguments_and_changes_nothing() {
    let c = Cluster::unmounted();
    let before = c.daemon.info_json();
    let addr = c.daemon.addr.clone();
    let new_brick = c.dir.join("newbrick");
    let nb = format!("{addr}:{}", new_brick.display());
    let inside = format!("{addr}:{}", c.brick.join("inside").display());
    let rel = format!("{addr}:relative/brick");
    let other = format!("127.0.0.1:1:{}", new_brick.display());
    let root = format!("{addr}:/");
    let cases: Vec<Vec<&str>> = vec![
        vec!["volume", "create", "newvol"],
        vec!["volume", "create", "newvol", &rel, "force"],
        vec!["volume", "create", "a/b", &nb, "force"],
        vec!["volume", "create", "", &nb, "force"],
        vec!["volume", "create", "vol", &nb, "force"],
        vec!["volume", "create", "newvol", &inside, "force"],
        vec!["volume", "create", "newvol", &other, "force"],
        vec!["volume", "create", "newvol", &root, "force"],
        vec!["volume", "create", "newvol", "not-a-brick", "force"],
        vec!["volume", "start", "nosuchvol"],
        vec!["volume", "start", "vol"],
        vec!["volume", "start", "vol", "forse"],
        vec!["volume", "stop", "nosuchvol"],
        vec!["volume", "delete", "nosuchvol"],
        vec!["volume", "delete", "vol"],
        vec!["volume", "info", "nosuchvol"],
        vec!["volume", "status", "nosuchvol"],
        vec!["volume", "frobnicate"],
    ];
    // Every case is tried, then all problems are reported together.
    let mut problems = Vec::new();
    for args in &cases {
        problems.extend(refusal_problem(&c, args));
        if c.daemon.info_json() != before {
            problems.push(format!("cairn {args:?} changed the pool"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    for p in [&new_brick, &c.brick.join("inside")] {
        assert!(!p.exists(), "{} was created", p.display());
    }
    assert!(
        !std::path::Path::new("/relative").exists() && !c.dir.join("relative").exists(),
        "no relative brick dir was created"
    );
    // The volume still works as before.
    let status = c.daemon.status_json("vol");
    assert_eq!(status["status"][0]["bricks"][0]["online"], true);
}

/// The daemon's resident memory, from /proc.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("daemon status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kib / 1024
}

/// A connection without a certificate, as `peer probe` makes.
async fn connect_anonymous(ep: &quinn::Endpoint, addr: SocketAddr) -> Result<quinn::Connection, String> {
    let crypto = tls::join_client_crypto().map_err(|e| e.to_string())?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(crypto).map_err(|e| e.to_string())?;
    let cfg = quinn::ClientConfig::new(std::sync::Arc::new(crypto));
    ep.connect_with(cfg, addr, tls::NODE_SERVER_NAME)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())
}

/// Opens `streams` streams on `conn`, each sending a length prefix that
/// promises a maximum-size header and then `bytes` of it, never finishing:
/// what a peer trying to make the server buffer would send. The writes run
/// in the background (flow control may hold them).
fn partial_frames(conn: &quinn::Connection, streams: usize, bytes: usize) -> Vec<tokio::task::JoinHandle<()>> {
    (0..streams)
        .map(|_| {
            let conn = conn.clone();
            tokio::spawn(async move {
                let Ok((mut send, _recv)) = conn.open_bi().await else {
                    return;
                };
                let mut frame = (cairn_common::proto::MAX_HEADER_LEN as u32).to_le_bytes().to_vec();
                frame.resize(4 + bytes, 0x5a);
                let _ = send.write_all(&frame).await;
                // Hold the stream open, silent, until the test ends.
                std::future::pending::<()>().await;
            })
        })
        .collect()
}

#[test]
fn a_flood_of_connections_and_silent_streams_leaves_the_daemon_serving_in_bounded_memory() {
    const CONNECTIONS: usize = 200;
    const LIMIT_MIB: u64 = 256;
    let mut c = Cluster::new();
    let mnt = c.mnt().to_path_buf();
    let pid = c.daemon.pid().expect("daemon pid");
    write_file(&mnt.join("warm-up"), &pattern(1, 1 << 20));
    let before = rss_mib(pid);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let addr = addr_of(&c);
        let client = state::client_credentials(&c.daemon.state_dir).expect("client credentials");
        let ep = transport::client_endpoint(&client).expect("endpoint");
        let mut writers = Vec::new();
        // Certified peers (what any mount's certificate allows): many
        // connections, each with silent streams and partial headers.
        let mut verified = Vec::new();
        for i in 0..CONNECTIONS {
            let conn = bounded("connect", connect(&ep, addr))
                .await
                .unwrap_or_else(|e| panic!("certified connection {i}: {e}"));
            writers.extend(partial_frames(&conn, 8, 16 << 10));
            let (mut send, recv) = conn.open_bi().await.expect("open_bi");
            send.write_all(&[1]).await.expect("one byte");
            verified.push((conn, send, recv));
        }
        // Peers without a certificate, each trying to make the daemon hold
        // two megabytes of unfinished headers: 400 MiB if nothing stopped
        // them.
        let mut anonymous = Vec::new();
        for _ in 0..CONNECTIONS {
            if let Ok(conn) = bounded("anonymous connect", connect_anonymous(&ep, addr)).await {
                writers.extend(partial_frames(&conn, 8, 256 << 10));
                anonymous.push(conn);
            }
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let alive = anonymous.iter().filter(|c| c.close_reason().is_none()).count();
        assert!(alive <= 16, "{alive} connections without a certificate are held open");
        // A normal client is still served, promptly, through the mount...
        let data = pattern(2, 1 << 20);
        let (m, d) = (mnt.clone(), data.clone());
        let started = std::time::Instant::now();
        let back = bounded(
            "mount I/O during the flood",
            tokio::task::spawn_blocking(move || {
                write_file(&m.join("during-flood"), &d);
                read_file(&m.join("during-flood"))
            }),
        )
        .await
        .expect("io task");
        assert!(back == data, "mount I/O during the flood");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "mount I/O took {:?}",
            started.elapsed()
        );
        // ...and on a fresh connection.
        let node_ep = node_endpoint(&c);
        let fresh = bounded("connect", connect(&node_ep, addr))
            .await
            .expect("fresh connection");
        bounded("hello", hello_and_info(&fresh))
            .await
            .expect("a fresh client is served");
        let during = rss_mib(pid);
        assert!(
            during < LIMIT_MIB,
            "cairnd holds {during} MiB during the flood (was {before} MiB before)"
        );
        eprintln!("cairnd RSS: {before} MiB before, {during} MiB during the flood");
        for w in writers {
            w.abort();
        }
        drop(verified);
        drop(anonymous);
        ep.close(0u32.into(), b"done");
        node_ep.close(0u32.into(), b"done");
    });
    assert!(c.daemon.is_alive(), "cairnd died");
}

#[test]
fn connections_beyond_the_limit_are_refused_and_others_still_served() {
    let tmp = cairn_tests::temp_dir("cairn-limit-");
    let mut d = cairn_tests::Daemon::start_with(
        &tmp.path().join("state"),
        &tmp.path().join("cairnd.log"),
        &["--max-connections", "5"],
    );
    let rt = runtime();
    rt.block_on(async {
        let addr: SocketAddr = d.addr.parse().expect("address");
        let creds = state::node_credentials(&d.state_dir).expect("node credentials");
        let ep = transport::client_endpoint(&creds).expect("endpoint");
        // Fill the daemon up (its own traffic may hold a slot too).
        let mut held = Vec::new();
        let mut refusal = None;
        for _ in 0..10 {
            match bounded("connect", connect(&ep, addr)).await {
                Ok(conn) => held.push(conn),
                Err(e) => {
                    refusal = Some(e);
                    break;
                }
            }
        }
        assert!(
            (1..=5).contains(&held.len()),
            "{} connections held with --max-connections 5",
            held.len()
        );
        let refusal = refusal.expect("no connection was refused");
        assert!(refusal.contains("refused"), "refused how? {refusal}");
        // Those held are still served; once one goes, a newcomer gets in.
        let hello = Request::Hello {
            version: PROTOCOL_VERSION,
        };
        bounded("hello", transport::exchange(&held[0], &hello, Bytes::new()))
            .await
            .expect("a held connection is served");
        let gone = held.pop().expect("a connection");
        gone.close(0u32.into(), b"bye");
        let mut admitted = None;
        for _ in 0..20 {
            if let Ok(conn) = bounded("connect after one left", connect(&ep, addr)).await {
                admitted = Some(conn);
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let admitted = admitted.expect("no connection admitted after one closed");
        bounded("hello", transport::exchange(&admitted, &hello, Bytes::new()))
            .await
            .expect("the newcomer is served");
        ep.close(0u32.into(), b"done");
    });
    assert!(d.is_alive());
    let bad = std::process::Command::new(cairn_tests::bin("cairnd"))
        .args(["--max-connections", "0"])
        .output()
        .expect("cairnd");
    assert!(!bad.status.success(), "--max-connections 0 was accepted");
}
