//! Micro-benchmarks of the paths every request takes: where a name lives
//! (hash + layout search), a request header's encoding and decoding, and
//! the block checksums data heal and rebalance compare.
//! Run: `cargo bench -p cairn-common` (figures in docs/performance.md).

use cairn_common::checksum::block_checksum;
use cairn_common::layout::{compute, find, name_hash};
use cairn_common::proto::{Creds, Fop, Request, CHECKSUM_BLOCK};
use cairn_common::{wire, Gfid};
use divan::{black_box, Bencher};

fn main() {
    divan::main();
}

/// The distribute decision for one name: hash it, find its range.
#[divan::bench(args = [2, 4, 16, 64])]
fn layout_lookup(bencher: Bencher, subvolumes: usize) {
    let layout = compute(&vec![1; subvolumes], 7, 1);
    let names: Vec<Vec<u8>> = (0..1024).map(|i| format!("file-{i:06}.dat").into_bytes()).collect();
    let mut i = 0;
    bencher.bench_local(|| {
        i = (i + 1) % names.len();
        find(&layout, name_hash(black_box(&names[i])))
    });
}

fn create_request() -> Request {
    Request::Fop {
        brick: uuid::Uuid::from_u128(0x1234),
        op: Fop::Create {
            parent: Gfid([3; 16]),
            name: b"a-typical-file-name.txt".to_vec(),
            gfid: Gfid([9; 16]),
            mode: 0o100644,
            umask: 0o022,
            flags: libc::O_CREAT | libc::O_WRONLY,
            creds: Creds { uid: 1000, gid: 1000 },
        },
    }
}

#[divan::bench]
fn header_encode(bencher: Bencher) {
    let req = create_request();
    bencher.bench_local(|| wire::encode_header(black_box(&req)).expect("encodes"));
}

#[divan::bench]
fn header_decode(bencher: Bencher) {
    let frame = wire::encode_header(&create_request()).expect("encodes");
    bencher.bench_local(|| wire::decode_frame::<Request>(black_box(&frame)).expect("decodes"));
}

/// One `CHECKSUM_BLOCK` (128 KiB) of data, and one of zeros (a hole).
#[divan::bench(args = ["data", "zeros"])]
fn checksum_block(bencher: Bencher, kind: &str) {
    let block: Vec<u8> = match kind {
        "data" => (0..CHECKSUM_BLOCK).map(|i| (i * 31 % 251) as u8).collect(),
        _ => vec![0; CHECKSUM_BLOCK as usize],
    };
    bencher
        .counter(divan::counter::BytesCount::new(block.len()))
        .bench_local(|| block_checksum(black_box(&block)));
}
