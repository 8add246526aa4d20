//! The wire protocol: request and reply headers exchanged on one QUIC stream
//! per request. Headers are postcard-encoded; bulk data (read and write
//! payloads) travels as raw bytes after the header and never through serde.
//!
//! postcard is not self-describing, so: only append enum variants, never
//! reorder them, and bump [`PROTOCOL_VERSION`] (and the ALPN) on any change
//! an older peer could misread.

use crate::Gfid;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Protocol major version; it also rides in the ALPN id, so a peer of another
/// version fails the TLS handshake with a clear "no application protocol".
pub const PROTOCOL_VERSION: u32 = 1;
pub const ALPN: &[u8] = b"cairn/1";

/// Upper bound on an encoded header; checked before allocating.
pub const MAX_HEADER_LEN: usize = 256 * 1024;
/// Largest read or write payload one request may carry.
pub const MAX_IO_SIZE: u32 = 4 << 20;
/// The block `Fop::Checksum` sums (gluster's data-heal unit too).
pub const CHECKSUM_BLOCK: u32 = 128 << 10;
/// Most bytes one `Fop::Checksum` covers.
pub const MAX_CHECKSUM_SPAN: u32 = 64 << 20;
/// Largest xattr value (the Linux limit).
pub const MAX_XATTR_SIZE: usize = 64 * 1024;

/// What a client asks of a node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Request {
    /// First request on every connection.
    Hello { version: u32 },
    /// A file operation on one brick served by this node.
    Fop { brick: Uuid, op: Fop },
    /// Pool and volume management.
    Admin(AdminRequest),
    /// Node-to-node traffic of the trusted pool (consensus, joins, fan-out).
    Pool(PoolRequest),
    /// A file operation a user of a mount asked for: `caller` is that
    /// user's uid and gid, which `server.root-squash` maps. A mount's own
    /// work (background heals, unlocks) goes as a plain `Fop`, which is
    /// never squashed, as gluster exempts its internal clients.
    FopAs { brick: Uuid, op: Fop, caller: Creds },
}

/// What pool members ask each other. Only node certificates may send these,
/// except [`PoolRequest::Join`], which a prober sends before the joining
/// node shares its CA.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum PoolRequest {
    /// A consensus message (vote, append, snapshot chunk), JSON-encoded by
    /// the consensus layer; `kind` says which.
    Raft { kind: RaftKind, body: Vec<u8> },
    /// A configuration change for the leader to commit (JSON command).
    Propose { command: Vec<u8> },
    /// Become a member of the prober's pool: take its CA and identity.
    Join {
        pool_id: Uuid,
        ca_pem: String,
        ca_key_pem: String,
    },
    /// Leader only: add a node that accepted a Join as a voting member.
    AddMember { id: Uuid, address: String },
    /// Leader only: remove a member.
    RemoveMember { id: Uuid },
    /// You were detached from the pool: become a pool of your own.
    Leave { pool_id: Uuid },
    /// Check that these bricks (all on the receiving node) can be created.
    CheckBricks { paths: Vec<String>, force: bool },
    /// Answer an admin request for the receiving node's own bricks only
    /// (status, profile, top): the coordinator merges the answers.
    Local(AdminRequest),
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum RaftKind {
    Vote,
    Append,
    Snapshot,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum PoolReply {
    /// A consensus reply (JSON-encoded by the consensus layer).
    Raft(Vec<u8>),
    /// Join accepted: who the new member is.
    Joined {
        id: Uuid,
        address: String,
    },
    Done,
    /// A proposal was committed at log `index`; `result` is the command's
    /// own verdict (a refused command is committed but changes nothing).
    Committed {
        result: Result<(), String>,
        index: u64,
    },
    /// A node's part of a report.
    Report(AdminReply),
}

/// Seconds and nanoseconds since the epoch (ordered by time).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Timespec {
    pub sec: i64,
    pub nsec: u32,
}

/// A time to set: the server's clock, or a given value.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum TimeSet {
    Now,
    At(Timespec),
}

/// Attributes of an inode as the brick stores them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Attr {
    pub gfid: Gfid,
    /// `st_mode`: file type and permission bits.
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub size: u64,
    /// 512-byte blocks allocated (shows sparseness).
    pub blocks: u64,
    pub blksize: u32,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
    /// Set on a distribute link file: the subvolume holding the data.
    pub linkto: Option<Uuid>,
}

impl Attr {
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }
}

/// The changes of a setattr; `None` leaves a field alone (UTIME_OMIT).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
}

/// Who creates an entry: the new inode's owner.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Creds {
    pub uid: u32,
    pub gid: u32,
}

