//! Elastic hashing: the name hash and the per-directory layouts that split
//! the 32-bit hash ring among a volume's subvolumes (replica sets).
//!
//! The hash is on-disk format (layouts store hash ranges), so every layout
//! records the algorithm it was made with ([`HASH_XXH3_HIGH32`]).

use xxhash_rust::xxh3::xxh3_64;

/// Hash algorithm id: the high 32 bits of XXH3-64 (seed 0) of the name.
pub const HASH_XXH3_HIGH32: u8 = 1;
/// Layout xattr format version.
pub const LAYOUT_FORMAT: u8 = 1;
/// The layout generation of a volume that has never been re-laid out.
pub const INITIAL_COMMIT: u32 = 1;
/// Encoded size of one subvolume's layout entry.
pub const ENCODED_LEN: usize = 16;

/// rsync writes `.NAME.XXXXXX` and renames it to `NAME`; hashing the temp
/// name as `NAME` (GlusterFS's default `^\.(.+)\.[^.]+$`) lands both on the
/// same subvolume, so the final rename needs no link file.
pub fn munge_rsync_name(name: &[u8]) -> &[u8] {
    if name.len() < 4 || name[0] != b'.' {
        return name;
    }
    match name.iter().rposition(|&b| b == b'.') {
        // Group 1 must be non-empty and the suffix must be non-empty and dot-free.
        Some(last) if last >= 2 && last + 1 < name.len() => &name[1..last],
        _ => name,
    }
}

/// The ring position of an entry name.
pub fn name_hash(name: &[u8]) -> u32 {
    (xxh3_64(munge_rsync_name(name)) >> 32) as u32
}

/// One subvolume's share of a directory's ring: `[start, end]` inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start: u32,
    pub end: u32,
}

impl Range {
    pub fn contains(&self, hash: u32) -> bool {
        self.start <= hash && hash <= self.end
    }

    /// Number of hash values covered (a range is never empty).
    pub fn size(&self) -> u64 {
        u64::from(self.end) - u64::from(self.start) + 1
    }
}

/// What a directory's copy on one subvolume records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayoutEntry {
    /// Which layout generation wrote it: fix-layout bumps it, so lookups
    /// can tell whether a file may predate the current layout.
    pub commit: u32,
    /// `None`: this subvolume takes no new files in this directory.
    pub range: Option<Range>,
}

impl LayoutEntry {
    /// `[format][hash][has-range][0][commit be32][start be32][end be32]`.
    pub fn encode(&self) -> [u8; ENCODED_LEN] {
        let mut out = [0u8; ENCODED_LEN];
        out[0] = LAYOUT_FORMAT;
        out[1] = HASH_XXH3_HIGH32;
        out[2] = u8::from(self.range.is_some());
        out[4..8].copy_from_slice(&self.commit.to_be_bytes());
        if let Some(r) = self.range {
            out[8..12].copy_from_slice(&r.start.to_be_bytes());
            out[12..16].copy_from_slice(&r.end.to_be_bytes());
        }
        out
    }

    /// Decodes an entry; `None` for anything malformed or of an unknown
    /// format or hash (treated like a missing layout, and repaired).
    pub fn decode(bytes: &[u8]) -> Option<LayoutEntry> {
        if bytes.len() != ENCODED_LEN || bytes[0] != LAYOUT_FORMAT || bytes[1] != HASH_XXH3_HIGH32 || bytes[2] > 1 {
            return None;
        }
        let word = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        let range = if bytes[2] == 1 {
            let (start, end) = (word(8), word(12));
            if start > end {
                return None;
            }
            Some(Range { start, end })
        } else {
            None
        };
        Some(LayoutEntry { commit: word(4), range })
    }
}

/// Splits the ring among subvolumes in proportion to `weights` (a weight of
/// 0 gets no range), starting at a subvolume chosen by `rotation` so small
/// directories do not all favour the first one. Returns one entry per
/// subvolume; the non-empty ranges tile `[0, u32::MAX]` exactly.
pub fn compute(weights: &[u64], rotation: u32, commit: u32) -> Vec<LayoutEntry> {
    let mut out = vec![LayoutEntry { commit, range: None }; weights.len()];
    let active: Vec<usize> = (0..weights.len()).filter(|&i| weights[i] > 0).collect();
    if active.is_empty() {
        return out;
    }
    let total: u128 = active.iter().map(|&i| u128::from(weights[i])).sum();
    let ring: u128 = 1 << 32;
    let first = rotation as usize % active.len();
    let mut start: u128 = 0;
    let mut cumulative: u128 = 0;
    for k in 0..active.len() {
        let idx = active[(first + k) % active.len()];
        cumulative += u128::from(weights[idx]);
        // Boundaries from cumulative sums: rounding never accumulates.
        let end_exclusive = if k + 1 == active.len() {
            ring
        } else {
            ring * cumulative / total
        };
        if end_exclusive > start {
            out[idx].range = Some(Range {
                start: start as u32,
                end: (end_exclusive - 1) as u32,
            });
            start = end_exclusive;
        }
    }
    out
}

