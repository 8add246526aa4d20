//! Where a node keeps its state, and the credential files in it. The CLI and
//! a local mount find the node's credentials here.

use crate::tls::Credentials;
use anyhow::Context;
use std::path::{Path, PathBuf};

pub const DEFAULT_STATE_DIR: &str = "/var/lib/cairn";

/// `--state-dir`, else `$CAIRN_STATE_DIR`, else `/var/lib/cairn`.
pub fn resolve_state_dir(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    match std::env::var_os("CAIRN_STATE_DIR") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(DEFAULT_STATE_DIR),
    }
}

pub fn ca_cert(dir: &Path) -> PathBuf {
    dir.join("ca.pem")
}
pub fn ca_key(dir: &Path) -> PathBuf {
    dir.join("ca.key")
}
pub fn node_cert(dir: &Path) -> PathBuf {
    dir.join("node.pem")
}
pub fn node_key(dir: &Path) -> PathBuf {
    dir.join("node.key")
}
pub fn client_cert(dir: &Path) -> PathBuf {
    dir.join("client.pem")
}
pub fn client_key(dir: &Path) -> PathBuf {
    dir.join("client.key")
}
/// The address the node listens on, written at start so the CLI can find it.
pub fn listen_file(dir: &Path) -> PathBuf {
    dir.join("listen")
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Loads credentials from explicit files.
pub fn load_credentials(ca: &Path, cert: &Path, key: &Path) -> anyhow::Result<Credentials> {
    Ok(Credentials {
        ca_pem: read(ca)?,
        cert_pem: read(cert)?,
        key_pem: read(key)?,
    })
}

/// The node's own credentials (admin rights), used by the CLI.
pub fn node_credentials(dir: &Path) -> anyhow::Result<Credentials> {
    load_credentials(&ca_cert(dir), &node_cert(dir), &node_key(dir)).with_context(|| {
        format!(
            "no node credentials in {} (is cairnd running with this --state-dir, and are you root?)",
            dir.display()
        )
    })
}

/// The client credentials a local mount uses.
pub fn client_credentials(dir: &Path) -> anyhow::Result<Credentials> {
    load_credentials(&ca_cert(dir), &client_cert(dir), &client_key(dir)).with_context(|| {
        format!(
            "no client credentials in {} (is cairnd running with this --state-dir, and are you root?)",
            dir.display()
        )
    })
}

/// Writes a file readable by its owner only, atomically (temp + rename), so a
/// crash never leaves a half-written key.
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}
