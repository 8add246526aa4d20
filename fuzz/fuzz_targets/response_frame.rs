//! Any bytes a node sends back as a response frame.
#![no_main]
use cairn_common::proto::Response;
use cairn_common::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((resp, _payload)) = wire::decode_frame::<Response>(data) {
        let _ = resp.payload_len();
        let again = wire::encode_header(&resp).expect("a decoded response encodes");
        assert!(wire::decode_frame::<Response>(&again).is_ok());
    }
});