/// How many hash values two ranges share.
fn overlap(a: Option<Range>, b: Option<Range>) -> u64 {
    match (a, b) {
        (Some(a), Some(b)) => {
            let start = u64::from(a.start.max(b.start));
            let end = u64::from(a.end.min(b.end));
            if start <= end {
                end - start + 1
            } else {
                0
            }
        }
        _ => 0,
    }
}

/// Re-deals `new`'s ranges among its subvolumes so that as much of the
/// ring as possible stays with the subvolume that had it in `old` (fewer
/// files to move after a fix-layout; gluster's maximize-overlap). Only
/// ranges of (nearly) equal size trade places, so weights are kept: call
/// it for equal weights.
pub fn keep_overlap(old: &[LayoutEntry], new: &mut [LayoutEntry]) {
    let n = new.len().min(old.len());
    let same_size = |a: Option<Range>, b: Option<Range>| match (a, b) {
        (Some(a), Some(b)) => a.size().abs_diff(b.size()) <= 1,
        _ => false,
    };
    // Each swap strictly grows the total overlap, so this ends.
    for _ in 0..n * n {
        let mut improved = false;
        for i in 0..n {
            for j in i + 1..n {
                let (ri, rj) = (new[i].range, new[j].range);
                if !same_size(ri, rj) {
                    continue;
                }
                let now = overlap(old[i].range, ri) + overlap(old[j].range, rj);
                let swapped = overlap(old[i].range, rj) + overlap(old[j].range, ri);
                if swapped > now {
                    new[i].range = rj;
                    new[j].range = ri;
                    improved = true;
                }
            }
        }
        if !improved {
            break;
        }
    }
}

/// Where a hash falls in a set of entries (the first match).
pub fn find(entries: &[LayoutEntry], hash: u32) -> Option<usize> {
    entries.iter().position(|e| e.range.is_some_and(|r| r.contains(hash)))
}

