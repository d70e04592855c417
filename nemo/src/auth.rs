//! Authentication of Binding Updates and Acknowledgements without IPsec
//! (RFC 4285).
//!
//! The MN-HA mobility message authentication option (RFC 4285 §5.1) carries
//! an authenticator over
//!
//! ```text
//! Mobility Data = care-of address | home address | MH Data
//! ```
//!
//! where MH Data is the Mobility Header from its first octet up to and
//! including the SPI field of the option, with the checksum field zero.
//! RFC 4285 defines HMAC-SHA1 truncated to 96 bits; nemo also offers
//! HMAC-SHA256 (full 256 bits), the default for new deployments. The
//! algorithm is chosen per security association, that is per SPI.
//!
//! Replay protection uses the timestamp option of RFC 4285 §6: the timestamp
//! must be within a window of the receiver's clock and newer than every
//! timestamp accepted before for that mobile node.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

use crate::wire::{
    mh_field, option_field, AuthSubtype, MhType, MobilityHeader, MobilityOption, NtpTimestamp,
    OptionType, RawOptions,
};

/// The MAC algorithm of a mobility security association.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Algorithm {
    /// HMAC-SHA1 truncated to 96 bits, as RFC 4285 §5.1 defines it.
    HmacSha1_96,
    /// HMAC-SHA256, untruncated: 32 octets of authentication data. The
    /// default for new deployments.
    #[default]
    HmacSha256,
}

impl Algorithm {
    /// Octets of Authentication Data this algorithm produces.
    pub fn authenticator_len(self) -> usize {
        match self {
            Algorithm::HmacSha1_96 => 12,
            Algorithm::HmacSha256 => 32,
        }
    }

    /// The name used in configuration files and APIs.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::HmacSha1_96 => "hmac-sha1-96",
            Algorithm::HmacSha256 => "hmac-sha256",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = AuthError;

    fn from_str(text: &str) -> Result<Algorithm, AuthError> {
        match text {
            "hmac-sha1-96" => Ok(Algorithm::HmacSha1_96),
            "hmac-sha256" => Ok(Algorithm::HmacSha256),
            _ => Err(AuthError::UnknownAlgorithm(text.to_owned())),
        }
    }
}

/// Why a message does not authenticate, or a security association cannot be
/// made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No MN-HA authentication option in the message.
    #[error("no MN-HA mobility message authentication option")]
    Missing,
    /// A non-padding option follows the authentication option, which
    /// RFC 4285 §5.1 requires to be last.
    #[error("the authentication option is not the last option")]
    NotLast,
    /// The options area could not be walked.
    #[error("malformed options: {0}")]
    Malformed(#[from] crate::wire::DecodeError),
    /// The message names another SPI than the association being used.
    #[error("message uses SPI {found}, expected {expected}")]
    SpiMismatch {
        /// SPI in the message.
        found: u32,
        /// SPI of the association.
        expected: u32,
    },
    /// The Authentication Data has the wrong length for the algorithm.
    #[error("authentication data is {found} octets, {algorithm} needs {expected}")]
    WrongLength {
        /// Length found.
        found: usize,
        /// Length the algorithm produces.
        expected: usize,
        /// The algorithm.
        algorithm: Algorithm,
    },
    /// The authenticator does not match: wrong key or altered message.
    #[error("authenticator mismatch")]
    Mismatch,
    /// A key shorter than RFC 4285 §5.1 allows.
    #[error("key is {0} octets, at least 16 are required")]
    KeyTooShort(usize),
    /// An SPI in the reserved range 0-255 (RFC 4285 §5.1).
    #[error("SPI {0} is reserved (0-255)")]
    ReservedSpi(u32),
    /// An algorithm name this library does not know.
    #[error("unknown algorithm {0:?}, expected hmac-sha256 or hmac-sha1-96")]
    UnknownAlgorithm(String),
}

/// A shared-key mobility security association between a mobile router and
/// its home agent (RFC 4285 §5.1): SPI, algorithm and key.
#[derive(Clone, PartialEq, Eq)]
pub struct SecurityAssociation {
    spi: u32,
    algorithm: Algorithm,
    key: Vec<u8>,
}

