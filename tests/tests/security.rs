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
