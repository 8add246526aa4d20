//! Layout xattrs read off a brick (possibly damaged): decode or refuse,
//! and what decodes re-encodes identically.
#![no_main]
use cairn_common::layout::LayoutEntry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(e) = LayoutEntry::decode(data) {
        assert_eq!(LayoutEntry::decode(&e.encode()), Some(e));
        if let Some(r) = e.range {
            assert!(r.start <= r.end);
        }
    }
});
