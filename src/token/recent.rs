//! Token stage, in front of the verified-token cache: the tokens seen last, compared
//! byte for byte, so that a client repeating its token skips the SHA-256 of the
//! token and the cache lookup (together 8% of the agent's CPU on a warm decision;
//! BENCHMARKS.md, "Issue 14: the warm path, second pass").
//!
//! A fixed table of slots, each holding the last verified token that landed in it
//! and its cache entry. A token lands in the slot its last bytes pick (signature
//! bytes: spread out for real tokens; a client that picks them can only evict its
//! own slot's token, which then takes the cache's path). A hit is an exact match of
//! the whole token, so it can never answer for another token; the caller still
//! checks `exp` and the signing key on every hit, as for the cache.
//!
//! Slots are read without a lock or a reference count (`ArcSwapOption`: a hit writes
//! nothing that another worker thread reads; a mutex and a clone of the entry were
//! four atomic writes on shared lines per decision for a client repeating its token).

use std::sync::Arc;

use arc_swap::ArcSwapOption;

/// Slots in the table: one per value of a byte (see `slot`).
const SLOTS: usize = 256;
/// Longer tokens take the cache's path only: the table holds at most 1 MiB of tokens.
pub(super) const MAX_RECENT_TOKEN_BYTES: usize = 4096;