/// One directory entry; `cookie` resumes the listing after it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DirEntry {
    pub cookie: u64,
    pub name: Vec<u8>,
    pub gfid: Gfid,
    /// `st_mode` file-type bits.
    pub kind: u32,
    /// Present for readdirplus.
    pub attr: Option<Attr>,
    /// Set on a distribute link file (which listings skip).
    pub linkto: Option<Uuid>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Statfs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum LockType {
    Read,
    Write,
    Unlock,
}

/// A POSIX record lock (or an flock, which FUSE sends as a whole-file lock).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockSpec {
    pub typ: LockType,
    pub start: u64,
    /// Inclusive; `u64::MAX` means to the end of the file.
    pub end: u64,
    pub pid: u32,
    /// The kernel's lock owner (one per process for fcntl locks, one per open
    /// file for flock).
    pub owner: u64,
}

/// File operations. Namespace operations name a parent gfid and an entry
/// name; inode operations name a gfid or an open handle.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Fop {
    Lookup {
        parent: Gfid,
        name: Vec<u8>,
    },
    GetAttr {
        gfid: Gfid,
    },
    SetAttr {
        gfid: Gfid,
        fh: Option<u64>,
        set: SetAttr,
    },
    Mknod {
        parent: Gfid,
        name: Vec<u8>,
        gfid: Gfid,
        mode: u32,
        umask: u32,
        rdev: u64,
        creds: Creds,
    },
    Mkdir {
        parent: Gfid,
        name: Vec<u8>,
        gfid: Gfid,
        mode: u32,
        umask: u32,
        creds: Creds,
    },
    Symlink {
        parent: Gfid,
        name: Vec<u8>,
        gfid: Gfid,
        target: Vec<u8>,
        creds: Creds,
    },
    Unlink {
        parent: Gfid,
        name: Vec<u8>,
    },
    Rmdir {
        parent: Gfid,
        name: Vec<u8>,
    },
    /// `flags`: RENAME_NOREPLACE / RENAME_EXCHANGE.
    Rename {
        parent: Gfid,
        name: Vec<u8>,
        new_parent: Gfid,
        new_name: Vec<u8>,
        flags: u32,
    },
    Link {
        gfid: Gfid,
        new_parent: Gfid,
        new_name: Vec<u8>,
    },
    Readlink {
        gfid: Gfid,
    },
    Open {
        gfid: Gfid,
        flags: i32,
    },
    Create {
        parent: Gfid,
        name: Vec<u8>,
        gfid: Gfid,
        mode: u32,
        umask: u32,
        flags: i32,
        creds: Creds,
    },
    Read {
        fh: u64,
        offset: u64,
        size: u32,
    },
    /// `len` payload bytes follow the header.
    Write {
        fh: u64,
        offset: u64,
        len: u32,
    },
    Flush {
        fh: u64,
        lock_owner: u64,
    },
    Release {
        fh: u64,
    },
    Fsync {
        fh: u64,
        datasync: bool,
    },
    Readdir {
        gfid: Gfid,
        cookie: u64,
        plus: bool,
        max_entries: u32,
    },
    Statfs,
    GetXattr {
        gfid: Gfid,
        name: Vec<u8>,
    },
    SetXattr {
        gfid: Gfid,
        name: Vec<u8>,
        value: Vec<u8>,
        flags: i32,
    },
    ListXattr {
        gfid: Gfid,
    },
    RemoveXattr {
        gfid: Gfid,
        name: Vec<u8>,
    },
    Fallocate {
        fh: u64,
        mode: i32,
        offset: u64,
        len: u64,
    },
    Lseek {
        fh: u64,
        offset: i64,
        whence: i32,
    },
    GetLk {
        fh: u64,
        lock: LockSpec,
    },
    SetLk {
        fh: u64,
        lock: LockSpec,
        wait: bool,
    },
    CopyFileRange {
        fh_in: u64,
        offset_in: u64,
        fh_out: u64,
        offset_out: u64,
        len: u64,
    },
    Fsyncdir {
        gfid: Gfid,
        datasync: bool,
    },
    /// A directory's distribute layout entry on this brick (`Reply::Xattr`,
    /// ENODATA when it has none).
    LayoutGet {
        gfid: Gfid,
    },
    LayoutSet {
        gfid: Gfid,
        entry: Vec<u8>,
    },
    /// Creates a distribute link file: an empty placeholder carrying the
    /// file's gfid and the id of the subvolume that holds its data.
    MakeLink {
        parent: Gfid,
        name: Vec<u8>,
        gfid: Gfid,
        target: Uuid,
    },
    /// Adds `deltas` to replication counters (`trusted.cairn.afr.*`: data,
    /// metadata, entry) atomically and returns every counter on the inode
    /// afterwards; all-zero deltas only read. Replicate's changelog.
    Xattrop {
        gfid: Gfid,
        deltas: Vec<(String, [i32; 3])>,
    },
    /// Checksums of the `CHECKSUM_BLOCK`-sized blocks of an open file in
    /// `[offset, offset + len)` (xxh3; `None` for a block of zeros or a
    /// hole): data heal compares them and copies only what differs.
    Checksum {
        fh: u64,
        offset: u64,
        len: u32,
    },
    /// Takes (`lock`) or releases a whole-inode lock in `domain`, held by
    /// (this connection, `owner`) and dropped if the connection dies.
    /// Replicate serialises writers with it; unrelated to POSIX locks.
    InodeLk {
        gfid: Gfid,
        domain: String,
        owner: u64,
        lock: bool,
        wait: bool,
    },
    /// The same for one name in a directory (creates, unlinks, renames).
    EntryLk {
        parent: Gfid,
        name: Vec<u8>,
        domain: String,
        owner: u64,
        lock: bool,
        wait: bool,
    },
    /// Rebalance: holds (`freeze`) or lets go of changes to a file being
    /// migrated away from this brick. While held, writes, truncates and
    /// attribute changes wait (at most a minute; the hold also ends with
    /// the holder's connection); the reply comes once changes already
    /// under way have finished. EBUSY if another migrator holds it.
    MigrateFreeze {
        gfid: Gfid,
        freeze: bool,
    },
    /// Rebalance: the file now lives on subvolume `target`. Only the
    /// holder of the freeze may say so; from then on every request on the
    /// file's open handles here (and opens of it) fails with EREMCHG, so
    /// clients find it again where it went and nothing reaches the old copy.
    MigrateDone {
        gfid: Gfid,
        target: Uuid,
    },
    /// Sets (`Some`) or removes (`None`) a file's distribute link target:
    /// rebalance turns the link file it filled with data into the file.
    SetLinkto {
        gfid: Gfid,
        target: Option<Uuid>,
    },
    /// Replicate's transaction start in one round trip instead of one per
    /// lock plus one for the pre-op: takes every lock of `locks` in order
    /// without waiting, then adds every counter delta of `marks` (as
    /// `Xattrop`). All or nothing: on a failure (EAGAIN when another holder
    /// has a lock) what was taken or added is given back before the error.
    TxnBegin {
        domain: String,
        owner: u64,
        locks: Vec<TxnLock>,
        marks: Vec<TxnMark>,
    },
    /// Its end in one round trip: adds every delta of `marks` (each tried,
    /// the first failure reported), then releases `locks` whatever happened.
    TxnEnd {
        domain: String,
        owner: u64,
        locks: Vec<TxnLock>,
        marks: Vec<TxnMark>,
    },
    /// `Lookup` that also answers the found inode's replication counters
    /// (as an `Xattrop` without deltas): replicate judges a cold lookup in
    /// one round trip instead of two.
    LookupCounters {
        parent: Gfid,
        name: Vec<u8>,
    },
    /// `TxnBegin` and then, only if it succeeded, `Create` of a name whose
    /// gfid the caller just chose, in one round trip instead of two: every
    /// replica that takes part marks the change's start itself before
    /// making it. Answered `Reply::TxnCreated` when the transaction began
    /// (with the create's own outcome: the locks and marks are held either
    /// way, for `TxnEnd`); an error means nothing was taken or made.
    TxnCreate {
        domain: String,
        owner: u64,
        locks: Vec<TxnLock>,
        marks: Vec<TxnMark>,
        parent: Gfid,
        name: Vec<u8>,
        gfid: Gfid,
        mode: u32,
        umask: u32,
        flags: i32,
        creds: Creds,
    },
    /// `Open`, and when the file holds at most `max` bytes, its whole
    /// content with it (`Reply::OpenedWhole`; a larger file answers
    /// `Reply::Opened`): a cold read of a small file then needs no `Read`
    /// round trip. Checked and counted as an open.
    OpenRead {
        gfid: Gfid,
        flags: i32,
        max: u32,
    },
}

