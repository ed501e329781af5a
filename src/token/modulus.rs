//! Token stage, key import: the checks a well-run verifier makes on an RSA public
//! modulus before trusting it (key set → key import → signature check).
//!
//! Signature verification only proves that whoever signed knew the private exponent
//! for `n`. When `n` is prime, `φ(n) = n − 1` is public, so anyone can compute a private
//! exponent and forge tokens; the same holds when `n` has a factor anyone can find (a
//! small prime, 2, or `n = p^k`, whose `p` an integer root gives away). A JWKS is trusted
//! input, but a provider bug, a hand-edited `jwks_file` or a compromised JWKS host must
//! not turn into "anyone can mint tokens". So, once per key at import (never per
//! request), a modulus is refused when it is:
//!
//! - **even** ([`ModulusFlaw::Even`]);
//! - divisible by an odd prime below [`SMALL_PRIME_BOUND`] ([`ModulusFlaw::SmallFactor`]);
//!   OpenSSL's SP 800-56B public-key check tries the primes up to 751;
//! - **prime**: it passes the Miller–Rabin test to base [`MILLER_RABIN_BASE`]
//!   ([`ModulusFlaw::Prime`]);
//! - **factored** on the way: the enhanced Miller–Rabin test of FIPS 186-5 B.3.2 / SP
//!   800-89 (what OpenSSL's check uses) takes one gcd after proving `n` composite, and
//!   that gcd finds a factor of every prime power `p^k` ([`ModulusFlaw::Factored`]).
//!
//! One fixed base is enough, because the test is used to refuse primes, never to accept
//! them: a prime passes any base, so it is always refused; a composite that happens to
//! pass base 2 (a strong pseudoprime, which no key generator produces) is refused too,
//! as if it were prime. So every modulus, prime or not, costs the same: one modular
//! exponentiation, one squaring chain and one gcd. (With five bases, as before, a prime
//! cost five times a proper key, and an 8192-bit one 1.7 s to refuse.)
//!
//! # Cost, caching and the per-document budget
//!
//! That one exponentiation is still 5 ms for 2048 bits and 0.3 s for 8192 (it grows
//! with the cube of the size), and a JWKS is fetched again and again. So:
//!
//! - a result is kept per modulus ([`check_modulus_cached`], keyed by the SHA-256 of
//!   the modulus, [`CACHE_ENTRIES`] of them, process-wide): a document fetched again,
//!   or changed in one key, costs only its new moduli;
//! - a document gets a [`CheckBudget`] of [`BUDGET_PER_DOCUMENT`] units, one unit being
//!   one 2048-bit check (a `b`-bit modulus costs `⌈(b/2048)³⌉`): 64 new 4096-bit keys
//!   or 8 new 8192-bit ones, about 2.5 s of one core at worst. A modulus over the
//!   budget is not checked and its key is skipped as `check_budget`; the next fetch
//!   (which then parses the document again) checks it with a fresh budget, cached
//!   moduli costing nothing. Real providers publish a handful of keys and never come
//!   near it.
//!
//! Not detected (no cheap test exists, and no verifier we know of runs one): moduli with
//! a medium-size factor (ECM-findable), primes too close together (Fermat), keys from a
//! broken generator (ROCA, shared factors across keys). Those are the provider's
//! responsibility.

use std::sync::LazyLock;

use num_bigint::BigUint;
use num_integer::Integer;

/// Odd primes below this bound are tried as factors of a modulus.
pub const SMALL_PRIME_BOUND: u32 = 1 << 14;

/// The Miller–Rabin base: a prime passes it, a proper RSA modulus fails it.
pub const MILLER_RABIN_BASE: u32 = 2;

/// Modulus check results kept, process-wide.
pub const CACHE_ENTRIES: u64 = 4096;

/// Check units one JWKS document may spend on moduli not checked before (one unit is
/// one 2048-bit check).
pub const BUDGET_PER_DOCUMENT: u64 = 512;

/// Why an RSA modulus is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ModulusFlaw {
    #[error("RSA modulus is even")]
    Even,
    #[error("RSA modulus has a small prime factor")]
    SmallFactor,
    #[error("RSA modulus is prime")]
    Prime,
    #[error("RSA modulus was factored at import (a prime power)")]
    Factored,
}

/// Checks a modulus given as big-endian bytes (leading zeros allowed). Never panics;
/// a modulus below 2^32 is refused as [`ModulusFlaw::SmallFactor`] (it is trivially
/// factored; callers refuse short moduli long before this anyway).
///
/// # Errors
/// The first [`ModulusFlaw`] found.
pub fn check_modulus(n_be: &[u8]) -> Result<(), ModulusFlaw> {
    let n_be = strip_zeros(n_be);
    cheap_checks(n_be)?;
    enhanced_miller_rabin(&BigUint::from_bytes_be(n_be))
}

