//! Bytes in, before any frame is decoded: the one account of the bytes that SPOP
//! connections hold in buffers (`[agent] buffer_budget_bytes`), so that whoever can
//! reach the SPOP port cannot make the agent hold more.
//!
//! What is charged ([`crate::connection`] does the charging):
//! - every connection's read buffer at its allocated size: 512 bytes from accept,
//!   at most 4 KiB until the HELLO is complete; after it 4 KiB, or what the frame
//!   being read needs, only while bytes wait to be read (none while idle);
//! - every NOTIFY frame from the moment it is read until its task is done.
//!
//! Two limits: a new connection and every byte a connection wants before its HELLO
//! is complete are charged only while the account stays within
//! [`admission_limit`] (three quarters of the budget); connections past HELLO may
//! use the whole budget. So a flood of connections that never finish a HELLO leaves
//! a quarter of the budget to the connections HAProxy already has.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The shared account: bytes held now, and the most ever held (for tests and
/// benchmarks). Lives in [`crate::connection::EngineStats`].
#[derive(Debug, Default)]
pub struct BufferAccount {
    held: AtomicUsize,
    peak: AtomicUsize,
}

/// The part of the budget that new connections and unfinished handshakes may use.
pub fn admission_limit(budget: usize) -> usize {
    budget - budget / 4
}

impl BufferAccount {
    /// Bytes charged now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// The most bytes ever charged at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Charges `bytes` if the account stays within `limit`; the [`Charge`] gives
    /// them back when dropped. `None` when it would not.
    pub fn charge(self: &Arc<Self>, bytes: usize, limit: usize) -> Option<Charge> {
        self.take(bytes, limit).then(|| Charge {
            account: self.clone(),
            bytes,
        })
    }

    /// Adds `bytes` unless the total would pass `limit` (never over, even for a
    /// moment: a compare-and-swap loop rather than add-then-undo).
    fn take(&self, bytes: usize, limit: usize) -> bool {
        let mut now = self.held.load(Ordering::Relaxed);
        loop {
            let Some(next) = now.checked_add(bytes).filter(|&n| n <= limit) else {
                return false;
            };
            match self
                .held
                .compare_exchange_weak(now, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.peak.fetch_max(next, Ordering::Relaxed);
                    return true;
                }
                Err(actual) => now = actual,
            }
        }
    }

    fn give_back(&self, bytes: usize) {
        self.held.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// Bytes charged to a [`BufferAccount`], given back on drop (so an aborted task or
/// a dropped connection gives its bytes back too).
#[derive(Debug)]
pub struct Charge {
    account: Arc<BufferAccount>,
    bytes: usize,
}

impl Charge {
    /// Bytes charged.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Changes the charge to `bytes`: growing only while the account stays within
    /// `limit` (`false`, and the charge unchanged, when it would not); shrinking
    /// always.
    pub fn resize(&mut self, bytes: usize, limit: usize) -> bool {
        if bytes > self.bytes {
            if !self.account.take(bytes - self.bytes, limit) {
                return false;
            }
        } else {
            self.account.give_back(self.bytes - bytes);
        }
        self.bytes = bytes;
        true
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.account.give_back(self.bytes);
    }
}

/// A charge is bookkeeping, not content: frames that carry one compare equal
/// whatever they hold.
impl PartialEq for Charge {
    fn eq(&self, _: &Charge) -> bool {
        true
    }
}

impl Eq for Charge {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_stay_within_the_limit_and_come_back_on_drop() {
        let account = Arc::new(BufferAccount::default());
        let a = account.charge(600, 1000).expect("fits");
        assert!(account.charge(401, 1000).is_none(), "one byte over");
        assert_eq!(account.held(), 600, "a refused charge takes nothing");
        let b = account.charge(400, 1000).expect("exactly the limit");
        assert_eq!(account.held(), 1000);
        drop(a);
        assert_eq!(account.held(), 400);
        drop(b);
        assert_eq!((account.held(), account.peak()), (0, 1000));
    }

    #[test]
    fn resize_grows_within_the_limit_and_always_shrinks() {
        let account = Arc::new(BufferAccount::default());
        let mut c = account.charge(512, 4096).unwrap();
        let other = account.charge(1000, 4096).unwrap();
        assert!(c.resize(3096, 4096), "512 + 1000 → 3096 + 1000 = 4096");
        assert!(!c.resize(3097, 4096));
        assert_eq!((c.bytes(), account.held()), (3096, 4096), "unchanged");
        // Shrinking works even when the account is over a (smaller) limit.
        assert!(c.resize(100, 10));
        assert_eq!(account.held(), 1100);
        drop((c, other));
        assert_eq!(account.held(), 0);
    }

    #[test]
    fn a_charge_that_would_overflow_is_refused() {
        let account = Arc::new(BufferAccount::default());
        let _a = account.charge(usize::MAX - 1, usize::MAX).unwrap();
        assert!(account.charge(2, usize::MAX).is_none());
        assert_eq!(account.held(), usize::MAX - 1);
    }

    #[test]
    fn the_admission_limit_is_three_quarters() {
        assert_eq!(admission_limit(64 << 20), 48 << 20);
        assert_eq!(admission_limit(3), 3, "integer floor of the quarter");
    }

    /// Many threads charging and giving back at once: never over the limit, and
    /// everything comes back.
    #[test]
    fn concurrent_charges_never_pass_the_limit() {
        let account = Arc::new(BufferAccount::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let account = account.clone();
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    for i in 0..20_000usize {
                        if let Some(c) = account.charge(1 + i % 300, 10_000) {
                            held.push(c);
                        }
                        if held.len() > 20 {
                            held.drain(..10);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(account.peak() <= 10_000, "peak {}", account.peak());
        assert_eq!(account.held(), 0);
    }
}
