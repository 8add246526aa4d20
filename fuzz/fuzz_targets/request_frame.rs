//! Any bytes a peer sends as a request frame: decoding must return an error
//! or a request that encodes back to the same header, never panic.
#![no_main]
use cairn_common::proto::Request;
use cairn_common::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((req, _payload)) = wire::decode_frame::<Request>(data) {
        let again = wire::encode_header(&req).expect("a decoded request encodes");
        let (back, rest) = wire::decode_frame::<Request>(&again).expect("and decodes again");
        assert_eq!(back, req);
        assert!(rest.is_empty());
    }
});