/// A replicate lock named by a transaction (`InodeLk` / `EntryLk` targets).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TxnLock {
    Inode(Gfid),
    Entry(Gfid, Vec<u8>),
}

/// Counter deltas for one inode, as an `Xattrop` carries them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnMark {
    pub gfid: Gfid,
    pub deltas: Vec<(String, [i32; 3])>,
}

impl Fop {
    /// A `TxnBegin` and a `Create` as one `TxnCreate`; None for others.
    pub fn join_txn_create(begin: Fop, create: Fop) -> Option<Fop> {
        let (
            Fop::TxnBegin {
                domain,
                owner,
                locks,
                marks,
            },
            Fop::Create {
                parent,
                name,
                gfid,
                mode,
                umask,
                flags,
                creds,
            },
        ) = (begin, create)
        else {
            return None;
        };
        Some(Fop::TxnCreate {
            domain,
            owner,
            locks,
            marks,
            parent,
            name,
            gfid,
            mode,
            umask,
            flags,
            creds,
        })
    }

    /// A `TxnCreate`'s parts: its transaction's start and its create (the
    /// inverse of `join_txn_create`).
    pub fn split_txn_create(self) -> Option<(Fop, Fop)> {
        let Fop::TxnCreate {
            domain,
            owner,
            locks,
            marks,
            parent,
            name,
            gfid,
            mode,
            umask,
            flags,
            creds,
        } = self
        else {
            return None;
        };
        let begin = Fop::TxnBegin {
            domain,
            owner,
            locks,
            marks,
        };
        let create = Fop::Create {
            parent,
            name,
            gfid,
            mode,
            umask,
            flags,
            creds,
        };
        Some((begin, create))
    }

