//! IPv6 framing parser (extension headers down to the Mobility Header):
//! never panics, never reads past its input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nemo::wire::{parse_packet, MobilityHeader};

fuzz_target!(|data: &[u8]| {
    if let Ok(parsed) = parse_packet(data) {
        let _ = parsed.checksum_ok();
        let _ = MobilityHeader::decode(parsed.mh);
    }
});
