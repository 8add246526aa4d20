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
    // A temp file left by a crash keeps its old mode through open(2): it
    // goes first, so the secret is only ever written into a 0600 file.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing a stale {}", tmp.display())),
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}

/// Makes the state dir (and missing parents) private to root: it holds the
/// pool CA key. An existing directory open to others (made by hand or a
/// package) is closed.
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating state dir {}", dir.display()))?;
    let mode = std::fs::metadata(dir)
        .with_context(|| format!("checking state dir {}", dir.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(dir = %dir.display(), mode = format!("{:o}", mode & 0o7777), "the state dir was open to others; making it 0700");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o7700))
            .with_context(|| format!("making state dir {} private", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn secrets_land_in_0600_files_even_over_a_stale_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("x.key");
        std::fs::write(key.with_extension("tmp"), "stale").unwrap();
        std::fs::set_permissions(key.with_extension("tmp"), std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&key, b"secret").unwrap();
        assert_eq!(mode(&key), 0o600);
        assert_eq!(std::fs::read(&key).unwrap(), b"secret");
    }

    #[test]
    fn the_state_dir_is_made_private_new_or_existing() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("a/b/state");
        create_private_dir(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&open).unwrap();
        assert_eq!(mode(&open), 0o700);
    }
}