    /// Short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Fop::Lookup { .. } => "lookup",
            Fop::GetAttr { .. } => "getattr",
            Fop::SetAttr { .. } => "setattr",
            Fop::Mknod { .. } => "mknod",
            Fop::Mkdir { .. } => "mkdir",
            Fop::Symlink { .. } => "symlink",
            Fop::Unlink { .. } => "unlink",
            Fop::Rmdir { .. } => "rmdir",
            Fop::Rename { .. } => "rename",
            Fop::Link { .. } => "link",
            Fop::Readlink { .. } => "readlink",
            Fop::Open { .. } => "open",
            Fop::Create { .. } => "create",
            Fop::Read { .. } => "read",
            Fop::Write { .. } => "write",
            Fop::Flush { .. } => "flush",
            Fop::Release { .. } => "release",
            Fop::Fsync { .. } => "fsync",
            Fop::Readdir { .. } => "readdir",
            Fop::Statfs => "statfs",
            Fop::GetXattr { .. } => "getxattr",
            Fop::SetXattr { .. } => "setxattr",
            Fop::ListXattr { .. } => "listxattr",
            Fop::RemoveXattr { .. } => "removexattr",
            Fop::Fallocate { .. } => "fallocate",
            Fop::Lseek { .. } => "lseek",
            Fop::GetLk { .. } => "getlk",
            Fop::SetLk { .. } => "setlk",
            Fop::CopyFileRange { .. } => "copy_file_range",
            Fop::Fsyncdir { .. } => "fsyncdir",
            Fop::LayoutGet { .. } => "layout_get",
            Fop::LayoutSet { .. } => "layout_set",
            Fop::MakeLink { .. } => "make_link",
            Fop::Xattrop { .. } => "xattrop",
            Fop::Checksum { .. } => "checksum",
            Fop::InodeLk { .. } => "inodelk",
            Fop::EntryLk { .. } => "entrylk",
            Fop::MigrateFreeze { .. } => "migrate_freeze",
            Fop::MigrateDone { .. } => "migrate_done",
            Fop::SetLinkto { .. } => "set_linkto",
            Fop::TxnBegin { .. } => "txn_begin",
            Fop::TxnEnd { .. } => "txn_end",
            // Still a lookup to whoever counts calls (`volume profile`).
            Fop::LookupCounters { .. } => "lookup",
            Fop::TxnCreate { .. } => "txn_create",
            // An open to whoever counts calls; the bytes count as read.
            Fop::OpenRead { .. } => "open",
        }
    }

    /// Gives back what the server holds for the caller (a lock, a freeze,
    /// an open file, a transaction's locks): it must reach the server even
    /// when the node looks unresponsive, or what it holds stays held for as
    /// long as the connection lives.
    pub fn releases(&self) -> bool {
        match self {
            Fop::TxnEnd { .. } | Fop::Release { .. } | Fop::Flush { .. } => true,
            Fop::InodeLk { lock, .. } | Fop::EntryLk { lock, .. } => !lock,
            Fop::MigrateFreeze { freeze, .. } => !freeze,
            Fop::SetLk { lock, .. } => lock.typ == LockType::Unlock,
            _ => false,
        }
    }

    /// Only reads: anything else may change what a listing says (names,
    /// or the attributes readdirplus carries), so the client drops the
    /// listing remainders it kept.
    pub fn only_reads(&self) -> bool {
        match self {
            Fop::Open { flags, .. } => flags & libc::O_TRUNC == 0,
            Fop::Lookup { .. }
            | Fop::LookupCounters { .. }
            | Fop::GetAttr { .. }
            | Fop::Readlink { .. }
            | Fop::OpenRead { .. }
            | Fop::Read { .. }
            | Fop::Checksum { .. }
            | Fop::Flush { .. }
            | Fop::Release { .. }
            | Fop::Fsync { .. }
            | Fop::Fsyncdir { .. }
            | Fop::Readdir { .. }
            | Fop::Statfs
            | Fop::GetXattr { .. }
            | Fop::ListXattr { .. }
            | Fop::Lseek { .. }
            | Fop::GetLk { .. } => true,
            _ => false,
        }
    }

    /// Safe to send again when the first attempt's fate is unknown (the
    /// connection died before the reply): repeating it changes nothing.
    /// Writes qualify (same bytes, same offset) except on O_APPEND files,
    /// which the protocol client tracks itself.
    pub fn is_idempotent(&self) -> bool {
        matches!(
            self,
            Fop::Lookup { .. }
                | Fop::LookupCounters { .. }
                | Fop::GetAttr { .. }
                | Fop::Readlink { .. }
                | Fop::Open { .. }
                | Fop::OpenRead { .. }
                | Fop::Read { .. }
                | Fop::Checksum { .. }
                | Fop::Write { .. }
                | Fop::Fsync { .. }
                | Fop::Readdir { .. }
                | Fop::Statfs
                | Fop::GetXattr { .. }
                | Fop::ListXattr { .. }
                | Fop::Lseek { .. }
                | Fop::GetLk { .. }
                | Fop::Fsyncdir { .. }
                | Fop::LayoutGet { .. }
                | Fop::LayoutSet { .. }
        )
    }

    /// The open-file handles this request names (copy_file_range names two),
    /// for layers that keep their own handles and map them to their children's.
    pub fn handles(&self) -> Vec<u64> {
        match self {
            Fop::SetAttr { fh: Some(fh), .. }
            | Fop::Read { fh, .. }
            | Fop::Checksum { fh, .. }
            | Fop::Write { fh, .. }
            | Fop::Flush { fh, .. }
            | Fop::Release { fh }
            | Fop::Fsync { fh, .. }
            | Fop::Fallocate { fh, .. }
            | Fop::Lseek { fh, .. }
            | Fop::GetLk { fh, .. }
            | Fop::SetLk { fh, .. } => vec![*fh],
            Fop::CopyFileRange { fh_in, fh_out, .. } => vec![*fh_in, *fh_out],
            _ => Vec::new(),
        }
    }

    /// The same request with every handle replaced by `map(handle)`.
    pub fn map_handles(mut self, mut map: impl FnMut(u64) -> u64) -> Fop {
        match &mut self {
            Fop::SetAttr { fh: Some(fh), .. }
            | Fop::Read { fh, .. }
            | Fop::Checksum { fh, .. }
            | Fop::Write { fh, .. }
            | Fop::Flush { fh, .. }
            | Fop::Release { fh }
            | Fop::Fsync { fh, .. }
            | Fop::Fallocate { fh, .. }
            | Fop::Lseek { fh, .. }
            | Fop::GetLk { fh, .. }
            | Fop::SetLk { fh, .. } => *fh = map(*fh),
            Fop::CopyFileRange { fh_in, fh_out, .. } => {
                *fh_in = map(*fh_in);
                *fh_out = map(*fh_out);
            }
            _ => {}
        }
        self
    }

    /// Bytes of raw payload that follow this request's header.
    pub fn payload_len(&self) -> u64 {
        match self {
            Fop::Write { len, .. } => u64::from(*len),
            _ => 0,
        }
    }
}

