//! VRRPv3 advertisement decoder: never panics; what decodes re-encodes
//! from the same source to the same bytes.
#![no_main]

use std::net::Ipv6Addr;

use libfuzzer_sys::fuzz_target;
use nemo::vrrp::{Advertisement, HOP_LIMIT};

fuzz_target!(|data: &[u8]| {
    let source = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
    if let Ok(advertisement) = Advertisement::decode(data, source, HOP_LIMIT) {
        let encoded = advertisement.encode(source);
        let again = Advertisement::decode(&encoded, source, HOP_LIMIT).expect("re-decode");
        assert_eq!(again, advertisement);
    }
});
