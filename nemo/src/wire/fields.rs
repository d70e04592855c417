//! Scalar fields with rules of their own: sequence numbers and lifetimes.

use std::cmp::Ordering;
use std::fmt;
use std::time::Duration;

/// A Binding Update sequence number, a free-running 16-bit counter
/// (RFC 6275 §6.1.7).
///
/// Comparison is modulo 2^16 (RFC 6275 §9.5.1): a number is "less than or
/// equal to" the last one received when it lies in the range of that number
/// and the 32768 values before it, inclusive. This is not a total order, so
/// the type does not implement `Ord`; use [`SequenceNumber::is_newer_than`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SequenceNumber(pub u16);

impl SequenceNumber {
    /// True when `self` is strictly newer than `last` (RFC 6275 §9.5.1).
    ///
    /// With `last` = 15, the numbers 0..=15 and 32783..=65535 are not newer;
    /// 16..=32782 are.
    pub fn is_newer_than(self, last: SequenceNumber) -> bool {
        let distance = self.0.wrapping_sub(last.0);
        (1..=0x7fff).contains(&distance)
    }

    /// The next number, wrapping at 2^16.
    pub fn next(self) -> SequenceNumber {
        SequenceNumber(self.0.wrapping_add(1))
    }

    /// Compares modulo 2^16 for the uses where "newer" is enough, e.g.
    /// sorting a short burst. `None` when the two are exactly 32768 apart,
    /// where neither is newer.
    pub fn partial_cmp_mod(self, other: SequenceNumber) -> Option<Ordering> {
        if self == other {
            Some(Ordering::Equal)
        } else if self.is_newer_than(other) {
            Some(Ordering::Greater)
        } else if other.is_newer_than(self) {
            Some(Ordering::Less)
        } else {
            None
        }
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A binding lifetime as carried on the wire: 16 bits in units of 4 seconds
/// (RFC 6275 §6.1.7, §6.1.8). Zero in a Binding Update asks for deletion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lifetime(pub u16);

impl Lifetime {
    /// Seconds per lifetime unit (RFC 6275 §6.1.7).
    pub const UNIT_SECS: u64 = 4;
    /// The longest lifetime the field can carry, 65535 units (about 72 hours).
    pub const MAX: Lifetime = Lifetime(u16::MAX);
    /// Lifetime zero: deregistration in a Binding Update.
    pub const ZERO: Lifetime = Lifetime(0);

    /// The largest lifetime not longer than `duration`, saturating at
    /// [`Lifetime::MAX`]. Rounds down, so a granted lifetime never exceeds
    /// what was allowed.
    pub fn from_duration_floor(duration: Duration) -> Lifetime {
        let units = duration.as_secs() / Self::UNIT_SECS;
        Lifetime(u16::try_from(units).unwrap_or(u16::MAX))
    }

    /// The smallest lifetime not shorter than `duration`, saturating at
    /// [`Lifetime::MAX`]. Rounds up, so a requested lifetime covers at least
    /// what was asked for.
    pub fn from_duration_ceil(duration: Duration) -> Lifetime {
        let whole = duration.as_secs();
        let extra = u64::from(duration.subsec_nanos() > 0);
        let units = (whole.saturating_add(extra)).div_ceil(Self::UNIT_SECS);
        Lifetime(u16::try_from(units).unwrap_or(u16::MAX))
    }

    /// The lifetime in seconds.
    pub fn as_secs(self) -> u64 {
        u64::from(self.0) * Self::UNIT_SECS
    }

    /// The lifetime as a duration.
    pub fn as_duration(self) -> Duration {
        Duration::from_secs(self.as_secs())
    }

    /// True for lifetime zero.
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Lifetime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.as_secs())
    }
}

/// A 64-bit timestamp in NTP format (RFC 1305): seconds since 1900-01-01 in
/// the high 32 bits, the fraction of a second in the low 32 bits. RFC 4285 §6
/// carries one in the replay protection option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NtpTimestamp(pub u64);

