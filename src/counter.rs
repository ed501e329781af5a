//! Request-path counts (beside the request flow): each worker thread adds to its own
//! cache line, and a reader sums the lines. A plain `AtomicU64` that every worker
//! thread bumps on every request moves its cache line between cores each time.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Lines per counter; threads beyond that share them.
pub const SHARDS: usize = 8;

thread_local! {
    /// This thread's line, handed out in turn as threads first count.
    static SHARD: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS
    };
}

/// The calling thread's shard index, `0..SHARDS`.
pub fn shard() -> usize {
    SHARD.with(|s| *s)
}

#[repr(align(128))]
#[derive(Default)]
struct Line(AtomicU64);

/// A count that many threads add to.
#[derive(Default)]
pub struct Counter {
    lines: [Line; SHARDS],
}

impl Counter {
    pub fn inc(&self) {
        self.lines[shard()].0.fetch_add(1, Ordering::Relaxed);
    }

    /// The sum over every line (a reader's view: not a snapshot across lines).
    pub fn get(&self) -> u64 {
        self.lines
            .iter()
            .fold(0u64, |n, l| n.wrapping_add(l.0.load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_every_thread_add_up() {
        let c = std::sync::Arc::new(Counter::default());
        let threads: Vec<_> = (0..12)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| c.inc()))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(c.get(), 12_000);
    }
}