/// Is this a complete layout: ranges that tile the ring with no hole and no
/// overlap, all of one commit?
pub fn is_complete(entries: &[LayoutEntry]) -> bool {
    let mut ranges: Vec<Range> = entries.iter().filter_map(|e| e.range).collect();
    if ranges.is_empty() || entries.windows(2).any(|w| w[0].commit != w[1].commit) {
        return false;
    }
    ranges.sort_by_key(|r| r.start);
    let mut next: u64 = 0;
    for r in ranges {
        if u64::from(r.start) != next {
            return false;
        }
        next = u64::from(r.end) + 1;
    }
    next == 1 << 32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rsync_temporaries_hash_like_their_final_name() {
        assert_eq!(munge_rsync_name(b".foo.Xa1b2c"), b"foo");
        assert_eq!(munge_rsync_name(b".foo.bar.tmp"), b"foo.bar");
        assert_eq!(munge_rsync_name(b"foo"), b"foo");
        assert_eq!(munge_rsync_name(b".bashrc"), b".bashrc");
        assert_eq!(munge_rsync_name(b".a."), b".a.");
        assert_eq!(munge_rsync_name(b"..x"), b"..x");
        assert_eq!(name_hash(b".report.pdf.q1W2e3"), name_hash(b"report.pdf"));
    }

    #[test]
    fn encoding_round_trips_and_rejects_junk() {
        for e in [
            LayoutEntry {
                commit: 7,
                range: Some(Range {
                    start: 5,
                    end: u32::MAX,
                }),
            },
            LayoutEntry { commit: 0, range: None },
        ] {
            assert_eq!(LayoutEntry::decode(&e.encode()), Some(e));
        }
        let mut bad = LayoutEntry {
            commit: 1,
            range: Some(Range { start: 9, end: 10 }),
        }
        .encode();
        bad[1] = 99;
        assert_eq!(LayoutEntry::decode(&bad), None);
        assert_eq!(LayoutEntry::decode(&[1, 1, 1]), None);
        let mut inverted = LayoutEntry {
            commit: 1,
            range: Some(Range { start: 9, end: 10 }),
        }
        .encode();
        inverted[8..12].copy_from_slice(&11u32.to_be_bytes());
        assert_eq!(LayoutEntry::decode(&inverted), None);
    }

    #[test]
    fn weights_are_respected_within_one_percent() {
        let weights = [100u64, 200, 300, 400];
        let layout = compute(&weights, 3, 1);
        for (w, e) in weights.iter().zip(&layout) {
            let share = e.range.unwrap().size() as f64 / 4294967296.0;
            let want = *w as f64 / 1000.0;
            assert!((share - want).abs() < 0.01 * want, "{share} vs {want}");
        }
    }

    #[test]
    fn rotation_spreads_first_ranges() {
        let mut firsts = [0usize; 4];
        for rot in 0..400u32 {
            let l = compute(&[1, 1, 1, 1], rot.wrapping_mul(2654435761), 1);
            firsts[find(&l, 0).unwrap()] += 1;
        }
        assert!(firsts.iter().all(|&n| n >= 50), "{firsts:?}");
    }

    #[test]
    fn names_spread_evenly() {
        let layout = compute(&[1, 1, 1, 1], 0, 1);
        let mut counts = [0u32; 4];
        for i in 0..40_000 {
            counts[find(&layout, name_hash(format!("file{i}").as_bytes())).unwrap()] += 1;
        }
        assert!(counts.iter().all(|&c| (9_500..=10_500).contains(&c)), "{counts:?}");
    }

    #[test]
    fn growing_keeps_most_of_the_ring_in_place() {
        // 2 → 3 equal subvolumes: at best a third of the ring moves.
        for rot in [0u32, 1, 2, 7, 12345] {
            let old = {
                let mut o = compute(&[1, 1, 0], rot, 1);
                o[2] = LayoutEntry { commit: 1, range: None };
                o
            };
            let mut new = compute(&[1, 1, 1], rot.wrapping_add(1), 2);
            keep_overlap(&old, &mut new);
            assert!(is_complete(&new));
            let kept: u64 = old.iter().zip(&new).map(|(a, b)| overlap(a.range, b.range)).sum();
            let moved = (1u64 << 32) - kept;
            assert!(moved <= (1u64 << 32) / 3 + 4, "rot {rot}: {moved} moved");
        }
    }

    proptest! {
        #[test]
        fn keeping_overlap_keeps_a_valid_layout(n in 1usize..8, rot in any::<u32>(), rot2 in any::<u32>()) {
            let old = compute(&vec![1; n], rot, 1);
            let mut new = compute(&vec![1; n + 1], rot2, 2);
            let mut old_ext = old.clone();
            old_ext.push(LayoutEntry { commit: 1, range: None });
            keep_overlap(&old_ext, &mut new);
            prop_assert!(is_complete(&new));
            prop_assert!(new.iter().all(|e| e.range.is_some()));
        }

        #[test]
        fn layouts_tile_the_ring(weights in proptest::collection::vec(0u64..1_000_000_000_000, 1..12), rot in any::<u32>(), commit in any::<u32>()) {
            let layout = compute(&weights, rot, commit);
            prop_assert_eq!(layout.len(), weights.len());
            if weights.iter().all(|&w| w == 0) {
                prop_assert!(layout.iter().all(|e| e.range.is_none()));
            } else {
                prop_assert!(is_complete(&layout));
                for (w, e) in weights.iter().zip(&layout) {
                    if *w == 0 { prop_assert!(e.range.is_none()); }
                }
            }
        }

        #[test]
        fn every_hash_has_exactly_one_home(weights in proptest::collection::vec(1u64..100, 1..8), rot in any::<u32>(), hash in any::<u32>()) {
            let layout = compute(&weights, rot, 1);
            let homes = layout.iter().filter(|e| e.range.is_some_and(|r| r.contains(hash))).count();
            prop_assert_eq!(homes, 1);
        }

        #[test]
        fn holes_and_overlaps_are_detected(weights in proptest::collection::vec(1u64..100, 2..6), rot in any::<u32>(), victim in any::<prop::sample::Index>()) {
            let mut layout = compute(&weights, rot, 1);
            let i = victim.index(layout.len());
            let r = layout[i].range.unwrap();
            layout[i].range = if r.start > 0 { Some(Range { start: r.start - 1, end: r.end }) } else { None };
            prop_assert!(!is_complete(&layout));
        }
    }
}
