//! Beside the request flow, under [`crate::sso`]: sealed cookie values. AES-256-GCM
//! (aws-lc-rs) with a fresh 96-bit random nonce per seal and the cookie's purpose as
//! associated data, so a state cookie never opens as a session. The first key seals,
//! every key opens (rotation). Any input that is not exactly what we sealed fails
//! closed with a typed [`SealError`]; nothing here panics on input.
//!
//! Wire: `v1.` + base64url-nopad( key hint (4 bytes: first 4 of SHA-256(key)) ||
//! nonce (12) || ciphertext || tag (16) ).

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Longest sealed value set or opened (bytes of the cookie value). Browsers keep
/// about 4,096 bytes per cookie, name and attributes included.
pub const MAX_COOKIE_VALUE: usize = 3_800;
/// Bytes of one key.
pub const KEY_LEN: usize = 32;
const HINT_LEN: usize = 4;
const TAG_LEN: usize = 16;
const PREFIX: &str = "v1.";

/// The associated data of a session cookie.
pub const PURPOSE_SESSION: &[u8] = b"stagedoor-session-v1";
/// The associated data of the pre-sign-in state cookie.
pub const PURPOSE_STATE: &[u8] = b"stagedoor-state-v1";

/// Why a value was not sealed or not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Not `v1.` + base64url of at least hint, nonce and tag.
    #[error("malformed sealed value")]
    Malformed,
    /// Over [`MAX_COOKIE_VALUE`] (refused before any crypto, or when sealing).
    #[error("sealed value over {MAX_COOKIE_VALUE} bytes")]
    TooLarge,
    /// Sealed with a key this deployment does not have.
    #[error("sealed with an unknown key")]
    UnknownKey,
    /// The tag did not verify: altered, or another purpose.
    #[error("sealed value does not verify")]
    Tampered,
    /// The system random source failed (sealing only).
    #[error("no randomness available")]
    Random,
}

/// Why a key list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("no key")]
    Empty,
    #[error("key {0}: not 32 bytes as base64url or 64 hex characters")]
    BadKey(usize),
    #[error("key {0}: duplicate of an earlier key")]
    Duplicate(usize),
}

struct Key {
    hint: [u8; HINT_LEN],
    aead: LessSafeKey,
}

/// The deployment's keys: the first seals, all open.
pub struct Sealer {
    keys: Vec<Key>,
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key bytes; the hints are public (they are in every cookie).
        f.debug_struct("Sealer")
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// Parses a key list: one key per line or comma-separated, each 32 bytes as
/// base64url (padding optional) or 64 hex characters; blank entries and `#` lines
/// are skipped.
///
/// # Errors
/// [`KeyError`] naming the first bad key (1-based).
pub fn parse_keys(text: &str) -> Result<Vec<[u8; KEY_LEN]>, KeyError> {
    let mut keys: Vec<[u8; KEY_LEN]> = Vec::new();
    let entries = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty());
    for (i, entry) in entries.enumerate() {
        let key = decode_key(entry).ok_or(KeyError::BadKey(i + 1))?;
        if keys.contains(&key) {
            return Err(KeyError::Duplicate(i + 1));
        }
        keys.push(key);
    }
    if keys.is_empty() {
        return Err(KeyError::Empty);
    }
    Ok(keys)
}

fn decode_key(entry: &str) -> Option<[u8; KEY_LEN]> {
    let bytes = if entry.len() == 2 * KEY_LEN && entry.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..KEY_LEN)
            .map(|i| u8::from_str_radix(&entry[2 * i..2 * i + 2], 16).ok())
            .collect::<Option<Vec<u8>>>()?
    } else {
        URL_SAFE_NO_PAD.decode(entry.trim_end_matches('=')).ok()?
    };
    bytes.try_into().ok()
}

fn hint(key: &[u8]) -> [u8; HINT_LEN] {
    let d = digest(&SHA256, key);
    let mut h = [0u8; HINT_LEN];
    h.copy_from_slice(&d.as_ref()[..HINT_LEN]);
    h
}

