//! A brick: one directory on ext4/xfs holding the volume's namespace as plain
//! files, addressed by gfid.
//!
//! On-brick format:
//! - every file and directory carries its gfid in `trusted.cairn.gfid`;
//! - the root carries `trusted.cairn.volume-id`; a root without the mark (an
//!   unmounted disk, a wrong path) is never served;
//! - `.cairn/files/XX/<gfid-hex>` is a hard link to each non-directory, so an
//!   inode is reachable by gfid in one step;
//! - `.cairn/dirs/XX/<gfid-hex>` is a symlink whose *text* is
//!   `<parent-gfid-hex>/<name>`. It is parsed, never followed: a directory is
//!   reached by opening each ancestor by name from its parent's fd, so paths
//!   of any length work and nothing resolves outside the brick.
//! - `.cairn/brick.json` records the brick and volume ids.

pub mod cookies;
pub mod inode;
pub mod namespace;

use crate::sys;
use cairn_common::proto::{Attr, Timespec};
use cairn_common::Gfid;
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

pub const GFID_XATTR: &str = "trusted.cairn.gfid";
pub const VOLUME_ID_XATTR: &str = "trusted.cairn.volume-id";
/// On a distribute link file: the id of the subvolume holding the data.
pub const LINKTO_XATTR: &str = "trusted.cairn.linkto";
/// Files whose latest name the brick remembers for reports, at most.
const NAMES_LIMIT: usize = 100_000;
/// On a directory: this brick's entry of the directory's layout.
pub const LAYOUT_XATTR: &str = "trusted.cairn.dht";
/// Internal xattrs clients may neither read nor write.
pub const PRIVATE_XATTR_PREFIX: &[u8] = b"trusted.cairn.";

/// Directory fds kept open for gfid resolution. An fd follows its directory
/// through renames, so cached entries never go stale; only rmdir evicts.
const DIR_CACHE_LIMIT: usize = 4096;
/// Deepest ancestor chain followed when resolving a directory handle.
const MAX_DEPTH: usize = 4096;

/// An error with the errno the application should see.
#[derive(Debug)]
pub struct FsError {
    pub errno: i32,
    pub context: String,
}

impl FsError {
    pub fn new(errno: i32, context: impl Into<String>) -> FsError {
        FsError {
            errno,
            context: context.into(),
        }
    }
}

impl std::fmt::Display for FsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.context, io::Error::from_raw_os_error(self.errno))
    }
}

pub type FsResult<T> = Result<T, FsError>;

/// Attaches context to an io error, keeping its errno.
pub trait Ctx<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> FsResult<T>;
}

impl<T> Ctx<T> for io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> FsResult<T> {
        self.map_err(|e| FsError::new(e.raw_os_error().unwrap_or(libc::EIO), what()))
    }
}

/// Where an inode is, once its gfid is resolved.
pub enum Node {
    /// A directory, held open.
    Dir(Arc<OwnedFd>),
    /// Anything else, reached through its handle link `XX/<hex>` in `files`.
    File(CString),
}

#[derive(serde::Serialize, serde::Deserialize)]
struct BrickInfo {
    brick_id: Uuid,
    volume_id: Uuid,
    volume: String,
}

pub struct Brick {
    pub id: Uuid,
    pub path: PathBuf,
    root: Arc<OwnedFd>,
    files: OwnedFd,
    dirs: OwnedFd,
    dir_cache: Mutex<HashMap<Gfid, Arc<OwnedFd>>>,
    cookies: cookies::CookieCodec,
    /// Serializes the steps that decide whether a file's handle link is its
    /// last name (unlink, rename over a file, link), so a concurrent link
    /// cannot resurrect an inode whose handle was just dropped.
    link_lock: Mutex<()>,
    /// Sharded by (parent, name): held while a new entry gets its gfid, so a
    /// concurrent lookup never mistakes the half-made entry for one made
    /// behind the volume's back and gives it a gfid of its own.
    entry_locks: Vec<Mutex<()>>,
    /// gfid → (parent, name) last seen, for `path_of`.
    names: Mutex<HashMap<Gfid, (Gfid, Vec<u8>)>>,
    /// How many open handles each file has, across all connections.
    open_files: Mutex<HashMap<Gfid, u32>>,
    /// Serializes replication-counter updates (`xattrop`).
    xattrop_lock: Mutex<()>,
}

