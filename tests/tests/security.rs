//! Who may use a volume: client certificates issued and revoked by the
//! pool, and auth.allow / auth.reject by client address.

use cairn_tests::*;
use std::path::Path;

fn mount_with_cert(c: &Cluster, name: &str, certs: &Path, client: &str) -> Result<Mount, CliOutput> {
    let opts = format!(
        "cert={},key={},ca={}",
        certs.join(format!("{client}.pem")).display(),
        certs.join(format!("{client}.key")).display(),
        certs.join("ca.pem").display()
    );
    // No state-dir: only the issued files are used.
    let mountpoint = c.dir.join(name);
    let log = c.dir.join(format!("{name}.log"));
    let source = format!("{}:/{}", c.daemon.addr, c.volume);
    std::fs::create_dir_all(&mountpoint).unwrap();
    let out = std::process::Command::new(bin("mount-cairn"))
        .arg(&source)
        .arg(&mountpoint)
        .arg("-o")
        .arg(format!("{opts},log-file={}", log.display()))
        .env("CAIRN_STATE_DIR", c.dir.join("no-such-state"))
        .output()
        .unwrap();
    if out.status.success() {
        Ok(Mount::adopt(&mountpoint, &log))
    } else {
        Err(CliOutput::from(out))
    }
}

#[test]
fn issued_client_certificates_mount_and_revoked_ones_are_refused() {
    let c = Cluster::unmounted();
    let certs = c.dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    c.daemon
        .cli_ok(&["client-cert", "issue", "laptop", "--out", certs.to_str().unwrap()]);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(certs.join("laptop.key")).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the private key must be private");

    let m = mount_with_cert(&c, "laptop-mnt", &certs, "laptop").unwrap_or_else(|o| panic!("{o:?}"));
    std::fs::write(m.p("from-laptop"), "hi").unwrap();
    // A client certificate may use volumes but not manage them: checked by
    // hostile.rs; here, revoke it while the mount is live.
    c.daemon.cli_ok(&["client-cert", "revoke", "laptop"]);
    let after = with_timeout(std::time::Duration::from_secs(30), {
        let p = m.p("from-laptop");
        move || std::fs::read(p)
    })
    .expect("a read on a revoked mount must fail, not hang");
    assert!(after.is_err(), "a revoked certificate still reads");
    let again = mount_with_cert(&c, "laptop-mnt2", &certs, "laptop");
    assert!(again.is_err(), "a revoked certificate mounted again");
    let reissue = c
        .daemon
        .cli(&["client-cert", "issue", "laptop", "--out", certs.to_str().unwrap()]);
    assert!(!reissue.ok() && reissue.stderr.contains("revoked"), "{reissue:?}");
    let unknown = c.daemon.cli(&["client-cert", "revoke", "nobody-issued-this"]);
    assert!(!unknown.ok(), "{unknown:?}");
    drop(m);
}

#[test]
fn auth_reject_and_allow_by_client_address() {
    let c = Cluster::new();
    std::fs::write(c.p("before"), "x").unwrap();
    // Mounts here connect from a loopback address.
    c.daemon.cli_ok(&["volume", "set", &c.volume, "auth.reject", "127.*"]);
    let refused = std::fs::write(c.p("during"), "x");
    assert_eq!(
        refused.err().and_then(|e| e.raw_os_error()),
        Some(libc::EACCES),
        "a rejected address still writes"
    );
    let m2 = Mount::try_new(&c.daemon, &c.volume, &c.dir.join("m2"), &c.dir.join("m2.log"), "");
    assert!(m2.is_err(), "a rejected address mounted");
    c.daemon.cli_ok(&["volume", "reset", &c.volume, "auth.reject"]);
    c.daemon
        .cli_ok(&["volume", "set", &c.volume, "auth.allow", "192.0.2.*"]);
    assert!(
        std::fs::write(c.p("during"), "x").is_err(),
        "an address outside auth.allow still writes"
    );
    c.daemon
        .cli_ok(&["volume", "set", &c.volume, "auth.allow", "127.0.0.*,::1"]);
    std::fs::write(c.p("after"), "x").unwrap();
    let bad = c
        .daemon
        .cli(&["volume", "set", &c.volume, "auth.allow", "not an address"]);
    assert!(!bad.ok() && bad.stderr.lines().count() == 1, "{bad:?}");
}

fn owner_of(p: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
    (m.uid(), m.gid())
}

fn set_owner_and_mode(p: &Path, uid: u32, gid: u32, mode: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
}

/// Waits until reading `p` as root fails (`squashed`) or works (not).
fn wait_for_squash(p: &Path, squashed: bool) {
    let settled = poll(std::time::Duration::from_secs(10), || {
        (std::fs::read(p).is_err() == squashed).then_some(())
    });
    assert!(settled.is_some(), "root-squash {squashed} never took effect");
}

