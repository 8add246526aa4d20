//! Entry names and brick/node addresses as users and peers give them: an
//! accepted name is one safe path component; accepted brick paths are
//! absolute and free of `.`/`..`.
#![no_main]
use cairn_common::{addr, names};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if names::check_name(data).is_ok() {
        assert!(!data.is_empty() && data.len() <= names::NAME_MAX);
        assert!(!data.contains(&b'/') && !data.contains(&0));
        assert!(data != b"." && data != b"..");
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(b) = addr::BrickAddr::parse(text) {
            assert!(b.path.starts_with('/'));
            assert!(!b.path.split('/').any(|c| c == "." || c == ".."));
        }
        let _ = addr::canonical_node(text);
        let _ = addr::parse_volume_source(text);
    }
});
