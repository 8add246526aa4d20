//! Readdir across subvolumes: one subvolume after another, directories from
//! subvolume 0 only (they exist everywhere), files from wherever they live,
//! link files hidden. A cookie is the subvolume index above that brick's
//! 56-bit cookie, so resumed listings neither skip nor repeat.

use super::{cookie_of, split_cookie, Distribute, Errno, Place};
use crate::layer::FopResult;
use bytes::Bytes;
use cairn_common::proto::{Fop, Reply};
use cairn_common::Gfid;

impl Distribute {
    pub(super) async fn readdir(&self, gfid: Gfid, cookie: u64, plus: bool, max_entries: u32) -> FopResult {
        let (mut idx, mut brick_cookie) = split_cookie(cookie);
        let count = self.kids().len();
        let mut out = Vec::new();
        let want = max_entries.clamp(1, 4096) as usize;
        while idx < count && out.len() < want {
            let op = Fop::Readdir {
                gfid,
                cookie: brick_cookie,
                plus,
                max_entries: (want - out.len()) as u32,
            };
            let (entries, eof) = match self.on(idx, op).await {
                Ok((Reply::Dir { entries, eof }, _)) => (entries, eof),
                Ok(_) => return Err(Errno(libc::EIO)),
                // A copy missing on a later subvolume holds no files.
                Err(Errno(libc::ESTALE | libc::ENOENT)) if idx > 0 => (Vec::new(), true),
                Err(e) => return Err(e),
            };
            for mut e in entries {
                let raw = e.cookie;
                let is_dir = e.kind == libc::S_IFDIR;
                let keep = e.linkto.is_none() && (idx == 0 || !is_dir);
                if keep {
                    if !matches!(e.name.as_slice(), b"." | b"..") {
                        self.remember(e.gfid, if is_dir { Place::Dir } else { Place::File(idx) });
                    }
                    e.cookie = cookie_of(idx, raw);
                    out.push(e);
                } else if let Some(last) = out.last_mut() {
                    // A hidden entry still moves the resume point past it.
                    last.cookie = cookie_of(idx, raw);
                }
                brick_cookie = raw;
            }
            if !eof {
                continue;
            }
            idx += 1;
            brick_cookie = 0;
            // The first entry of the next subvolume resumes from its start:
            // make the last kept entry's cookie say so.
            if let Some(last) = out.last_mut() {
                if idx < count {
                    last.cookie = cookie_of(idx, 0);
                }
            }
        }
        let eof = idx >= count;
        Ok((Reply::Dir { entries: out, eof }, Bytes::new()))
    }
}
