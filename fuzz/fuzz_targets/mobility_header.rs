//! Mobility Header decoder: never panics; what decodes re-encodes and
//! decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nemo::wire::MobilityHeader;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = MobilityHeader::decode(data) {
        if let Ok(encoded) = header.encode() {
            let again = MobilityHeader::decode(&encoded).expect("re-decode of own encoding");
            assert_eq!(again, header);
        }
    }
});