impl fmt::Debug for SecurityAssociation {
    // The key stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecurityAssociation")
            .field("spi", &self.spi)
            .field("algorithm", &self.algorithm)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl SecurityAssociation {
    /// Shortest key accepted: RFC 4285 §5.1 uses 16 octets.
    pub const MIN_KEY_LEN: usize = 16;

    /// An association; the SPI must be outside the reserved 0-255 and the key
    /// at least 16 octets.
    pub fn new(
        spi: u32,
        algorithm: Algorithm,
        key: Vec<u8>,
    ) -> Result<SecurityAssociation, AuthError> {
        if spi <= 255 {
            return Err(AuthError::ReservedSpi(spi));
        }
        if key.len() < Self::MIN_KEY_LEN {
            return Err(AuthError::KeyTooShort(key.len()));
        }
        Ok(SecurityAssociation {
            spi,
            algorithm,
            key,
        })
    }

    /// The SPI.
    pub fn spi(&self) -> u32 {
        self.spi
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The key, for storing the association (it stays out of logs).
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The option to put last in a message before [`sign`]ing it: MN-HA,
    /// this SPI, and zeroed Authentication Data of the right length.
    pub fn unsigned_option(&self) -> MobilityOption {
        MobilityOption::Authentication {
            subtype: AuthSubtype::MN_HA,
            spi: self.spi,
            data: vec![0; self.algorithm.authenticator_len()],
        }
    }

    fn authenticator(
        &self,
        care_of: Ipv6Addr,
        home: Ipv6Addr,
        mh: &[u8],
        spi_end: usize,
    ) -> Vec<u8> {
        let data = MobilityData {
            care_of,
            home,
            mh,
            spi_end,
        };
        match self.algorithm {
            Algorithm::HmacSha1_96 => {
                data.mac::<Hmac<Sha1>>(&self.key).finalize().into_bytes()[..12].to_vec()
            }
            Algorithm::HmacSha256 => data
                .mac::<Hmac<Sha256>>(&self.key)
                .finalize()
                .into_bytes()
                .to_vec(),
        }
    }
}

/// The care-of address as the authenticator covers it (RFC 4285 §5.1): an
/// IPv6 one as it is; an IPv4 one (Dual-Stack Mobile IPv6, RFC 5555 §3.1.2,
/// whose packets come from the home address) in its IPv4-mapped form
/// (RFC 4291 §2.5.5.2), the only way the 128-bit field holds it. RFC 5555
/// secures its messages with IPsec and does not say; the IPv4 Care-of
/// Address option itself is covered as part of the Mobility Header.
pub fn authenticated_care_of(care_of: IpAddr) -> Ipv6Addr {
    match care_of {
        IpAddr::V6(address) => address,
        IpAddr::V4(address) => address.to_ipv6_mapped(),
    }
}

/// What the authenticator covers (RFC 4285 §5.1): care-of address, home
/// address, and the Mobility Header up to `spi_end` with the checksum
/// (octets 4-5) as zero.
struct MobilityData<'a> {
    care_of: Ipv6Addr,
    home: Ipv6Addr,
    mh: &'a [u8],
    spi_end: usize,
}

impl MobilityData<'_> {
    /// A MAC keyed with `key` that has consumed the Mobility Data.
    fn mac<M: Mac + KeyInit>(&self, key: &[u8]) -> M {
        // HMAC accepts keys of any length: `new_from_slice` cannot fail.
        let mut mac = <M as KeyInit>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(&self.care_of.octets());
        mac.update(&self.home.octets());
        // RFC 4285 §5.1: the Mobility Header up to the SPI, its checksum
        // taken as zero.
        mac.update(&self.mh[..mh_field::CHECKSUM.start]);
        mac.update(&[0, 0]);
        mac.update(&self.mh[mh_field::CHECKSUM.end..self.spi_end]);
        mac
    }
}

/// Where the MN-HA authentication option sits in a Mobility Header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthLocation {
    /// The Mobility SPI.
    pub spi: u32,
    /// Offset just past the SPI: the authenticator covers `mh[..spi_end]`.
    pub spi_end: usize,
    /// Offset just past the Authentication Data.
    pub data_end: usize,
}