/// Volume life cycle, as gluster shows it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum VolumeState {
    Created,
    Started,
    Stopped,
}

impl std::fmt::Display for VolumeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VolumeState::Created => "Created",
            VolumeState::Started => "Started",
            VolumeState::Stopped => "Stopped",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BrickSpec {
    pub id: Uuid,
    /// Canonical `host:port` of the node serving it.
    pub node: String,
    pub path: String,
}

impl BrickSpec {
    pub fn label(&self) -> String {
        // gluster prints bricks by host name, without the management port.
        let host = crate::addr::split_host_port(&self.node)
            .map(|(h, _)| h)
            .unwrap_or_else(|_| self.node.clone());
        format!("{host}:{}", self.path)
    }
}

/// A volume's definition: what a mount fetches to find its bricks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VolumeSpec {
    pub name: String,
    pub id: Uuid,
    pub state: VolumeState,
    pub bricks: Vec<BrickSpec>,
    pub options: BTreeMap<String, String>,
    /// Bumped on every change so mounts can tell a newer spec.
    pub version: u64,
    /// Bricks per replica set (1: no replication); consecutive bricks in
    /// `bricks` form a set, as in gluster.
    #[serde(default = "one")]
    pub replica: u32,
    /// The last brick of each replica set is an arbiter (names and
    /// metadata, no data).
    #[serde(default)]
    pub arbiter: bool,
    /// The layout generation lookups trust: a directory whose layout
    /// carries it has every file where the layout says (or a link file
    /// there). A completed rebalance moves it to the generation its
    /// fix-layout wrote.
    #[serde(default = "initial_commit")]
    pub layout_commit: u32,
    /// Subvolumes (named by their first brick's id) that `remove-brick
    /// start` is draining: new layouts give them no range.
    #[serde(default)]
    pub decommissioned: Vec<Uuid>,
    /// The volume's rebalance or remove-brick task, running or finished.
    #[serde(default)]
    pub task: Option<RebalanceTask>,
}