#[test]
fn root_squash_makes_root_on_a_mount_the_anonymous_user() {
    let c = Cluster::new();
    let secret = c.p("secret");
    std::fs::write(&secret, "for 1000 only").unwrap();
    set_owner_and_mode(&secret, 1000, 1000, 0o600);
    // A directory anyone may write, so a squashed root can create at all.
    std::fs::create_dir(c.p("pub")).unwrap();
    std::fs::set_permissions(c.p("pub"), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let bad = c.daemon.cli(&["volume", "set", &c.volume, "server.anonuid", "-1"]);
    assert!(!bad.ok(), "{bad:?}");

    c.daemon
        .cli_ok(&["volume", "set", &c.volume, "server.root-squash", "on"]);
    wait_for_squash(&secret, true);
    expect_errno(
        std::fs::read(&secret),
        libc::EACCES,
        "root reading a 0600 file of uid 1000",
    );
    expect_errno(
        std::fs::OpenOptions::new().write(true).open(&secret),
        libc::EACCES,
        "root opening it for writing",
    );
    expect_errno(
        std::os::unix::fs::chown(&secret, Some(0), None),
        libc::EPERM,
        "root taking the file over",
    );
    expect_errno(
        std::fs::remove_file(&secret),
        libc::EACCES,
        "root unlinking in a root-owned 0755 dir",
    );
    expect_errno(
        std::fs::write(c.p("at-root"), "x"),
        libc::EACCES,
        "root creating in a root-owned 0755 dir",
    );
    // Its owner still reads it.
    let cat = run_as(1000, 1000, Path::new("/bin/cat"), &[secret.to_str().unwrap()]);
    assert!(cat.status.success(), "uid 1000 lost its own file: {cat:?}");

    std::fs::write(c.p("pub/by-root"), "squashed").unwrap();
    std::fs::create_dir(c.p("pub/dir-by-root")).unwrap();
    for name in ["pub/by-root", "pub/dir-by-root"] {
        assert_eq!(owner_of(&c.p(name)), (65534, 65534), "{name} on the mount");
        assert_eq!(owner_of(&c.b(name)), (65534, 65534), "{name} on the brick");
    }
    c.daemon.cli_ok(&["volume", "set", &c.volume, "server.anonuid", "4242"]);
    c.daemon.cli_ok(&["volume", "set", &c.volume, "server.anongid", "4343"]);
    let ok = poll(std::time::Duration::from_secs(10), || {
        let name = c.p(format!("pub/probe-{}", rand_suffix()));
        std::fs::write(&name, "x").ok()?;
        (owner_of(&name) == (4242, 4343)).then_some(())
    });
    assert!(ok.is_some(), "server.anonuid / anongid are not used");

    c.daemon
        .cli_ok(&["volume", "set", &c.volume, "server.root-squash", "off"]);
    wait_for_squash(&secret, false);
    assert_eq!(std::fs::read(&secret).unwrap(), b"for 1000 only");
    std::fs::write(c.p("pub/by-real-root"), "x").unwrap();
    assert_eq!(owner_of(&c.b("pub/by-real-root")), (0, 0));
    std::os::unix::fs::chown(&secret, Some(0), None).unwrap();
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Opens `name` (in the volume root) for reading over a raw connection
/// with `creds`, as a user's fop (`as_caller`) or as the client's own work.
fn raw_open(
    c: &Cluster,
    creds: &cairn_common::tls::Credentials,
    name: &str,
    as_caller: Option<u32>,
) -> Result<(), i32> {
    use bytes::Bytes;
    use cairn_common::proto::{AdminReply, AdminRequest, Creds, Fop, Reply, Request};
    use cairn_common::transport::{self, RpcError};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ep = transport::client_endpoint(creds).unwrap();
        let addr: std::net::SocketAddr = c.daemon.addr.parse().unwrap();
        let conn = ep
            .connect(addr, cairn_common::tls::NODE_SERVER_NAME)
            .unwrap()
            .await
            .expect("connect");
        let call = |req: Request| {
            let conn = conn.clone();
            async move {
                match tokio::time::timeout(
                    std::time::Duration::from_secs(15),
                    transport::exchange(&conn, &req, Bytes::new()),
                )
                .await
                {
                    Ok(Ok((reply, _))) => Ok(reply),
                    Ok(Err(RpcError::Remote { errno, .. })) => Err(errno),
                    other => panic!("{req:?}: {other:?}"),
                }
            }
        };
        let spec = match call(Request::Admin(AdminRequest::GetVolume { name: c.volume.clone() })).await {
            Ok(Reply::Admin(AdminReply::Spec(s))) => s,
            other => panic!("volume spec: {other:?}"),
        };
        let brick = spec.bricks[0].id;
        let send = |op: Fop| match as_caller {
            Some(uid) => Request::FopAs {
                brick,
                op,
                caller: Creds { uid, gid: uid },
            },
            None => Request::Fop { brick, op },
        };
        let gfid = match call(send(Fop::Lookup {
            parent: cairn_common::Gfid::ROOT,
            name: name.as_bytes().to_vec(),
        }))
        .await
        {
            Ok(Reply::Entry(a)) => a.gfid,
            other => panic!("lookup {name}: {other:?}"),
        };
        let r = call(send(Fop::Open {
            gfid,
            flags: libc::O_RDONLY,
        }))
        .await
        .map(drop);
        ep.close(0u32.into(), b"done");
        r
    })
}

#[test]
fn root_squash_spares_the_pools_own_traffic() {
    let c = Cluster::new();
    std::fs::write(c.p("secret"), "x").unwrap();
    set_owner_and_mode(&c.p("secret"), 1000, 1000, 0o600);
    c.daemon
        .cli_ok(&["volume", "set", &c.volume, "server.root-squash", "on"]);
    wait_for_squash(&c.p("secret"), true);
    let client = cairn_common::state::client_credentials(&c.daemon.state_dir).unwrap();
    let node = cairn_common::state::node_credentials(&c.daemon.state_dir).unwrap();
    assert_eq!(
        raw_open(&c, &client, "secret", Some(0)),
        Err(libc::EACCES),
        "a mount's root"
    );
    assert_eq!(raw_open(&c, &client, "secret", Some(1000)), Ok(()), "a mount's owner");
    // A mount's own work (background heals) and the pool's daemons
    // (self-heal, rebalance: node certificates) are never squashed.
    assert_eq!(raw_open(&c, &client, "secret", None), Ok(()), "a mount's internal fop");
    assert_eq!(raw_open(&c, &node, "secret", Some(0)), Ok(()), "a node certificate");
    assert_eq!(raw_open(&c, &node, "secret", None), Ok(()), "a node's internal fop");
}