impl Sealer {
    /// A sealer over `keys` (the first seals).
    ///
    /// # Errors
    /// [`KeyError::Empty`] or [`KeyError::Duplicate`].
    pub fn new(keys: &[[u8; KEY_LEN]]) -> Result<Sealer, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        let mut out: Vec<Key> = Vec::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].contains(k) {
                return Err(KeyError::Duplicate(i + 1));
            }
            // 32 bytes is always a valid AES-256 key.
            let unbound = UnboundKey::new(&AES_256_GCM, k).map_err(|_| KeyError::BadKey(i + 1))?;
            out.push(Key {
                hint: hint(k),
                aead: LessSafeKey::new(unbound),
            });
        }
        Ok(Sealer {
            keys: out,
            rng: SystemRandom::new(),
        })
    }

    /// Seals `plain` for `purpose` with the first key.
    ///
    /// # Errors
    /// [`SealError::TooLarge`] when the sealed value would be over
    /// [`MAX_COOKIE_VALUE`]; [`SealError::Random`] without randomness.
    pub fn seal(&self, purpose: &[u8], plain: &[u8]) -> Result<String, SealError> {
        let raw_len = HINT_LEN + NONCE_LEN + plain.len() + TAG_LEN;
        if PREFIX.len() + base64_len(raw_len) > MAX_COOKIE_VALUE {
            return Err(SealError::TooLarge);
        }
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SealError::Random)?;
        let mut buf = Vec::with_capacity(raw_len);
        buf.extend_from_slice(&key.hint);
        buf.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        key.aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(purpose),
                &mut body,
            )
            .map_err(|_| SealError::Tampered)?;
        buf.extend_from_slice(&body);
        let mut out = String::with_capacity(PREFIX.len() + base64_len(raw_len));
        out.push_str(PREFIX);
        URL_SAFE_NO_PAD.encode_string(&buf, &mut out);
        Ok(out)
    }

    /// Opens `value` sealed for `purpose` by any of the keys.
    ///
    /// # Errors
    /// The [`SealError`] it failed with; never succeeds without the right key and purpose.
    pub fn open(&self, purpose: &[u8], value: &str) -> Result<Vec<u8>, SealError> {
        if value.len() > MAX_COOKIE_VALUE {
            return Err(SealError::TooLarge);
        }
        let b64 = value.strip_prefix(PREFIX).ok_or(SealError::Malformed)?;
        let mut raw = URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|_| SealError::Malformed)?;
        if raw.len() < HINT_LEN + NONCE_LEN + TAG_LEN {
            return Err(SealError::Malformed);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&raw[HINT_LEN..HINT_LEN + NONCE_LEN]);
        let mut hint = [0u8; HINT_LEN];
        hint.copy_from_slice(&raw[..HINT_LEN]);
        let start = HINT_LEN + NONCE_LEN;
        let mut matching = self.keys.iter().filter(|k| k.hint == hint).peekable();
        if matching.peek().is_none() {
            return Err(SealError::UnknownKey);
        }
        // Keys sharing a hint (1 in 2^32) each open a copy; the last (normally the
        // only) one opens the decoded bytes in place.
        while let Some(key) = matching.next() {
            if matching.peek().is_some() {
                let mut copy = raw.clone();
                if let Some(n) = open_within(key, purpose, nonce, &mut copy, start) {
                    copy.truncate(n);
                    return Ok(copy);
                }
            } else if let Some(n) = open_within(key, purpose, nonce, &mut raw, start) {
                raw.truncate(n);
                return Ok(raw);
            }
        }
        Err(SealError::Tampered)
    }
}

/// Opens `buf[start..]` in place, the plaintext moved to the front; its length.
fn open_within(
    key: &Key,
    purpose: &[u8],
    nonce: [u8; NONCE_LEN],
    buf: &mut [u8],
    start: usize,
) -> Option<usize> {
    key.aead
        .open_within(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(purpose),
            buf,
            start..,
        )
        .ok()
        .map(|plain| plain.len())
}

/// Length of unpadded base64 of `n` bytes.
const fn base64_len(n: usize) -> usize {
    (n * 4).div_ceil(3)
}