fn one() -> u32 {
    1
}

fn initial_commit() -> u32 {
    crate::layout::INITIAL_COMMIT
}

/// What a rebalance task does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum RebalanceKind {
    /// `rebalance VOL fix-layout start`: new layouts, no data moves.
    FixLayout,
    /// `rebalance VOL start [force]`: new layouts, then every file to its
    /// hashed subvolume. Without `force`, a file is not moved onto a
    /// subvolume with less free space (in percent) than its source.
    Migrate { force: bool },
    /// `remove-brick VOL BRICKS start`: the bricks' subvolumes
    /// (`VolumeSpec::decommissioned`) are drained onto the others.
    RemoveBrick { bricks: Vec<Uuid> },
}

/// A rebalance or remove-brick run, as the pool configuration records it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RebalanceTask {
    /// gluster prints it as the task's `ID`.
    pub id: Uuid,
    pub kind: RebalanceKind,
    /// The layout generation this task's fix-layout writes; it becomes
    /// the volume's `layout_commit` when every node has migrated
    /// everything (a plain fix-layout never settles, as gluster's).
    pub commit: u32,
    /// Unix seconds.
    pub started: i64,
    /// `rebalance stop` / `remove-brick stop` was committed.
    pub stopped: bool,
    /// Nodes (`host:port`) that run a worker for this task: those with
    /// bricks of the volume when it started.
    pub nodes: Vec<String>,
    /// What each node reported when its worker finished (by node address).
    pub finished: BTreeMap<String, NodeRebalance>,
}

/// A node's rebalance worker state, as gluster's status column says it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum TaskState {
    NotStarted,
    InProgress,
    Stopped,
    Completed,
    Failed,
}

/// One node's row of `rebalance status` / `remove-brick status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeRebalance {
    /// `host:port`.
    pub node: String,
    /// Files moved and their bytes.
    pub files: u64,
    pub bytes: u64,
    /// Entries looked at.
    pub scanned: u64,
    pub failures: u64,
    pub skipped: u64,
    /// Directories whose layout was rewritten.
    pub fixed_dirs: u64,
    pub state: TaskState,
    /// Seconds the worker has run.
    pub run_time_s: u64,
    /// Estimated seconds left, when the worker can tell.
    pub estimate_s: Option<u64>,
    /// Did the node answer? (Else the row is what the pool recorded, or
    /// empty.)
    pub reachable: bool,
}