/// Keeps a file's gfid handle alive while it is open; dropped at close.
pub struct OpenRef {
    brick: Arc<Brick>,
    gfid: Gfid,
}

impl Drop for OpenRef {
    fn drop(&mut self) {
        let last = {
            let mut open = self.brick.open_files.lock().expect("open files poisoned");
            match open.get_mut(&self.gfid) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                _ => {
                    open.remove(&self.gfid);
                    true
                }
            }
        };
        if last {
            // Unlinked while open: its handle goes with the last close.
            let _guard = self.brick.link_lock.lock().expect("link lock poisoned");
            self.brick.release_file_handle(&self.gfid);
        }
    }
}

fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(path)?;
    Ok(f.into())
}

use std::os::unix::fs::OpenOptionsExt;

fn c(s: &str) -> CString {
    CString::new(s).expect("static names have no NUL")
}

impl Brick {
    /// Prepares a directory to become a brick of `volume_id`: creates it if
    /// missing, marks it, and lays out `.cairn/`. Refuses a directory that is
    /// (or is inside) a brick of another volume unless `force`.
    pub fn initialize(path: &Path, brick_id: Uuid, volume_id: Uuid, volume: &str, force: bool) -> anyhow::Result<()> {
        use anyhow::Context;
        Self::check_unclaimed(path, Some(volume_id), force)?;
        std::fs::create_dir_all(path).with_context(|| format!("creating brick directory {}", path.display()))?;
        let root = open_dir_path(path).with_context(|| format!("opening {}", path.display()))?;
        sys::fsetxattr(root.as_fd(), &c(VOLUME_ID_XATTR), volume_id.as_bytes(), 0).with_context(|| {
            format!(
                "marking {} (does its filesystem support trusted xattrs?)",
                path.display()
            )
        })?;
        sys::fsetxattr(root.as_fd(), &c(GFID_XATTR), &Gfid::ROOT.0, 0)?;
        let private = path.join(".cairn");
        for sub in ["files", "dirs"] {
            let dir = private.join(sub);
            for i in 0..=255u8 {
                std::fs::create_dir_all(dir.join(format!("{i:02x}")))
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
        }
        let info = BrickInfo {
            brick_id,
            volume_id,
            volume: volume.to_string(),
        };
        cairn_common::state::write_private(&private.join("brick.json"), &serde_json::to_vec_pretty(&info)?)?;
        Ok(())
    }

    /// Can `path` become a brick (of `volume_id`, if known)? Checked on
    /// every node before a volume is created, without changing anything:
    /// no other volume's mark on it or an ancestor (unless `force`), and a
    /// directory there or a place to make one.
    pub fn check_unclaimed(path: &Path, volume_id: Option<Uuid>, force: bool) -> anyhow::Result<()> {
        for ancestor in path.ancestors() {
            let cpath = sys::cstr(ancestor.as_os_str().as_encoded_bytes())?;
            if let Ok(v) = sys::lgetxattr(&cpath, &c(VOLUME_ID_XATTR)) {
                if volume_id.is_none_or(|id| v != id.as_bytes()) && !force {
                    anyhow::bail!(
                        "{} is already part of a volume{}; use 'force' to reuse it",
                        path.display(),
                        if ancestor == path {
                            String::new()
                        } else {
                            format!(" (its ancestor {} is a brick)", ancestor.display())
                        }
                    );
                }
            }
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => anyhow::bail!("{} exists and is not a directory", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let parent = path
                    .ancestors()
                    .skip(1)
                    .find(|a| a.exists())
                    .ok_or_else(|| anyhow::anyhow!("{}: no existing parent directory", path.display()))?;
                if !parent.is_dir() {
                    anyhow::bail!("{}: {} is not a directory", path.display(), parent.display());
                }
                let cparent = sys::cstr(parent.as_os_str().as_encoded_bytes())?;
                // SAFETY: a valid C string.
                if unsafe { libc::access(cparent.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
                    anyhow::bail!(
                        "{}: cannot create it under {}: {}",
                        path.display(),
                        parent.display(),
                        std::io::Error::last_os_error()
                    );
                }
                Ok(())
            }
            Err(e) => anyhow::bail!("{}: {e}", path.display()),
        }
    }

    /// Opens a prepared brick, checking that it is the one expected.
    pub fn open_existing(path: &Path, brick_id: Uuid, volume_id: Uuid) -> anyhow::Result<Brick> {
        use anyhow::Context;
        let root = open_dir_path(path).with_context(|| format!("opening brick {}", path.display()))?;
        match sys::fgetxattr(root.as_fd(), &c(VOLUME_ID_XATTR)) {
            Ok(v) if v == volume_id.as_bytes() => {}
            Ok(_) => anyhow::bail!(
                "brick {} belongs to another volume; refusing to serve it",
                path.display()
            ),
            Err(_) => anyhow::bail!(
                "brick {} lacks its volume-id mark (is the disk mounted?); refusing to serve it",
                path.display()
            ),
        }
        let files = open_dir_path(&path.join(".cairn/files")).context("opening .cairn/files")?;
        let fs_type = sys::fstatfs_type(root.as_fd()).context("statfs of the brick")?;
        let dirs = open_dir_path(&path.join(".cairn/dirs")).context("opening .cairn/dirs")?;
        Ok(Brick {
            id: brick_id,
            path: path.to_path_buf(),
            root: Arc::new(root),
            files,
            dirs,
            dir_cache: Mutex::new(HashMap::new()),
            cookies: cookies::CookieCodec::for_fs_type(fs_type),
            link_lock: Mutex::new(()),
            entry_locks: (0..64).map(|_| Mutex::new(())).collect(),
            open_files: Mutex::new(HashMap::new()),
            xattrop_lock: Mutex::new(()),
            names: Mutex::new(HashMap::new()),
        })
    }

    /// Records an open handle of `gfid` until the returned guard drops.
    pub fn open_ref(self: &Arc<Self>, gfid: Gfid) -> OpenRef {
        *self
            .open_files
            .lock()
            .expect("open files poisoned")
            .entry(gfid)
            .or_insert(0) += 1;
        OpenRef {
            brick: self.clone(),
            gfid,
        }
    }

    fn is_open(&self, gfid: &Gfid) -> bool {
        self.open_files.lock().expect("open files poisoned").contains_key(gfid)
    }

    fn entry_lock(&self, parent: &Gfid, name: &[u8]) -> std::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        parent.hash(&mut h);
        name.hash(&mut h);
        let shard = (h.finish() % self.entry_locks.len() as u64) as usize;
        self.entry_locks[shard].lock().expect("entry lock poisoned")
    }

    fn handle_name(gfid: &Gfid) -> CString {
        let hex = gfid.to_hex();
        c(&format!("{}/{}", &hex[..2], hex))
    }

    fn dir_handle_text(parent: &Gfid, name: &[u8]) -> Vec<u8> {
        let mut text = parent.to_hex().into_bytes();
        text.push(b'/');
        text.extend_from_slice(name);
        text
    }

    fn cache_dir(&self, gfid: Gfid, fd: Arc<OwnedFd>) {
        let mut cache = self.dir_cache.lock().expect("dir cache poisoned");
        if cache.len() >= DIR_CACHE_LIMIT {
            // Dropping an arbitrary half keeps the cost amortized O(1).
            let victims: Vec<Gfid> = cache.keys().take(DIR_CACHE_LIMIT / 2).copied().collect();
            for v in victims {
                cache.remove(&v);
            }
        }
        cache.insert(gfid, fd);
    }

    fn forget_dir(&self, gfid: &Gfid) {
        self.dir_cache.lock().expect("dir cache poisoned").remove(gfid);
    }

    /// Opens the directory with this gfid.
    pub fn dir_fd(&self, gfid: &Gfid) -> FsResult<Arc<OwnedFd>> {
        if gfid.is_root() {
            return Ok(self.root.clone());
        }
        if let Some(fd) = self.dir_cache.lock().expect("dir cache poisoned").get(gfid) {
            return Ok(fd.clone());
        }
        // Walk up the handle texts to a cached (or root) ancestor...
        let mut chain: Vec<(Gfid, Vec<u8>)> = Vec::new();
        let mut cur = *gfid;
        let mut base = loop {
            if chain.len() > MAX_DEPTH {
                return Err(FsError::new(
                    libc::ELOOP,
                    format!("directory {gfid} is nested too deep"),
                ));
            }
            let text =
                sys::readlink_at(self.dirs.as_fd(), &Self::handle_name(&cur)).map_err(|e| match e.raw_os_error() {
                    Some(libc::ENOENT) | Some(libc::EINVAL) => {
                        FsError::new(libc::ESTALE, format!("no directory {cur}"))
                    }
                    _ => FsError::new(
                        e.raw_os_error().unwrap_or(libc::EIO),
                        format!("reading handle of {cur}"),
                    ),
                })?;
            let (parent, name) = parse_dir_handle(&text)
                .ok_or_else(|| FsError::new(libc::EIO, format!("corrupt directory handle for {cur}")))?;
            chain.push((cur, name));
            if parent.is_root() {
                break self.root.clone();
            }
            if let Some(fd) = self.dir_cache.lock().expect("dir cache poisoned").get(&parent) {
                break fd.clone();
            }
            cur = parent;
        };
        // ...then open each level by name from its parent, checking gfids.
        for (child, name) in chain.into_iter().rev() {
            let cname = sys::cstr(&name).ctx(|| "handle name".into())?;
            let fd = sys::open_beneath(base.as_fd(), &cname, libc::O_RDONLY | libc::O_DIRECTORY, 0)
                .map_err(|_| FsError::new(libc::ESTALE, format!("directory {child} is gone")))?;
            if read_gfid_fd(fd.as_fd()) != Some(child) {
                return Err(FsError::new(libc::ESTALE, format!("directory {child} was replaced")));
            }
            let fd = Arc::new(fd);
            self.cache_dir(child, fd.clone());
            base = fd;
        }
        Ok(base)
    }

    /// Finds the inode with this gfid.
    pub fn resolve(&self, gfid: &Gfid) -> FsResult<Node> {
        if gfid.is_root() {
            return Ok(Node::Dir(self.root.clone()));
        }
        if let Some(fd) = self.dir_cache.lock().expect("dir cache poisoned").get(gfid) {
            return Ok(Node::Dir(fd.clone()));
        }
        let handle = Self::handle_name(gfid);
        match sys::stat_at(self.files.as_fd(), &handle) {
            Ok(_) => Ok(Node::File(handle)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(Node::Dir(self.dir_fd(gfid)?)),
            Err(e) => Err(e).ctx(|| format!("resolving {gfid}")),
        }
    }

    /// A directory fd plus name that reaches the node with l*/`*at` calls.
    fn node_at<'a>(&'a self, node: &'a Node) -> (BorrowedFd<'a>, &'a CStr) {
        match node {
            Node::Dir(fd) => (fd.as_fd(), c"."),
            Node::File(handle) => (self.files.as_fd(), handle.as_c_str()),
        }
    }

    /// `/proc/self/fd/N/name` for the node, for the xattr syscalls.
    fn node_proc_path(&self, node: &Node) -> FsResult<CString> {
        let (dir, name) = self.node_at(node);
        sys::proc_path(dir, name.to_bytes()).ctx(|| "proc path".into())
    }

    pub fn stat_node(&self, node: &Node, gfid: Gfid) -> FsResult<Attr> {
        let st = match node {
            Node::Dir(fd) => sys::fstat(fd.as_fd()),
            Node::File(h) => sys::stat_at(self.files.as_fd(), h),
        }
        .ctx(|| format!("stat {gfid}"))?;
        let mut attr = self.attr_from_stat(gfid, &st);
        if looks_like_link(&st) {
            attr.linkto = read_linkto(&self.node_proc_path(node)?);
        }
        Ok(attr)
    }

    /// Converts a brick stat into the volume's view: the handle link is not
    /// a name the user made, so it does not count in `nlink`.
    fn attr_from_stat(&self, gfid: Gfid, st: &libc::stat) -> Attr {
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let mut nlink = st.st_nlink as u32;
        if !is_dir {
            // An unlinked file still open has only its handle left: nlink 0.
            nlink = nlink.saturating_sub(1);
        } else if gfid.is_root() {
            nlink = nlink.saturating_sub(1).max(2); // .cairn
        }
        Attr {
            gfid,
            mode: st.st_mode,
            nlink,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev,
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            blksize: st.st_blksize as u32,
            atime: Timespec {
                sec: st.st_atime,
                nsec: st.st_atime_nsec as u32,
            },
            mtime: Timespec {
                sec: st.st_mtime,
                nsec: st.st_mtime_nsec as u32,
            },
            ctime: Timespec {
                sec: st.st_ctime,
                nsec: st.st_ctime_nsec as u32,
            },
            linkto: None,
        }
    }

    /// The volume path of a gfid, for reports (`volume top`): a directory's
    /// from /proc's view of its fd, a file's from the name it was last seen
    /// under (None if not seen since the daemon started).
    /// The parent and name a file was last looked up or made under here,
    /// if this brick remembers (not across restarts).
    pub fn known_name(&self, gfid: &Gfid) -> Option<(Gfid, Vec<u8>)> {
        self.names.lock().expect("names poisoned").get(gfid).cloned()
    }

    pub fn path_of(&self, gfid: &Gfid) -> Option<String> {
        if gfid.is_root() {
            return Some("/".to_string());
        }
        let (dir, name) = match self.resolve(gfid).ok()? {
            Node::Dir(fd) => (fd, None),
            Node::File(_) => {
                let (parent, name) = self.names.lock().expect("names poisoned").get(gfid).cloned()?;
                (self.dir_fd(&parent).ok()?, Some(name))
            }
        };
        let full = std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&*dir))).ok()?;
        let mut rel = full.strip_prefix(&self.path).ok()?.to_path_buf();
        if let Some(n) = name {
            rel.push(std::ffi::OsStr::from_bytes(&n));
        }
        Some(format!("/{}", rel.display()))
    }

    pub fn statfs(&self) -> FsResult<cairn_common::proto::Statfs> {
        let st = sys::fstatvfs(self.root.as_fd()).ctx(|| "statfs".into())?;
        Ok(cairn_common::proto::Statfs {
            blocks: st.f_blocks,
            bfree: st.f_bfree,
            bavail: st.f_bavail,
            files: st.f_files,
            ffree: st.f_ffree,
            bsize: st.f_bsize as u32,
            namelen: st.f_namemax as u32,
            frsize: st.f_frsize as u32,
        })
    }
}

/// Link files have mode `---------T`: only those are worth an xattr read
/// to tell them from user files. (Empty, except while rebalance fills one
/// that is becoming the file.)
pub fn looks_like_link(st: &libc::stat) -> bool {
    st.st_mode == libc::S_IFREG | libc::S_ISVTX
}

pub fn read_linkto(path: &CStr) -> Option<Uuid> {
    sys::lgetxattr(path, &c(LINKTO_XATTR))
        .ok()
        .and_then(|v| Uuid::from_slice(&v).ok())
}

fn parse_dir_handle(text: &[u8]) -> Option<(Gfid, Vec<u8>)> {
    if text.len() < 34 || text[32] != b'/' {
        return None;
    }
    let parent = Gfid::from_hex(std::str::from_utf8(&text[..32]).ok()?)?;
    let name = text[33..].to_vec();
    cairn_common::names::check_name(&name).ok()?;
    Some((parent, name))
}

fn read_gfid_fd(fd: BorrowedFd<'_>) -> Option<Gfid> {
    sys::fgetxattr(fd, &c(GFID_XATTR))
        .ok()
        .and_then(|v| Gfid::from_slice(&v))
}

#[cfg(test)]
mod tests;
