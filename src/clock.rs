//! Beside the request flow: the wall clock, read in one place. Token `exp`/`nbf`
//! checks (agent, offline check, `token` CLI), key-set and catalog ages (verifier,
//! catalog runner, `/metrics`) and decision-log times all take their time from here,
//! and the one RFC 3339 formatter for log times lives here too.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

/// Now, as the wall clock says.
pub fn now() -> SystemTime {
    SystemTime::now()
}

/// Seconds since the unix epoch (0 if the clock is set before it).
pub fn unix_now() -> i64 {
    unix_seconds(now())
}

/// `t` in whole seconds since the unix epoch (0 before it).
pub fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`: UTC, milliseconds truncated.
const RFC3339_MILLIS: &[BorrowedFormatItem<'_>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// `t` as RFC 3339 UTC with milliseconds (`2026-11-18T11:06:40.123Z`), formatted when
/// displayed, without allocating. A time before the epoch shows as the epoch.
pub fn rfc3339_millis(t: SystemTime) -> impl fmt::Display {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Rfc3339Millis(
        OffsetDateTime::from_unix_timestamp_nanos(since.as_nanos() as i128)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
    )
}

struct Rfc3339Millis(OffsetDateTime);

impl fmt::Display for Rfc3339Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // 24 bytes up to year 9999, the end of `time`'s default range.
        let mut buf = [0u8; 32];
        let mut cursor = &mut buf[..];
        self.0
            .format_into(&mut cursor, RFC3339_MILLIS)
            .map_err(|_| fmt::Error)?;
        let left = cursor.len();
        let text = std::str::from_utf8(&buf[..buf.len() - left]).map_err(|_| fmt::Error)?;
        f.write_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rfc3339(since_epoch: Duration) -> String {
        rfc3339_millis(UNIX_EPOCH + since_epoch).to_string()
    }

    #[test]
    fn rfc3339_millis_utc() {
        assert_eq!(rfc3339(Duration::ZERO), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(Duration::from_millis(1_795_000_000_123)),
            "2026-11-18T11:06:40.123Z"
        );
        assert_eq!(
            rfc3339(Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
        // Truncated, not rounded.
        assert_eq!(
            rfc3339(Duration::new(1_795_000_000, 999_999_999)),
            "2026-11-18T11:06:40.999Z"
        );
        assert_eq!(
            rfc3339_millis(UNIX_EPOCH - Duration::from_secs(1)).to_string(),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn unix_seconds_before_and_after_the_epoch() {
        assert_eq!(unix_seconds(UNIX_EPOCH + Duration::from_millis(1_999)), 1);
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_secs(5)), 0);
        assert!((unix_now() - unix_seconds(SystemTime::now())).abs() <= 1);
    }
}