impl NtpTimestamp {
    /// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
    pub const UNIX_EPOCH_OFFSET_SECS: u64 = 2_208_988_800;

    /// The timestamp of a time given as the duration since the Unix epoch.
    /// The seconds wrap at 2^32, as NTP era 0 does in 2036.
    pub fn from_unix(since_unix_epoch: Duration) -> NtpTimestamp {
        let seconds = since_unix_epoch.as_secs() + Self::UNIX_EPOCH_OFFSET_SECS;
        let fraction = (u64::from(since_unix_epoch.subsec_nanos()) << 32) / 1_000_000_000;
        NtpTimestamp(((seconds & 0xffff_ffff) << 32) | fraction)
    }

    /// The whole seconds (high 32 bits).
    pub fn seconds(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The fraction of a second (low 32 bits).
    pub fn fraction(self) -> u32 {
        self.0 as u32
    }

    /// The distance between two timestamps, whichever is later.
    pub fn abs_diff(self, other: NtpTimestamp) -> Duration {
        let ticks = self.0.abs_diff(other.0);
        let secs = ticks >> 32;
        let nanos = ((ticks & 0xffff_ffff) * 1_000_000_000) >> 32;
        Duration::new(secs, nanos as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_window_matches_rfc_example() {
        // RFC 6275 §9.5.1: last = 15; 0..=15 and 32783..=65535 are <= 15.
        let last = SequenceNumber(15);
        for old in (0..=15).chain(32783..=65535) {
            assert!(!SequenceNumber(old).is_newer_than(last), "{old}");
        }
        for new in 16..=32782 {
            assert!(SequenceNumber(new).is_newer_than(last), "{new}");
        }
    }

    #[test]
    fn sequence_wraps() {
        assert!(SequenceNumber(0).is_newer_than(SequenceNumber(65535)));
        assert!(!SequenceNumber(65535).is_newer_than(SequenceNumber(0)));
        assert_eq!(SequenceNumber(65535).next(), SequenceNumber(0));
        assert_eq!(
            SequenceNumber(1).partial_cmp_mod(SequenceNumber(32769)),
            None
        );
        assert_eq!(
            SequenceNumber(2).partial_cmp_mod(SequenceNumber(65534)),
            Some(Ordering::Greater)
        );
    }

    #[test]
    fn lifetime_units_and_saturation() {
        assert_eq!(
            Lifetime::from_duration_floor(Duration::from_secs(7)),
            Lifetime(1)
        );
        assert_eq!(
            Lifetime::from_duration_ceil(Duration::from_secs(7)),
            Lifetime(2)
        );
        assert_eq!(
            Lifetime::from_duration_ceil(Duration::from_secs(8)),
            Lifetime(2)
        );
        assert_eq!(
            Lifetime::from_duration_ceil(Duration::from_millis(8001)),
            Lifetime(3)
        );
        assert_eq!(Lifetime(3).as_secs(), 12);
        assert_eq!(
            Lifetime::from_duration_floor(Duration::from_secs(10_000_000)),
            Lifetime::MAX
        );
        assert_eq!(Lifetime::from_duration_ceil(Duration::MAX), Lifetime::MAX);
        assert_eq!(Lifetime::MAX.as_secs(), 262_140);
    }

    #[test]
    fn ntp_timestamp_of_unix_time() {
        // 2026-11-25T00:00:00Z is Unix 1_795_564_800.
        let t = NtpTimestamp::from_unix(Duration::new(1_795_564_800, 500_000_000));
        assert_eq!(t.seconds(), 4_004_553_600);
        assert_eq!(t.fraction(), 1 << 31);
        let later = NtpTimestamp::from_unix(Duration::new(1_795_564_807, 250_000_000));
        assert_eq!(later.abs_diff(t), Duration::from_millis(6750));
        assert_eq!(t.abs_diff(later), Duration::from_millis(6750));
    }
}
