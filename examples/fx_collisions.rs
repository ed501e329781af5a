//! Generates route paths that all share one hash under FxHash (rustc's unkeyed hash,
//! which stagedoor's route table used until issue 11), for the hash-flooding test and
//! benchmark: `cargo run --release --example fx_collisions -- 12000 >
//! tests/fixtures/flood/fx_colliding_paths.txt`. Each path is `/` + 23 raw path
//! characters: three 8-byte words, the last solved so the hash comes out the same.

const K: u64 = 0xf135_7aea_2e62_a9c5;
/// Raw path characters that normalisation leaves alone and a route may hold.
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()+,=:@";

fn mix(h: u64, w: u64) -> u64 {
    (h.rotate_left(5) ^ w).wrapping_mul(K)
}

/// The hash `Hash for str` feeds FxHasher: the bytes in 8-byte words, then 0xff.
fn fx(bytes: &[u8]) -> u64 {
    let mut h = 0;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        h = mix(h, u64::from_le_bytes(c.try_into().unwrap()));
    }
    for &b in chunks.remainder() {
        h = mix(h, u64::from(b));
    }
    mix(h, 0xff)
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(12_000);
    let allowed = |w: u64| w.to_le_bytes().iter().all(|b| ALPHABET.contains(b));
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut rand = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut word = |first: bool| {
        let mut b = [0u8; 8];
        for (i, x) in b.iter_mut().enumerate() {
            *x = if first && i == 0 {
                b'/'
            } else {
                ALPHABET[(rand() % ALPHABET.len() as u64) as usize]
            };
        }
        u64::from_le_bytes(b)
    };
    // Target state before the last word: any (w1, w2) whose solved w3 is all allowed.
    let target: u64 = 0x0123_4567_89ab_cdef;
    let mut out = std::collections::BTreeSet::new();
    let mut want_hash = None;
    while out.len() < n {
        let (w1, w2) = (word(true), word(false));
        let h2 = mix(mix(0, w1), w2);
        let w3 = h2.rotate_left(5) ^ target;
        if !allowed(w3) {
            continue;
        }
        let mut bytes = Vec::with_capacity(24);
        for w in [w1, w2, w3] {
            bytes.extend_from_slice(&w.to_le_bytes());
        }
        let h = fx(&bytes);
        assert_eq!(*want_hash.get_or_insert(h), h);
        out.insert(String::from_utf8(bytes).unwrap());
    }
    for p in out {
        println!("{p}");
    }
}
