//! Bytes in → frame: HAProxy's "peers" varint, used for every length, id and
//! integer on the SPOP wire. It is not LEB128: the encoder subtracts 240 and 128 at
//! each step and the decoder adds bytes unmasked (see `include/haproxy/intops.h`).

use bytes::BufMut;

use super::DecodeError;

/// A u64 never needs more than 10 bytes; anything longer is an attack or garbage.
pub const MAX_LEN: usize = 10;

/// Appends `v` exactly as HAProxy's `encode_varint()` does.
pub fn encode(mut v: u64, out: &mut impl BufMut) {
    if v < 240 {
        out.put_u8(v as u8);
        return;
    }
    out.put_u8((v as u8) | 0xF0);
    v = (v - 240) >> 4;
    while v >= 128 {
        out.put_u8((v as u8) | 0x80);
        v = (v - 128) >> 7;
    }
    out.put_u8(v as u8);
}

/// The number of bytes `encode(v)` writes.
pub fn encoded_len(mut v: u64) -> usize {
    if v < 240 {
        return 1;
    }
    let mut n = 2;
    v = (v - 240) >> 4;
    while v >= 128 {
        n += 1;
        v = (v - 128) >> 7;
    }
    n
}

/// Decodes one varint at the start of `input`, returning the value and the
/// number of bytes read.
///
/// # Errors
/// `Truncated` when the input ends inside the varint, `VarintTooLong` past 10
/// bytes, `VarintOverflow` when the (non-canonical) encoding exceeds u64.
pub fn decode(input: &[u8]) -> Result<(u64, usize), DecodeError> {
    let first = *input.first().ok_or(DecodeError::Truncated("varint"))?;
    if first < 240 {
        return Ok((u64::from(first), 1));
    }
    // Exact arithmetic in u128: HAProxy's decoder wraps silently, we refuse.
    let mut value = u128::from(first);
    let mut shift = 4u32;
    let mut k = 1;
    loop {
        if k >= MAX_LEN {
            return Err(DecodeError::VarintTooLong);
        }
        let b = *input.get(k).ok_or(DecodeError::Truncated("varint"))?;
        value += u128::from(b) << shift;
        shift += 7;
        k += 1;
        if b < 128 {
            break;
        }
    }
    u64::try_from(value)
        .map(|v| (v, k))
        .map_err(|_| DecodeError::VarintOverflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/spop.md#varints: every row checked against HAProxy's C algorithm.
    pub(crate) const GOLDEN: &[(u64, &[u8])] = &[
        (0, &[0x00]),
        (1, &[0x01]),
        (75, &[0x4B]),
        (239, &[0xEF]),
        (240, &[0xF0, 0x00]),
        (241, &[0xF1, 0x00]),
        (255, &[0xFF, 0x00]),
        (300, &[0xFC, 0x03]),
        (443, &[0xFB, 0x0C]),
        (1000, &[0xF8, 0x2F]),
        (2287, &[0xFF, 0x7F]),
        (2288, &[0xF0, 0x80, 0x00]),
        (2300, &[0xFC, 0x80, 0x00]),
        (4660, &[0xF4, 0x94, 0x01]),
        (16380, &[0xFC, 0xF0, 0x06]),
        (56610, &[0xF2, 0xC3, 0x1A]),
        (65535, &[0xFF, 0xF0, 0x1E]),
        (264431, &[0xFF, 0xFF, 0x7F]),
        (264432, &[0xF0, 0x80, 0x80, 0x00]),
        (33818863, &[0xFF, 0xFF, 0xFF, 0x7F]),
        (33818864, &[0xF0, 0x80, 0x80, 0x80, 0x00]),
        (u32::MAX as u64, &[0xFF, 0xF0, 0xFE, 0xFE, 0x7E]),
        (
            i64::MAX as u64,
            &[0xFF, 0xF0, 0xFE, 0xFE, 0xFE, 0xFE, 0xFE, 0xFE, 0xFE, 0x06],
        ),
        (
            u64::MAX,
            &[0xFF, 0xF0, 0xFE, 0xFE, 0xFE, 0xFE, 0xFE, 0xFE, 0xFE, 0x0E],
        ),
        (
            u64::MAX - 4,
            &[0xFB, 0xF0, 0xFE, 0xFE, 0xFE, 0xFE, 0xFE, 0xFE, 0xFE, 0x0E],
        ),
    ];

    #[test]
    fn golden_encode_and_decode() {
        for &(v, bytes) in GOLDEN {
            let mut out = Vec::new();
            encode(v, &mut out);
            assert_eq!(out, bytes, "encode {v}");
            assert_eq!(encoded_len(v), bytes.len(), "len {v}");
            assert_eq!(decode(bytes), Ok((v, bytes.len())), "decode {v}");
        }
    }

    #[test]
    fn every_golden_prefix_is_truncated() {
        for &(_, bytes) in GOLDEN {
            for cut in 0..bytes.len() {
                assert_eq!(decode(&bytes[..cut]), Err(DecodeError::Truncated("varint")));
            }
        }
    }

    #[test]
    fn eleven_bytes_rejected() {
        let mut b = vec![0xFF];
        b.extend([0xFE; 10]);
        assert_eq!(decode(&b), Err(DecodeError::VarintTooLong));
        // 10 continuation bytes even with a final terminator after them.
        b.push(0x00);
        assert_eq!(decode(&b), Err(DecodeError::VarintTooLong));
    }

    #[test]
    fn overflow_rejected() {
        let b = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F];
        assert_eq!(decode(&b), Err(DecodeError::VarintOverflow));
    }

    #[test]
    fn round_trip_boundaries() {
        for v in (0..300_000u64).chain([u64::MAX, u64::MAX - 1, 1 << 63, (1 << 63) - 1]) {
            let mut out = Vec::new();
            encode(v, &mut out);
            assert_eq!(decode(&out), Ok((v, out.len())));
        }
    }

    proptest::proptest! {
        #[test]
        fn round_trips(v: u64) {
            let mut out = Vec::new();
            encode(v, &mut out);
            proptest::prop_assert!(out.len() <= MAX_LEN);
            proptest::prop_assert_eq!(decode(&out), Ok((v, out.len())));
        }

        #[test]
        fn arbitrary_bytes_never_panic(b: Vec<u8>) {
            let _ = decode(&b);
        }
    }
}