fn strip_zeros(n_be: &[u8]) -> &[u8] {
    let start = n_be.iter().position(|b| *b != 0).unwrap_or(n_be.len());
    &n_be[start..]
}

/// Parity and trial division: microseconds, so never charged to a budget.
fn cheap_checks(n_be: &[u8]) -> Result<(), ModulusFlaw> {
    if n_be.last().is_none_or(|b| b & 1 == 0) {
        return Err(ModulusFlaw::Even);
    }
    if n_be.len() <= 4 || has_small_factor(n_be) {
        return Err(ModulusFlaw::SmallFactor);
    }
    Ok(())
}

/// Why a modulus was not accepted by [`check_modulus_cached`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Flaw(ModulusFlaw),
    /// Not checked: the document's [`CheckBudget`] was spent.
    OverBudget,
}

/// What one JWKS document may still spend on modulus checks.
#[derive(Debug)]
pub struct CheckBudget {
    left: u64,
}

impl CheckBudget {
    /// A fresh budget of [`BUDGET_PER_DOCUMENT`] units.
    pub fn per_document() -> CheckBudget {
        CheckBudget::of(BUDGET_PER_DOCUMENT)
    }

    pub fn of(units: u64) -> CheckBudget {
        CheckBudget { left: units }
    }

    /// Units still to spend.
    pub fn left(&self) -> u64 {
        self.left
    }
}

/// Cost of checking a modulus of `bytes` bytes, in 2048-bit checks: `⌈(bits/2048)³⌉`.
pub fn check_cost(bytes: usize) -> u64 {
    let bits = (bytes as u64).saturating_mul(8).max(1);
    bits.saturating_pow(3).div_ceil(2048u64.pow(3))
}

static CHECKED: LazyLock<quick_cache::sync::Cache<[u8; 32], Result<(), ModulusFlaw>>> =
    LazyLock::new(|| quick_cache::sync::Cache::new(CACHE_ENTRIES as usize));

/// [`check_modulus`], with the Miller–Rabin result kept per modulus (so a modulus seen
/// before costs nothing), and paid from `budget` for a modulus not seen before. The
/// parity and trial-division checks are cheap and always run, uncharged.
///
/// # Errors
/// [`Refused::Flaw`] for a flawed modulus, [`Refused::OverBudget`] when a new modulus
/// costs more than `budget` has left (it is then neither checked nor remembered).
pub fn check_modulus_cached(n_be: &[u8], budget: &mut CheckBudget) -> Result<(), Refused> {
    let n_be = strip_zeros(n_be);
    cheap_checks(n_be).map_err(Refused::Flaw)?;
    let mut key = [0u8; 32];
    key.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, n_be).as_ref());
    if let Some(known) = CHECKED.get(&key) {
        return known.map_err(Refused::Flaw);
    }
    let cost = check_cost(n_be.len());
    if cost > budget.left {
        return Err(Refused::OverBudget);
    }
    budget.left -= cost;
    let result = enhanced_miller_rabin(&BigUint::from_bytes_be(n_be));
    CHECKED.insert(key, result);
    result.map_err(Refused::Flaw)
}

/// Products of consecutive odd primes below [`SMALL_PRIME_BOUND`], each product below
/// 2^64, with the primes it is made of: one 128-by-64-bit remainder per limb and product
/// instead of one per limb and prime.
static PRIME_BATCHES: LazyLock<Vec<(u64, Vec<u32>)>> = LazyLock::new(|| {
    let bound = SMALL_PRIME_BOUND as usize;
    let mut composite = vec![false; bound];
    let mut batches: Vec<(u64, Vec<u32>)> = Vec::new();
    let mut product: u64 = 1;
    let mut primes: Vec<u32> = Vec::new();
    for p in 3..bound {
        if composite[p] || p.is_multiple_of(2) {
            continue;
        }
        let mut m = p * p;
        while m < bound {
            composite[m] = true;
            m += p;
        }
        match product.checked_mul(p as u64) {
            Some(next) => product = next,
            None => {
                batches.push((product, std::mem::take(&mut primes)));
                product = p as u64;
            }
        }
        primes.push(p as u32);
    }
    if !primes.is_empty() {
        batches.push((product, primes));
    }
    batches
});

/// `n mod m` for a big-endian `n`, with `m` below 2^64 (and not 0).
fn rem_u64(n_be: &[u8], m: u64) -> u64 {
    let head = n_be.len() % 8;
    let mut r: u128 = 0;
    let mut fold = |limb: &[u8]| {
        let mut v = 0u64;
        for b in limb {
            v = (v << 8) | u64::from(*b);
        }
        // r < m < 2^64, so the quotient fits 64 bits: the fast 128/64 division.
        r = ((r << 64) | u128::from(v)) % u128::from(m);
    };
    if head > 0 {
        fold(&n_be[..head]);
    }
    for limb in n_be[head..].chunks(8) {
        fold(limb);
    }
    r as u64
}

