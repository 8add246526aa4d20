//! Block checksums for data heal and rebalance: both sides checksum a
//! file's `CHECKSUM_BLOCK`-sized blocks and copy only those that differ.

/// xxh3 of a block, or None for a block of zeros (a hole reads as zeros,
/// so a hole and written zeros compare equal and neither is copied).
pub fn block_checksum(block: &[u8]) -> Option<u64> {
    if is_zeros(block) {
        None
    } else {
        Some(xxhash_rust::xxh3::xxh3_64(block))
    }
}

/// Byte by byte this ran at 2 GB/s, a tenth of xxh3's speed (the
/// `hot_paths` bench); OR-folding 64-byte chunks lets the compiler use
/// vector instructions, and the first chunk with data ends the scan.
fn is_zeros(block: &[u8]) -> bool {
    let mut chunks = block.chunks_exact(64);
    chunks.all(|c| c.iter().fold(0u8, |acc, b| acc | b) == 0) && chunks.remainder().iter().all(|b| *b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_have_no_checksum_and_data_does() {
        assert_eq!(block_checksum(&[0; 4096]), None);
        assert_eq!(block_checksum(&[]), None);
        let mut b = vec![0u8; 4096];
        b[4095] = 1;
        let c = block_checksum(&b).expect("data");
        b[0] = 1;
        assert_ne!(block_checksum(&b), Some(c));
        // Data only in the tail past the last whole chunk, or in any chunk.
        for at in [0, 63, 64, 4000, 4095] {
            let mut z = vec![0u8; 4096 + 17];
            z[at] = 9;
            assert!(block_checksum(&z).is_some(), "byte {at}");
        }
        let mut z = vec![0u8; 4096 + 17];
        z[4096 + 16] = 9;
        assert!(block_checksum(&z).is_some(), "tail");
    }
}