/// Finds the MN-HA authentication option of a Mobility Header, checking that
/// only padding follows it (RFC 4285 §5.1). `Ok(None)` when there is none.
pub fn find_mn_ha_option(mh: &[u8]) -> Result<Option<AuthLocation>, AuthError> {
    if mh.len() < mh_field::MIN_LEN {
        return Ok(None);
    }
    let Some(start) = MobilityHeader::options_offset(MhType(mh[mh_field::MH_TYPE])) else {
        return Ok(None);
    };
    let mut found = None;
    for raw in RawOptions::new(mh, start) {
        let raw = raw?;
        let option_type = OptionType(raw.option_type);
        if found.is_some() && option_type != OptionType::PAD1 && option_type != OptionType::PADN {
            return Err(AuthError::NotLast);
        }
        let spi_field = &option_field::authentication::SPI;
        if option_type != OptionType::AUTHENTICATION {
            continue;
        }
        let (Some(&subtype), Some(spi)) = (
            raw.data.get(option_field::authentication::SUBTYPE),
            raw.data.get(spi_field.clone()),
        ) else {
            continue;
        };
        if AuthSubtype(subtype) == AuthSubtype::MN_HA {
            found = Some(AuthLocation {
                spi: u32::from_be_bytes([spi[0], spi[1], spi[2], spi[3]]),
                spi_end: raw.offset + option_field::DATA + spi_field.end,
                data_end: raw.offset + option_field::DATA + raw.data.len(),
            });
        }
    }
    Ok(found)
}

/// Writes the authenticator into the MN-HA option of an encoded Mobility
/// Header (its checksum is computed afterwards, over the signed bytes).
/// `care_of` and `home` are the addresses the binding is about.
pub fn sign(
    mh: &mut [u8],
    care_of: Ipv6Addr,
    home: Ipv6Addr,
    sa: &SecurityAssociation,
) -> Result<(), AuthError> {
    let location = locate_for(mh, sa)?;
    let tag = sa.authenticator(care_of, home, mh, location.spi_end);
    mh[location.spi_end..location.data_end].copy_from_slice(&tag);
    Ok(())
}

/// Checks the MN-HA authenticator of a received Mobility Header in constant
/// time.
pub fn verify(
    mh: &[u8],
    care_of: Ipv6Addr,
    home: Ipv6Addr,
    sa: &SecurityAssociation,
) -> Result<(), AuthError> {
    let location = locate_for(mh, sa)?;
    let received = &mh[location.spi_end..location.data_end];
    let data = MobilityData {
        care_of,
        home,
        mh,
        spi_end: location.spi_end,
    };
    // Both comparisons are constant-time (`subtle` underneath).
    let ok = match sa.algorithm {
        Algorithm::HmacSha1_96 => data
            .mac::<Hmac<Sha1>>(&sa.key)
            .verify_truncated_left(received)
            .is_ok(),
        Algorithm::HmacSha256 => data
            .mac::<Hmac<Sha256>>(&sa.key)
            .verify_slice(received)
            .is_ok(),
    };
    if ok {
        Ok(())
    } else {
        Err(AuthError::Mismatch)
    }
}

/// The MN-HA option of `mh`, checked against the association's SPI and
/// authenticator length.
fn locate_for(mh: &[u8], sa: &SecurityAssociation) -> Result<AuthLocation, AuthError> {
    let location = find_mn_ha_option(mh)?.ok_or(AuthError::Missing)?;
    if location.spi != sa.spi {
        return Err(AuthError::SpiMismatch {
            found: location.spi,
            expected: sa.spi,
        });
    }
    let expected = sa.algorithm.authenticator_len();
    let found = location.data_end - location.spi_end;
    if found != expected {
        return Err(AuthError::WrongLength {
            found,
            expected,
            algorithm: sa.algorithm,
        });
    }
    Ok(location)
}

/// Replay protection by timestamp (RFC 4285 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayPolicy {
    /// How far a timestamp may be from the receiver's clock, either way.
    /// RFC 4285 §6 suggests 7 seconds and more than 3.
    pub window: Duration,
    /// Whether a Binding Update without a timestamp is refused (status 145).
    pub required: bool,
}

impl Default for ReplayPolicy {
    fn default() -> ReplayPolicy {
        ReplayPolicy {
            window: Duration::from_secs(7),
            required: true,
        }
    }
}