fn has_small_factor(n_be: &[u8]) -> bool {
    PRIME_BATCHES.iter().any(|(product, primes)| {
        let r = rem_u64(n_be, *product);
        primes.iter().any(|p| r.is_multiple_of(u64::from(*p)))
    })
}

/// Enhanced Miller–Rabin (FIPS 186-4 C.3.2, kept as FIPS 186-5 B.3.2) to base
/// [`MILLER_RABIN_BASE`] on an odd `n` above 2^32: `Ok` when the base proves `n`
/// composite without giving a factor away; [`ModulusFlaw::Prime`] when `n` passes
/// (a prime, or a strong pseudoprime to the base: refused either way).
fn enhanced_miller_rabin(n: &BigUint) -> Result<(), ModulusFlaw> {
    let one = BigUint::from(1u32);
    let n_minus_1 = n - &one;
    // n is odd and above 2^32, so n - 1 is even and not zero.
    let a = n_minus_1.trailing_zeros().unwrap_or(0);
    let m = &n_minus_1 >> a;
    if n % MILLER_RABIN_BASE == BigUint::ZERO {
        return Err(ModulusFlaw::Factored); // gcd(b, n) > 1
    }
    let mut z = BigUint::from(MILLER_RABIN_BASE).modpow(&m, n);
    if z == one || z == n_minus_1 {
        return Err(ModulusFlaw::Prime);
    }
    for _ in 1..a {
        let x = z;
        z = &x * &x % n;
        if z == n_minus_1 {
            return Err(ModulusFlaw::Prime);
        }
        if z == one {
            // x is a square root of 1 other than ±1: gcd(x - 1, n) is a factor.
            return gcd_flaw(&x, n);
        }
    }
    // Composite. x = b^((n-1)/2); unless its square is 1, take b^(n-1) itself:
    // a prime power p^k still has b^(n-1) = 1 mod p, which the gcd finds.
    let x = z;
    z = &x * &x % n;
    gcd_flaw(if z == one { &x } else { &z }, n)
}

/// [`ModulusFlaw::Factored`] when `gcd(x - 1, n) > 1`, for `1 < x < n`.
fn gcd_flaw(x: &BigUint, n: &BigUint) -> Result<(), ModulusFlaw> {
    let one = BigUint::from(1u32);
    if *x <= one {
        return Ok(());
    }
    if (x - &one).gcd(n) == one {
        Ok(())
    } else {
        Err(ModulusFlaw::Factored)
    }
}

/// The RFC 3526 2048-bit MODP prime (group 14), a well-known safe prime, in hex (tests
/// here and in `jwk`).
#[cfg(test)]
pub(crate) const MODP2048_HEX: &str = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74\
                            020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437\
                            4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED\
                            EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05\
                            98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB\
                            9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B\
                            E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718\
                            3995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF";

#[cfg(test)]
mod tests {
    use super::*;

    fn be(n: &BigUint) -> Vec<u8> {
        n.to_bytes_be()
    }

    fn modp2048() -> BigUint {
        BigUint::parse_bytes(MODP2048_HEX.as_bytes(), 16).unwrap()
    }

    #[test]
    fn small_primes_and_batches() {
        let primes: Vec<u32> = PRIME_BATCHES.iter().flat_map(|(_, p)| p.clone()).collect();
        assert_eq!(&primes[..5], &[3, 5, 7, 11, 13]);
        // π(16384) = 1900 primes, without 2.
        assert_eq!(primes.len(), 1899);
        assert_eq!(*primes.last().unwrap(), 16381);
        for (product, ps) in PRIME_BATCHES.iter() {
            assert_eq!(*product, ps.iter().map(|p| u64::from(*p)).product::<u64>());
        }
    }

    #[test]
    fn remainders_match_bigint() {
        let n = modp2048() * BigUint::from(12_345_678_901u64) + BigUint::from(77u32);
        for m in [3u64, 65_537, (1 << 63) + 29, u64::MAX] {
            let want = (&n % m).to_u64_digits().first().copied().unwrap_or(0);
            assert_eq!(rem_u64(&be(&n), m), want, "{m}");
            let mut padded = vec![0, 0, 0];
            padded.extend(be(&n));
            assert_eq!(rem_u64(&padded, m), want, "{m} padded");
        }
    }

