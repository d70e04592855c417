//! RFC 4285 option lookup and verification on arbitrary Mobility Headers:
//! never panics, and random bytes never authenticate.
#![no_main]

use std::net::Ipv6Addr;

use libfuzzer_sys::fuzz_target;
use nemo::auth::{self, Algorithm, SecurityAssociation};

fuzz_target!(|data: &[u8]| {
    let _ = auth::find_mn_ha_option(data);
    for algorithm in [Algorithm::HmacSha1_96, Algorithm::HmacSha256] {
        let sa = SecurityAssociation::new(0x1000, algorithm, vec![0x5a; 16]).expect("valid SA");
        let result = auth::verify(data, Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED, &sa);
        assert!(result.is_err(), "random bytes authenticated");
    }
});