/// Why a timestamp is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// No timestamp, and the policy requires one: status 145
    /// (MIPV6-MESG-ID-REQD).
    #[error("replay protection timestamp required")]
    Missing,
    /// Too far from the receiver's clock: status 144 (MIPV6-ID-MISMATCH).
    #[error("timestamp {off:?} away from local time, window is {window:?}")]
    Stale {
        /// Distance from the local clock.
        off: Duration,
        /// The window allowed.
        window: Duration,
    },
    /// Not newer than one already accepted: status 144.
    #[error("timestamp not newer than the last accepted one")]
    Replayed,
}

impl ReplayPolicy {
    /// Checks a Binding Update's timestamp against the local time `now` and
    /// the newest timestamp accepted before for this mobile node (RFC 4285
    /// §6). `Ok(())` when there is no timestamp and none is required.
    pub fn check(
        &self,
        timestamp: Option<NtpTimestamp>,
        now: NtpTimestamp,
        last_accepted: Option<NtpTimestamp>,
    ) -> Result<(), ReplayError> {
        let Some(timestamp) = timestamp else {
            return if self.required {
                Err(ReplayError::Missing)
            } else {
                Ok(())
            };
        };
        let off = timestamp.abs_diff(now);
        if off > self.window {
            return Err(ReplayError::Stale {
                off,
                window: self.window,
            });
        }
        if last_accepted.is_some_and(|last| timestamp <= last) {
            return Err(ReplayError::Replayed);
        }
        Ok(())
    }
}

/// The timestamp a home agent returns in a Binding Acknowledgement that
/// refuses a timestamp: the low 32 bits of the mobile node's, the high 32
/// bits from its own clock (RFC 4285 §6), so the mobile node can resync.
pub fn rejection_timestamp(received: NtpTimestamp, now: NtpTimestamp) -> NtpTimestamp {
    NtpTimestamp((now.0 & 0xffff_ffff_0000_0000) | (received.0 & 0xffff_ffff))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, millis: u32) -> NtpTimestamp {
        NtpTimestamp::from_unix(Duration::new(secs, millis * 1_000_000))
    }

    #[test]
    fn timestamp_window_and_replay() {
        let policy = ReplayPolicy::default();
        let now = at(1_800_000_000, 0);
        // Within 7 seconds either way, nothing accepted before.
        assert_eq!(policy.check(Some(at(1_799_999_993, 0)), now, None), Ok(()));
        assert_eq!(policy.check(Some(at(1_800_000_007, 0)), now, None), Ok(()));
        // Just outside.
        assert!(matches!(
            policy.check(Some(at(1_800_000_007, 1)), now, None),
            Err(ReplayError::Stale { .. })
        ));
        assert!(matches!(
            policy.check(Some(at(1_799_999_992, 999)), now, None),
            Err(ReplayError::Stale { .. })
        ));
        // Equal to or older than the last accepted: a replay.
        let last = at(1_800_000_001, 0);
        assert_eq!(
            policy.check(Some(last), now, Some(last)),
            Err(ReplayError::Replayed)
        );
        assert_eq!(
            policy.check(Some(at(1_800_000_000, 500)), now, Some(last)),
            Err(ReplayError::Replayed)
        );
        assert_eq!(
            policy.check(Some(at(1_800_000_001, 1)), now, Some(last)),
            Ok(())
        );
        // Missing: refused only when required (status 145).
        assert_eq!(policy.check(None, now, None), Err(ReplayError::Missing));
        let optional = ReplayPolicy {
            required: false,
            ..policy
        };
        assert_eq!(optional.check(None, now, Some(last)), Ok(()));
    }

    #[test]
    fn rejection_timestamp_keeps_low_bits_and_takes_local_seconds() {
        let received = NtpTimestamp(0x1111_1111_2222_2222);
        let now = NtpTimestamp(0x3333_3333_4444_4444);
        assert_eq!(
            rejection_timestamp(received, now),
            NtpTimestamp(0x3333_3333_2222_2222)
        );
    }

    #[test]
    fn algorithm_names_round_trip() {
        for algorithm in [Algorithm::HmacSha1_96, Algorithm::HmacSha256] {
            assert_eq!(algorithm.name().parse::<Algorithm>(), Ok(algorithm));
        }
        assert_eq!(Algorithm::default(), Algorithm::HmacSha256);
    }
}