    #[test]
    fn flaws_are_found() {
        let p = modp2048();
        assert_eq!(check_modulus(&be(&p)), Err(ModulusFlaw::Prime));
        assert_eq!(check_modulus(&be(&(&p + 1u32))), Err(ModulusFlaw::Even));
        assert_eq!(
            check_modulus(&be(&(&p * 16_381u32))),
            Err(ModulusFlaw::SmallFactor)
        );
        assert_eq!(
            check_modulus(&be(&(&p * 3u32))),
            Err(ModulusFlaw::SmallFactor)
        );
        // The next prime after the bound is not tried: a prime times it is composite
        // with no small factor, so it passes (the check is not a factoring oracle).
        assert_eq!(check_modulus(&be(&(&p * 16_411u32))), Ok(()));
        // p^2 and p^3: composite, no small factor, found by the gcd.
        assert_eq!(check_modulus(&be(&(&p * &p))), Err(ModulusFlaw::Factored));
        assert_eq!(
            check_modulus(&be(&(&p * &p * &p))),
            Err(ModulusFlaw::Factored)
        );
        // Small and odd edge cases never panic.
        for tiny in [&[][..], &[0], &[1], &[3], &[0, 0, 0, 7], &[1, 0, 0, 0, 1]] {
            assert!(check_modulus(tiny).is_err(), "{tiny:?}");
        }
        assert_eq!(check_modulus(&[0, 0]), Err(ModulusFlaw::Even));
    }

    #[test]
    fn results_are_kept_and_new_checks_paid_from_the_budget() {
        // Distinct moduli of this test only (the cache is process-wide): the group-14
        // prime times primes above the trial-division bound, 2063 bits, cost 2 each.
        let p = modp2048();
        let n: Vec<Vec<u8>> = [16_411u32, 16_417, 16_421]
            .iter()
            .map(|q| be(&(&p * *q)))
            .collect();
        assert_eq!(check_cost(n[0].len()), 2);
        assert_eq!(check_cost(256), 1);
        assert_eq!(check_cost(512), 8);
        assert_eq!(check_cost(1024), 64);
        let mut budget = CheckBudget::of(4);
        assert_eq!(check_modulus_cached(&n[0], &mut budget), Ok(()));
        assert_eq!(check_modulus_cached(&n[1], &mut budget), Ok(()));
        assert_eq!(budget.left(), 0);
        assert_eq!(
            check_modulus_cached(&n[2], &mut budget),
            Err(Refused::OverBudget)
        );
        // Known moduli cost nothing, with leading zeros or not; cheap flaws neither.
        let mut none = CheckBudget::of(0);
        assert_eq!(check_modulus_cached(&n[0], &mut none), Ok(()));
        let padded = [&[0u8, 0][..], &n[1]].concat();
        assert_eq!(check_modulus_cached(&padded, &mut none), Ok(()));
        assert_eq!(
            check_modulus_cached(&be(&(&p + 1u32)), &mut none),
            Err(Refused::Flaw(ModulusFlaw::Even))
        );
        assert_eq!(
            check_modulus_cached(&be(&(&p * 3u32)), &mut none),
            Err(Refused::Flaw(ModulusFlaw::SmallFactor))
        );
        // A flaw found by Miller–Rabin is kept too.
        let mut one = CheckBudget::of(1);
        let prime = be(&p);
        assert_eq!(
            check_modulus_cached(&prime, &mut one),
            Err(Refused::Flaw(ModulusFlaw::Prime))
        );
        assert_eq!(
            check_modulus_cached(&prime, &mut none),
            Err(Refused::Flaw(ModulusFlaw::Prime))
        );
        // The over-budget modulus was not remembered: it is checked once paid for.
        assert_eq!(check_modulus_cached(&n[2], &mut CheckBudget::of(2)), Ok(()));
    }

    #[test]
    fn a_strong_pseudoprime_is_refused() {
        // 3215031751 = 151·751·28351, a Carmichael number, is a strong pseudoprime to
        // bases 2, 3, 5 and 7. The trial division refuses it first.
        let n = BigUint::from(3_215_031_751u64);
        assert_eq!(check_modulus(&be(&n)), Err(ModulusFlaw::SmallFactor));
        // Without it, base 2 takes it for a prime, and it is refused as one.
        assert_eq!(enhanced_miller_rabin(&n), Err(ModulusFlaw::Prime));
        // 2047 = 23·89 is the smallest strong pseudoprime to base 2. 561 = 3·11·17 is a
        // Carmichael number but not a strong pseudoprime to base 2: 2^35 = 263, and
        // squaring reaches 67, a square root of 1, which gives gcd(66, 561) = 33 away.
        assert_eq!(
            enhanced_miller_rabin(&BigUint::from(2047u32)),
            Err(ModulusFlaw::Prime)
        );
        assert_eq!(
            enhanced_miller_rabin(&BigUint::from(561u32)),
            Err(ModulusFlaw::Factored)
        );
        // A product of two primes above the bound passes (a proper RSA modulus shape).
        let (p, q) = (
            BigUint::from(4_294_967_291u64),
            BigUint::from(4_294_967_279u64),
        );
        assert_eq!(check_modulus(&be(&(&p * &q))), Ok(()));
    }
}