/// Whether `stored` (a valid token) is `given`, byte for byte, without stopping at the
/// first difference: how far a guess matches a valid token does not show in the time
/// taken (the length does; a token's length says nothing of its signature).
fn same(stored: &str, given: &str) -> bool {
    stored.len() == given.len()
        && stored
            .bytes()
            .zip(given.bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

/// The recent-token table of one verifier.
pub(super) struct Recent<V> {
    slots: Box<[ArcSwapOption<Slot<V>>]>,
}

struct Slot<V> {
    token: Box<str>,
    value: V,
}

impl<V> Recent<V> {
    pub(super) fn new() -> Self {
        Recent {
            slots: (0..SLOTS).map(|_| ArcSwapOption::empty()).collect(),
        }
    }

    /// The slot of `token`: its last eight bytes, mixed by a multiplication.
    fn slot(&self, token: &str) -> &ArcSwapOption<Slot<V>> {
        let b = token.as_bytes();
        let tail = &b[b.len().saturating_sub(8)..];
        let mut word = [0u8; 8];
        word[..tail.len()].copy_from_slice(tail);
        let mixed = u64::from_le_bytes(word).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // The top 8 bits: 0..=255, one of the `SLOTS`.
        &self.slots[(mixed >> 56) as usize]
    }

    /// `read` of the value stored with exactly this token, if it is still in its slot.
    pub(super) fn find<R>(&self, token: &str, read: impl FnOnce(&V) -> R) -> Option<R> {
        let slot = self.slot(token).load();
        slot.as_deref()
            .filter(|s| same(&s.token, token))
            .map(|s| read(&s.value))
    }

    /// Remembers `token` with `value`, replacing what its slot held.
    pub(super) fn put(&self, token: &str, value: V) {
        if token.len() > MAX_RECENT_TOKEN_BYTES {
            return;
        }
        self.slot(token).store(Some(Arc::new(Slot {
            token: token.into(),
            value,
        })));
    }

    /// Forgets `token` (its entry failed the checks of a hit), unless another token
    /// took its slot meanwhile.
    pub(super) fn remove(&self, token: &str) {
        let slot = self.slot(token);
        let current = slot.load();
        if current.as_deref().is_some_and(|s| *s.token == *token) {
            slot.compare_and_swap(&current, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl<V: Clone> Recent<V> {
        fn get(&self, token: &str) -> Option<V> {
            self.find(token, V::clone)
        }
    }

    #[test]
    fn a_hit_is_the_exact_token_only() {
        let r = Recent::new();
        r.put("aaa.bbb.ccc", 1);
        assert_eq!(r.get("aaa.bbb.ccc"), Some(1));
        // Same last bytes, same slot, another token: no hit.
        assert_eq!(r.get("xxx.bbb.ccc"), None);
        assert_eq!(r.get("aaa.bbb.cc"), None);
        assert_eq!(r.get(""), None);
        // It replaces the slot's token.
        r.put("xxx.bbb.ccc", 2);
        assert_eq!(r.get("aaa.bbb.ccc"), None);
        assert_eq!(r.get("xxx.bbb.ccc"), Some(2));
        r.remove("aaa.bbb.ccc");
        assert_eq!(r.get("xxx.bbb.ccc"), Some(2));
        r.remove("xxx.bbb.ccc");
        assert_eq!(r.get("xxx.bbb.ccc"), None);
    }

    #[test]
    fn long_tokens_are_not_kept() {
        let r = Recent::new();
        let long = "a".repeat(MAX_RECENT_TOKEN_BYTES + 1);
        r.put(&long, 1);
        assert_eq!(r.get(&long), None);
        let edge = "a".repeat(MAX_RECENT_TOKEN_BYTES);
        r.put(&edge, 2);
        assert_eq!(r.get(&edge), Some(2));
    }

    #[test]
    fn short_tokens_have_a_slot_too() {
        let r = Recent::new();
        r.put("a", 1);
        r.put("", 2);
        assert_eq!((r.get("a"), r.get("")), (Some(1), Some(2)));
    }
}

/// Review of fff918e (the slots read through `ArcSwapOption`): tokens that share a slot,
/// put, found and removed from many threads at once. A hit answers only for the token
/// stored with the value, and a remove takes out only its own token.
#[cfg(test)]
mod race_tests {
    use super::*;

    fn get(r: &Recent<u32>, token: &str) -> Option<u32> {
        r.find(token, |v| *v)
    }

    /// Twelve tokens with the same last eight bytes: one slot.
    fn tokens() -> Vec<String> {
        (0..12)
            .map(|i| format!("t{i:02}.payload.sig-tail"))
            .collect()
    }

    #[test]
    fn colliding_tokens_never_answer_for_each_other() {
        let r = Arc::new(Recent::<String>::new());
        let toks = Arc::new(tokens());
        assert!(
            toks.iter()
                .all(|t| std::ptr::eq(r.slot(t), r.slot(&toks[0]))),
            "the tokens share one slot"
        );
        let threads: Vec<_> = (0..12)
            .map(|k| {
                let (r, toks) = (r.clone(), toks.clone());
                std::thread::spawn(move || {
                    let mut hits = 0u32;
                    for n in 0..5_000usize {
                        let mine = &toks[(k + n) % toks.len()];
                        match n % 3 {
                            0 => r.put(mine, mine.clone()),
                            1 => r.remove(mine),
                            _ => {}
                        }
                        for t in toks.iter() {
                            if let Some(v) = r.find(t, String::clone) {
                                assert_eq!(&v, t, "a hit for {t} answered with {v}");
                                hits += 1;
                            }
                        }
                    }
                    hits
                })
            })
            .collect();
        let hits: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert!(hits > 0, "the race was exercised");
    }

    /// A remove of one token leaves another token's entry in the slot; a removed token
    /// is not found again, even while other threads keep reading the slot.
    #[test]
    fn remove_takes_out_its_own_token_only() {
        let toks = tokens();
        let r = Recent::new();
        r.put(&toks[0], 0);
        r.remove(&toks[1]);
        assert_eq!(get(&r, &toks[0]), Some(0));
        r.put(&toks[0], 1);
        assert_eq!(get(&r, &toks[0]), Some(1), "put replaces the value");
        r.remove(&toks[0]);
        assert_eq!(get(&r, &toks[0]), None);
        // A reader holding the old entry does not bring it back.
        r.put(&toks[0], 2);
        let held = r.slot(&toks[0]).load_full();
        r.remove(&toks[0]);
        assert_eq!(get(&r, &toks[0]), None);
        drop(held);
        assert_eq!(get(&r, &toks[0]), None);
    }
}
