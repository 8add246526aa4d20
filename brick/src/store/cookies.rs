//! Directory cookies that fit in 56 bits, so the distribute layer can put a
//! subvolume index above them and still hand the kernel one 63-bit offset.
//!
//! ext4 (with dir_index) positions entries by a 63-bit hash: those cookies
//! are shortened by 7 low bits, and a listing resumed from a shortened cookie
//! seeks to its start and skips the entries that come round again. Two
//! entries of one directory would have to share 56 hash bits for a resume
//! between them to skip one. File systems with small offsets (xfs, tmpfs)
//! keep their cookies exactly.

use super::{FsError, FsResult};

/// Largest cookie a brick hands out.
pub const MAX: u64 = (1 << 56) - 1;
const EXT4_SUPER_MAGIC: i64 = 0xEF53;
const HASH_SHIFT: u32 = 7;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieCodec {
    Exact,
    HashShortened,
}

impl CookieCodec {
    /// The codec for the file system with this `f_type`.
    pub fn for_fs_type(f_type: i64) -> CookieCodec {
        if f_type == EXT4_SUPER_MAGIC {
            CookieCodec::HashShortened
        } else {
            CookieCodec::Exact
        }
    }

    pub fn encode(self, offset: u64) -> FsResult<u64> {
        let c = match self {
            CookieCodec::HashShortened => offset >> HASH_SHIFT,
            CookieCodec::Exact => offset,
        };
        if c > MAX {
            return Err(FsError::new(libc::EOVERFLOW, "directory offset too large for a cookie"));
        }
        Ok(c)
    }

    /// Where to seek to resume after `cookie`.
    pub fn seek_position(self, cookie: u64) -> u64 {
        match self {
            CookieCodec::HashShortened => cookie << HASH_SHIFT,
            CookieCodec::Exact => cookie,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortened_cookies_fit_and_seek_at_or_before() {
        let c = CookieCodec::HashShortened;
        for off in [1u64, 0x1efce248700a9a17, 0x7fffffffffffffff] {
            let k = c.encode(off).unwrap();
            assert!(k <= MAX);
            assert!(c.seek_position(k) <= off);
        }
        assert_eq!(CookieCodec::Exact.encode(MAX + 1).unwrap_err().errno, libc::EOVERFLOW);
        assert_eq!(CookieCodec::Exact.encode(42).unwrap(), 42);
    }
}