/// 32 fresh random bytes, base64url without padding: `state`, `nonce`, PKCE verifier.
///
/// # Errors
/// [`SealError::Random`] without randomness.
pub fn random_token() -> Result<String, SealError> {
    let mut b = [0u8; 32];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| SealError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(b: u8) -> [u8; KEY_LEN] {
        [b; KEY_LEN]
    }

    #[test]
    fn round_trip_and_purpose_binding() {
        let s = Sealer::new(&[key(1)]).unwrap();
        let v = s.seal(PURPOSE_SESSION, b"hello").unwrap();
        assert!(v.starts_with("v1."));
        assert_eq!(s.open(PURPOSE_SESSION, &v).unwrap(), b"hello");
        assert_eq!(s.open(PURPOSE_STATE, &v), Err(SealError::Tampered));
        // A fresh nonce each time.
        assert_ne!(v, s.seal(PURPOSE_SESSION, b"hello").unwrap());
    }

    #[test]
    fn rotation_old_key_second_still_opens_new_seals_use_first() {
        let old = Sealer::new(&[key(1)]).unwrap();
        let rotated = Sealer::new(&[key(2), key(1)]).unwrap();
        let only_new = Sealer::new(&[key(2)]).unwrap();
        let before = old.seal(PURPOSE_SESSION, b"x").unwrap();
        assert_eq!(rotated.open(PURPOSE_SESSION, &before).unwrap(), b"x");
        let after = rotated.seal(PURPOSE_SESSION, b"y").unwrap();
        assert_eq!(only_new.open(PURPOSE_SESSION, &after).unwrap(), b"y");
        assert_eq!(
            old.open(PURPOSE_SESSION, &after),
            Err(SealError::UnknownKey)
        );
        assert_eq!(
            only_new.open(PURPOSE_SESSION, &before),
            Err(SealError::UnknownKey)
        );
    }

    #[test]
    fn tampering_is_refused() {
        let s = Sealer::new(&[key(1)]).unwrap();
        let v = s.seal(PURPOSE_SESSION, b"{\"s\":\"alice\"}").unwrap();
        let mut raw = URL_SAFE_NO_PAD.decode(&v[3..]).unwrap();
        for i in [0, 5, HINT_LEN + NONCE_LEN, raw.len() - 1] {
            raw[i] ^= 1;
            let t = format!("v1.{}", URL_SAFE_NO_PAD.encode(&raw));
            let e = s.open(PURPOSE_SESSION, &t).unwrap_err();
            assert!(
                matches!(e, SealError::Tampered | SealError::UnknownKey),
                "{i}: {e:?}"
            );
            raw[i] ^= 1;
        }
        assert_eq!(
            s.open(PURPOSE_SESSION, "v2.AAAA"),
            Err(SealError::Malformed)
        );
        assert_eq!(s.open(PURPOSE_SESSION, "v1.AA"), Err(SealError::Malformed));
        assert_eq!(
            s.open(PURPOSE_SESSION, "v1.!!!!"),
            Err(SealError::Malformed)
        );
        assert_eq!(s.open(PURPOSE_SESSION, ""), Err(SealError::Malformed));
    }

    #[test]
    fn size_limit_both_ways() {
        let s = Sealer::new(&[key(1)]).unwrap();
        let big = vec![b'a'; MAX_COOKIE_VALUE];
        assert_eq!(s.seal(PURPOSE_SESSION, &big), Err(SealError::TooLarge));
        let fits = vec![b'a'; 2_000];
        assert!(s.seal(PURPOSE_SESSION, &fits).unwrap().len() <= MAX_COOKIE_VALUE);
        let long = format!("v1.{}", "A".repeat(MAX_COOKIE_VALUE));
        assert_eq!(s.open(PURPOSE_SESSION, &long), Err(SealError::TooLarge));
        // The largest plaintext that fits seals to at most the limit.
        let max_plain = (MAX_COOKIE_VALUE - 3) * 3 / 4 - HINT_LEN - NONCE_LEN - TAG_LEN;
        let v = s.seal(PURPOSE_SESSION, &vec![0; max_plain]).unwrap();
        assert!(v.len() <= MAX_COOKIE_VALUE);
        assert_eq!(
            s.seal(PURPOSE_SESSION, &vec![0; max_plain + 1]),
            Err(SealError::TooLarge)
        );
    }

    #[test]
    fn key_lists() {
        let b64 = URL_SAFE_NO_PAD.encode(key(7));
        let hex: String = key(8).iter().map(|b| format!("{b:02x}")).collect();
        let keys = parse_keys(&format!("# comment\n{b64}\n{hex}, \n")).unwrap();
        assert_eq!(keys, vec![key(7), key(8)]);
        assert_eq!(parse_keys(" \n"), Err(KeyError::Empty));
        assert_eq!(parse_keys("abc"), Err(KeyError::BadKey(1)));
        let short = URL_SAFE_NO_PAD.encode([1u8; 31]);
        assert_eq!(
            parse_keys(&format!("{b64},{short}")),
            Err(KeyError::BadKey(2))
        );
        assert_eq!(
            parse_keys(&format!("{b64},{hex},{b64}")),
            Err(KeyError::Duplicate(3))
        );
        assert!(matches!(Sealer::new(&[]), Err(KeyError::Empty)));
        assert!(format!("{:?}", Sealer::new(&[key(1)]).unwrap()).contains("keys: 1"));
    }

    #[test]
    fn random_tokens_are_43_chars_and_differ() {
        let a = random_token().unwrap();
        assert_eq!(a.len(), 43);
        assert_ne!(a, random_token().unwrap());
    }

    proptest! {
        #[test]
        fn open_of_arbitrary_strings_never_panics_or_succeeds(s in ".{0,400}") {
            let sealer = Sealer::new(&[key(3)]).unwrap();
            prop_assert!(sealer.open(PURPOSE_SESSION, &s).is_err());
            let prefixed = format!("v1.{s}");
            prop_assert!(sealer.open(PURPOSE_SESSION, &prefixed).is_err());
        }

        #[test]
        fn open_of_well_formed_random_bytes_with_our_hint_fails(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let sealer = Sealer::new(&[key(3)]).unwrap();
            let mut raw = hint(&key(3)).to_vec();
            raw.extend_from_slice(&body);
            let v = format!("v1.{}", URL_SAFE_NO_PAD.encode(&raw));
            prop_assert!(sealer.open(PURPOSE_SESSION, &v).is_err());
        }
    }
}