/// `rebalance VOL status` / `remove-brick VOL … status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RebalanceStatus {
    pub volume: String,
    pub task: Option<RebalanceTask>,
    pub nodes: Vec<NodeRebalance>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum RebalanceAction {
    FixLayoutStart,
    Start { force: bool },
    Stop,
    Status,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum RemoveBrickAction {
    Start,
    Status,
    Stop,
    Commit,
    Force,
}

impl VolumeSpec {
    /// gluster's volume type name.
    pub fn type_name(&self) -> &'static str {
        match (self.replica > 1, self.bricks.len() > self.replica as usize) {
            (false, _) => "Distribute",
            (true, false) => "Replicate",
            (true, true) => "Distributed-Replicate",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BrickStatus {
    pub brick: BrickSpec,
    pub port: Option<u16>,
    pub online: bool,
    pub pid: Option<u32>,
    /// The brick's file system, for `volume status VOL detail`.
    pub detail: Option<BrickDetail>,
    /// Connections using the brick, for `volume status VOL clients`.
    pub clients: Vec<BrickClient>,
    /// The serving process's memory, for `volume status VOL mem`.
    pub memory: Option<ProcessMemory>,
    /// Did the brick's node answer? (An unreachable node's bricks show
    /// offline.)
    pub reachable: bool,
    /// Why the brick is not served, as its node says.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BrickClient {
    /// `host:port` the connection comes from.
    pub address: String,
    /// The certificate's identity (`client-NAME` or `node-ID`).
    pub identity: String,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessMemory {
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
    pub virtual_kib: u64,
    pub threads: u64,
}

/// Where a brick lives and how full it is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BrickDetail {
    pub fs_type: String,
    pub device: String,
    pub mount_options: String,
    pub free_bytes: u64,
    pub total_bytes: u64,
    pub inodes: u64,
    pub free_inodes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VolumeStatus {
    pub name: String,
    pub state: VolumeState,
    pub bricks: Vec<BrickStatus>,
    /// The volume's daemons on each node (the self-heal daemon).
    #[serde(default)]
    pub daemons: Vec<DaemonStatus>,
}

/// A volume daemon's line in `volume status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DaemonStatus {
    /// As gluster names it: `Self-heal Daemon`.
    pub name: String,
    /// The node's `host:port`.
    pub node: String,
    pub online: bool,
    pub pid: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum AdminRequest {
    VolumeCreate {
        name: String,
        bricks: Vec<String>,
        force: bool,
        /// Bricks per replica set (1: plain distribute).
        replica: u32,
        arbiter: bool,
    },
    VolumeStart {
        name: String,
        force: bool,
    },
    VolumeStop {
        name: String,
        force: bool,
    },
    VolumeDelete {
        name: String,
    },
    VolumeInfo {
        name: Option<String>,
    },
    VolumeStatus {
        name: Option<String>,
    },
    /// The spec a mount needs; clients may ask this, unlike the rest.
    GetVolume {
        name: String,
    },
    VolumeSet {
        name: String,
        key: String,
        value: String,
    },
    /// `key` None: every option.
    VolumeGet {
        name: String,
        key: Option<String>,
    },
    /// `key` None: every reconfigured option.
    VolumeReset {
        name: String,
        key: Option<String>,
    },
    VolumeProfile {
        name: String,
        action: ProfileAction,
    },
    /// `metric`: open, read, write, opendir, readdir, read-perf, write-perf.
    VolumeTop {
        name: String,
        metric: String,
        brick: Option<String>,
        count: u32,
        block_size: u64,
        blocks: u64,
    },
    /// A client certificate signed by the pool CA (key made by the node).
    ClientCertIssue {
        name: String,
    },
    /// Refuses a client certificate name from now on.
    ClientCertRevoke {
        name: String,
    },
    PeerProbe {
        host: String,
    },
    PeerDetach {
        host: String,
        force: bool,
    },
    /// Every pool member and whether this node reaches it (`peer status`,
    /// `pool list`).
    PeerList,
    /// Entries each brick has pending heal (`volume heal VOL info`), or only
    /// those in split-brain.
    VolumeHealInfo {
        name: String,
        split_brain: bool,
    },
    /// `volume heal VOL [full]`: start the self-heal daemons' crawl now.
    VolumeHeal {
        name: String,
        full: bool,
    },
    /// `volume heal VOL statistics [heal-count]`: crawl history and what
    /// is left, per brick.
    VolumeHealStatistics {
        name: String,
        /// `heal-count`: only what is left (the report is the same; the
        /// CLI shows less).
        count_only: bool,
    },
    /// `volume add-brick VOL [replica N] BRICKS… [force]`.
    VolumeAddBrick {
        name: String,
        bricks: Vec<String>,
        /// A new replica count (gluster's `replica N`); None keeps it.
        replica: Option<u32>,
        force: bool,
    },
    /// `volume remove-brick VOL BRICKS… start|status|stop|commit|force`.
    VolumeRemoveBrick {
        name: String,
        bricks: Vec<String>,
        action: RemoveBrickAction,
    },
    /// `volume replace-brick VOL OLD NEW commit force`.
    VolumeReplaceBrick {
        name: String,
        old: String,
        new: String,
    },
    /// `volume rebalance VOL fix-layout start | start [force] | stop | status`.
    VolumeRebalance {
        name: String,
        action: RebalanceAction,
    },
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum ProfileAction {
    Start,
    Info,
    Stop,
}

/// One fop's figures in a profile window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FopProfile {
    pub op: String,
    pub calls: u64,
    pub errors: u64,
    pub avg_ns: u64,
    pub min_ns: u64,
    pub max_ns: u64,
    pub total_ns: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProfileWindow {
    pub duration_s: u64,
    pub fops: Vec<FopProfile>,
    /// Reads and writes per block size: index i counts sizes of 2^i bytes and up.
    pub reads: Vec<u64>,
    pub writes: Vec<u64>,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BrickProfile {
    pub brick: String,
    pub cumulative: ProfileWindow,
    pub interval_number: u64,
    pub interval: ProfileWindow,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BrickTop {
    pub brick: String,
    /// (count, path) busiest first.
    pub entries: Vec<(u64, String)>,
    /// read-perf / write-perf: the brick's measured throughput.
    pub throughput_mbps: Option<f64>,
    pub seconds: Option<f64>,
}

impl AdminRequest {
    /// May a client (mount) certificate ask this? Only node credentials
    /// (the CLI on a pool member) may change the configuration.
    pub fn allowed_for_clients(&self) -> bool {
        matches!(self, AdminRequest::GetVolume { .. })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum AdminReply {
    Done {
        message: String,
    },
    Volumes(Vec<VolumeSpec>),
    Status(Vec<VolumeStatus>),
    Spec(VolumeSpec),
    /// (key, effective value, is it the default?)
    Options(Vec<(String, String, bool)>),
    Profile(Vec<BrickProfile>),
    Top(Vec<BrickTop>),
    ClientCert {
        ca_pem: String,
        cert_pem: String,
        key_pem: String,
    },
    Peers(Vec<PeerInfo>),
    HealInfo(Vec<BrickHealInfo>),
    HealStats(Vec<BrickHealStats>),
    Rebalance(Box<RebalanceStatus>),
}

/// One brick's part of `volume heal VOL info`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BrickHealInfo {
    pub brick: String,
    pub brick_id: Uuid,
    /// `None`: the brick's node did not answer.
    pub entries: Option<Vec<HealEntry>>,
}

/// One brick's self-heal daemon record, for `volume heal VOL statistics`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BrickHealStats {
    pub brick: String,
    pub brick_id: Uuid,
    /// Entries in the brick's heal index now (`None`: its node did not
    /// answer).
    pub pending: Option<u64>,
    /// Bytes of file data behind those entries (what data heal may copy
    /// at most).
    pub pending_bytes: u64,
    /// The latest crawls, oldest first; the last may be running.
    pub crawls: Vec<CrawlRecord>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum CrawlKind {
    Index,
    Full,
}

/// One crawl of the self-heal daemon over a brick.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CrawlRecord {
    pub kind: CrawlKind,
    /// Unix seconds.
    pub started: i64,
    /// `None` while it runs.
    pub ended: Option<i64>,
    /// Entries it set out to heal (an index crawl: the index at its start).
    pub entries: u64,
    pub healed: u64,
    pub split_brain: u64,
    pub failed: u64,
    /// File data copied, in bytes.
    pub bytes: u64,
}

/// An inode a brick holds replication counters for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HealEntry {
    pub gfid: Gfid,
    /// Its path, when a brick of the set knows it (else gluster's
    /// `<gfid:…>` form is shown).
    pub path: Option<String>,
    pub counters: Vec<(String, [i32; 3])>,
    pub split_brain: bool,
}

/// One pool member as `peer status` / `pool list` show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerInfo {
    pub id: Uuid,
    /// `host:port` it was probed by.
    pub address: String,
    pub connected: bool,
    /// The node answering the request.
    pub is_self: bool,
}

/// A failed request: an errno the mount passes to the application, and a
/// message for logs and the CLI.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorReply {
    pub errno: i32,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Reply {
    Hello {
        version: u32,
        node_id: Uuid,
    },
    Empty,
    Entry(Attr),
    Attr(Attr),
    Opened {
        fh: u64,
    },
    Created {
        attr: Attr,
        fh: u64,
    },
    /// `len` payload bytes follow the header.
    Data {
        len: u32,
    },
    Written {
        len: u32,
    },
    Link(Vec<u8>),
    Dir {
        entries: Vec<DirEntry>,
        eof: bool,
    },
    Statfs(Statfs),
    Xattr(Vec<u8>),
    XattrNames(Vec<Vec<u8>>),
    Offset(u64),
    Lock(Option<LockSpec>),
    Admin(AdminReply),
    Pool(PoolReply),
    /// Replication counters after an `Xattrop`, by xattr name.
    Counters(Vec<(String, [i32; 3])>),
    /// Block checksums (`Fop::Checksum`).
    Checksums(Vec<Option<u64>>),
    /// `Fop::LookupCounters`: the entry, and its counters unless they
    /// could not be read (the caller then asks with an `Xattrop`).
    EntryCounters {
        attr: Attr,
        counters: Option<Vec<(String, [i32; 3])>>,
    },
    /// `Fop::TxnEnd` with marks: each marked inode's attributes after the
    /// change (those the brick could read), so the client knows a
    /// directory's new times without asking again.
    MarkedAttrs(Vec<Attr>),
    /// `Fop::TxnCreate` began: the create's outcome, as `Created` would
    /// answer it (the new file and its handle) or the error it met.
    TxnCreated(Result<(Attr, u64), ErrorReply>),
    /// `Fop::OpenRead` of a file small enough: its handle, and its whole
    /// content (`len` payload bytes) as read just after the open.
    OpenedWhole {
        fh: u64,
        len: u32,
    },
}

// A reply lives for one request and is moved a few times; boxing the
// large variants (a volume spec with its task) would cost an allocation on
// every file operation's reply to save a copy on rare management ones.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Response {
    Ok(Reply),
    Err(ErrorReply),
}

impl Response {
    pub fn error(errno: i32, message: impl Into<String>) -> Response {
        Response::Err(ErrorReply {
            errno,
            message: message.into(),
        })
    }

    /// Raw payload bytes following this response's header.
    pub fn payload_len(&self) -> u64 {
        match self {
            Response::Ok(Reply::Data { len } | Reply::OpenedWhole { len, .. }) => u64::from(*len),
            _ => 0,
        }
    }
}
