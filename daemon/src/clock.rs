//! Wall-clock times as the project's records, APIs and logs carry them.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch: 0 before it, `i64::MAX` past what an
/// `i64` holds (the protobuf `int64` fields and the stores' records).
pub fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// [`unix_ms`] of now.
pub fn now_unix_ms() -> i64 {
    unix_ms(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn milliseconds_since_the_epoch_saturate_at_both_ends() {
        assert_eq!(unix_ms(UNIX_EPOCH + Duration::from_millis(1_234)), 1_234);
        assert_eq!(unix_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
        let far = UNIX_EPOCH + Duration::from_secs(u64::MAX / 1_000);
        assert_eq!(unix_ms(far), i64::MAX);
    }
}
