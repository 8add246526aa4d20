//! Keys stay private: a node's state dir and key files are closed to other
//! users, and no private key appears in any log or CLI output even at
//! RUST_LOG=trace, through a pool join (which carries the CA key), a volume
//! create and mount, I/O, and a client certificate issue.
//!
//! Alone in its test binary: it sets RUST_LOG for every process it starts.

use cairn_tests::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The lines of a PEM key's body: any one of them in a log is a leak.
fn key_lines(pem_path: &Path) -> Vec<String> {
    let pem = std::fs::read_to_string(pem_path).unwrap_or_else(|e| panic!("{}: {e}", pem_path.display()));
    assert!(
        pem.contains("PRIVATE KEY"),
        "{} is not a private key",
        pem_path.display()
    );
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_string)
        .collect()
}

fn assert_private_state(dir: &Path) {
    assert_eq!(mode(dir), 0o700, "state dir {}", dir.display());
    for key in ["ca.key", "node.key", "client.key", "reset.key"] {
        assert_eq!(mode(&dir.join(key)), 0o600, "{key} in {}", dir.display());
    }
    // Nothing in the state dir is readable or writable by others.
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        assert_eq!(mode(&p) & 0o007, 0, "{} is open to other users", p.display());
    }
}

#[test]
fn state_is_private_and_no_key_reaches_a_log() {
    // SAFETY (edition 2021: safe): set before any thread of this binary's
    // only test starts a process.
    std::env::set_var("RUST_LOG", "trace");
    let mut pool = Pool::unjoined(2);
    for i in 0..2 {
        assert_private_state(&pool.state_dir(i));
    }
    // A state dir made open by hand is closed again at start.
    let extra = pool.dir.join("state-open");
    std::fs::create_dir(&extra).unwrap();
    std::fs::set_permissions(&extra, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut third = Daemon::start(&extra, &pool.dir.join("cairnd-open.log"));
    assert_private_state(&extra);
    third.stop();

    let mut outputs = Vec::new();
    outputs.push(pool.node(0).cli_ok(&["peer", "probe", &pool.node(1).addr]));
    let bricks = [pool.brick(0, "b0"), pool.brick(1, "b1")];
    outputs.push(
        pool.node(0)
            .cli_ok(&["volume", "create", "sv", &bricks[0], &bricks[1], "force"]),
    );
    outputs.push(pool.node(0).cli_ok(&["volume", "start", "sv"]));
    let mnt = pool.mount(0, "sv", "m", "");
    for i in 0..20 {
        std::fs::write(mnt.join(format!("f{i}")), pattern(i as u64, 10_000)).unwrap();
    }
    assert_eq!(std::fs::read(mnt.join("f3")).unwrap(), pattern(3, 10_000));
    let certs = pool.dir.join("certs");
    std::fs::create_dir(&certs).unwrap();
    outputs.push(
        pool.node(1)
            .cli_ok(&["client-cert", "issue", "laptop", "--out", certs.to_str().unwrap()]),
    );
    assert_eq!(mode(&certs.join("laptop.key")), 0o600);
    outputs.push(pool.node(0).cli_ok(&["volume", "info"]));
    // The joined node took the pool's CA: still private.
    assert_private_state(&pool.state_dir(1));

    let mut secrets = Vec::new();
    for i in 0..2 {
        for key in ["ca.key", "node.key", "client.key"] {
            secrets.extend(key_lines(&pool.state_dir(i).join(key)));
        }
    }
    secrets.extend(key_lines(&certs.join("laptop.key")));
    let mut logs: Vec<PathBuf> = vec![pool.log(0), pool.log(1), pool.dir.join("cairnd-open.log")];
    logs.extend(
        std::fs::read_dir(&pool.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log")),
    );
    logs.sort();
    logs.dedup();
    let mut texts: Vec<(String, String)> = logs
        .iter()
        .map(|p| (p.display().to_string(), std::fs::read_to_string(p).unwrap_or_default()))
        .collect();
    texts.extend(outputs.into_iter().map(|o| ("cli output".to_string(), o)));
    let daemon_log = &texts
        .iter()
        .find(|(n, _)| *n == pool.log(1).display().to_string())
        .unwrap()
        .1;
    assert!(
        daemon_log.contains("TRACE") || daemon_log.contains("DEBUG"),
        "RUST_LOG=trace did not reach cairnd"
    );
    for (name, text) in &texts {
        assert!(!text.contains("PRIVATE KEY"), "{name} holds a PEM private key");
        for line in &secrets {
            assert!(!text.contains(line.as_str()), "{name} holds a line of a private key");
        }
    }
}
