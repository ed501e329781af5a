//! Beside the request flow, when the agent stops: when one open connection may close
//! (docs/spop.md#stopping). Pure timing rules, no I/O; the reader asks after every
//! frame and every finished NOTIFY, and sleeps until the instant it is told.
//!
//! SPOP has no "go away": AGENT-DISCONNECT fails every NOTIFY HAProxy has sent on that
//! connection and not yet seen answered (2.6 sets `spoe_error` to 256, 3.1+ errors
//! the stream), and one may be on the wire. So a stopping agent keeps reading and
//! answering, and closes a connection only once HAProxy has moved on from it: nothing
//! in flight and no bytes read for `quiet`. Past `grace` it closes at the first
//! moment nothing is in flight; past `grace + HARD_STOP` it closes anyway (the
//! in-flight NOTIFYs then get their ACKs first, [`super::Work::finish`]).

use std::time::Duration;

use tokio::time::Instant;

/// After the grace period, how long a connection that never has a moment with
/// nothing in flight is still served before it closes regardless.
pub const HARD_STOP: Duration = Duration::from_secs(1);

/// The drain of one connection, from the moment the agent started stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drain {
    quiet: Duration,
    deadline: Instant,
}

/// What the reader does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainStep {
    /// Close now, once what already waits in the socket is read and answered:
    /// AGENT-DISCONNECT 0 once in-flight ACKs are out.
    Close,
    /// Keep reading and answering; ask again at this instant at the latest.
    Until(Instant),
    /// Past the hard stop: close without reading what waits in the socket.
    Stop,
}

impl Drain {
    /// The agent started stopping at `start`.
    pub fn new(start: Instant, grace: Duration, quiet: Duration) -> Drain {
        Drain {
            quiet,
            deadline: start + grace,
        }
    }

    /// `in_flight`: NOTIFYs read and not yet answered; `last_read`: when bytes last
    /// came in on this connection.
    pub fn step(&self, now: Instant, in_flight: bool, last_read: Instant) -> DrainStep {
        let hard = self.deadline + HARD_STOP;
        if now >= hard {
            return DrainStep::Stop;
        }
        if in_flight {
            // A finished NOTIFY asks again; until then only the hard stop can end it.
            return DrainStep::Until(hard);
        }
        let quiet_at = last_read + self.quiet;
        if now >= self.deadline || now >= quiet_at {
            return DrainStep::Close;
        }
        DrainStep::Until(quiet_at.min(self.deadline))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(10);
    const QUIET: Duration = Duration::from_secs(2);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// (what, ms since the stop, in flight, ms since the stop of the last read
    /// (negative: before it), the step: None = close, Some(u64::MAX) = stop (hard), Some(ms since the stop)).
    #[rustfmt::skip]
    const CASES: &[(&str, u64, bool, i64, Option<u64>)] = &[
        ("idle before the stop: closes at once",        0,      false, -5_000, None),
        ("read just before the stop: waits the quiet",   0,      false, -500,   Some(1_500)),
        ("busy: waits for the in-flight NOTIFY",         0,      true,  0,      Some(11_000)),
        ("traffic keeps it open",                        3_000,  false, 2_900,  Some(4_900)),
        ("quiet long enough: closes",                    5_000,  false, 3_000,  None),
        ("the quiet wait never passes the deadline",     9_500,  false, 9_400,  Some(10_000)),
        ("past the deadline, nothing in flight: closes", 10_000, false, 9_999,  None),
        ("past the deadline, busy: waits for the gap",   10_500, true,  10_499, Some(11_000)),
        ("past the hard stop: stops, busy or not",       11_000, true,  10_999, Some(u64::MAX)),
    ];

    #[test]
    fn drain_rules() {
        let start = Instant::now() + Duration::from_secs(60);
        let d = Drain::new(start, GRACE, QUIET);
        for &(what, now, in_flight, last, want) in CASES {
            let last_read = if last < 0 {
                start - ms(last.unsigned_abs())
            } else {
                start + ms(last as u64)
            };
            let want = match want {
                None => DrainStep::Close,
                Some(u64::MAX) => DrainStep::Stop,
                Some(at) => DrainStep::Until(start + ms(at)),
            };
            assert_eq!(
                d.step(start + ms(now), in_flight, last_read),
                want,
                "{what}"
            );
        }
    }

    #[test]
    fn no_grace_closes_once_nothing_is_in_flight() {
        let start = Instant::now();
        let d = Drain::new(start, Duration::ZERO, QUIET);
        assert_eq!(d.step(start, false, start), DrainStep::Close);
        assert_eq!(
            d.step(start, true, start),
            DrainStep::Until(start + HARD_STOP)
        );
    }
}
