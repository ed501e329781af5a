//! Frame → message: SPOP typed data (the values of KV-lists, message arguments and
//! set-var actions) and the untyped names beside them. Decoding borrows from the
//! frame buffer; encoding appends to any `BufMut`.

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::BufMut;

use super::{DecodeError, varint};

const T_NULL: u8 = 0;
const T_BOOL: u8 = 1;
const T_INT32: u8 = 2;
const T_UINT32: u8 = 3;
const T_INT64: u8 = 4;
const T_UINT64: u8 = 5;
const T_IPV4: u8 = 6;
const T_IPV6: u8 = 7;
pub(super) const T_STR: u8 = 8;
const T_BIN: u8 = 9;
const FL_TRUE: u8 = 0x10;

/// One SPOP value. Strings are bytes: HAProxy does not promise UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypedData<'a> {
    Null,
    Bool(bool),
    Int32(i32),
    Uint32(u32),
    Int64(i64),
    Uint64(u64),
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
    Str(Cow<'a, [u8]>),
    Bin(Cow<'a, [u8]>),
}

impl<'a> TypedData<'a> {
    /// A STRING value borrowing `s`.
    pub fn str(s: &'a str) -> Self {
        TypedData::Str(Cow::Borrowed(s.as_bytes()))
    }

    /// A STRING value owning `s`.
    pub fn string(s: String) -> TypedData<'static> {
        TypedData::Str(Cow::Owned(s.into_bytes()))
    }

    /// The bytes of a STRING or BINARY value.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            TypedData::Str(b) | TypedData::Bin(b) => Some(b),
            _ => None,
        }
    }

    /// The text of a STRING value, when it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            TypedData::Str(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// Any of the four integer types, as HAProxy reads them (all become a signed 64-bit).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            TypedData::Int32(v) => Some(v.into()),
            TypedData::Uint32(v) => Some(v.into()),
            TypedData::Int64(v) => Some(v),
            TypedData::Uint64(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Decodes one typed value at the start of `input`; returns it and the bytes read.
    ///
    /// # Errors
    /// Truncation, an unknown type nibble, or an integer out of its type's range.
    pub fn decode(input: &'a [u8]) -> Result<(Self, usize), DecodeError> {
        let tag = *input.first().ok_or(DecodeError::Truncated("typed data"))?;
        let rest = &input[1..];
        let int = |rest: &[u8]| varint::decode(rest);
        let (value, used) = match tag & 0x0F {
            T_NULL => (TypedData::Null, 0),
            T_BOOL => (TypedData::Bool(tag & 0xF0 == FL_TRUE), 0),
            T_INT32 => {
                let (v, n) = int(rest)?;
                // Two's complement through i64, as HAProxy encodes signed samples.
                let v = i32::try_from(v as i64).map_err(|_| DecodeError::IntOutOfRange("INT32"))?;
                (TypedData::Int32(v), n)
            }
            T_UINT32 => {
                let (v, n) = int(rest)?;
                let v = u32::try_from(v).map_err(|_| DecodeError::IntOutOfRange("UINT32"))?;
                (TypedData::Uint32(v), n)
            }
            T_INT64 => {
                let (v, n) = int(rest)?;
                (TypedData::Int64(v as i64), n)
            }
            T_UINT64 => {
                let (v, n) = int(rest)?;
                (TypedData::Uint64(v), n)
            }
            T_IPV4 => {
                let b: [u8; 4] = take(rest, 4, "IPV4")?
                    .try_into()
                    .map_err(|_| DecodeError::Truncated("IPV4"))?;
                (TypedData::Ipv4(Ipv4Addr::from(b)), 4)
            }
            T_IPV6 => {
                let b: [u8; 16] = take(rest, 16, "IPV6")?
                    .try_into()
                    .map_err(|_| DecodeError::Truncated("IPV6"))?;
                (TypedData::Ipv6(Ipv6Addr::from(b)), 16)
            }
            T_STR => {
                let (b, n) = decode_bytes(rest)?;
                (TypedData::Str(Cow::Borrowed(b)), n)
            }
            T_BIN => {
                let (b, n) = decode_bytes(rest)?;
                (TypedData::Bin(Cow::Borrowed(b)), n)
            }
            other => return Err(DecodeError::UnknownDataType(other)),
        };
        Ok((value, 1 + used))
    }

    /// Appends the value in SPOP typed-data form.
    pub fn encode(&self, out: &mut impl BufMut) {
        match self {
            TypedData::Null => out.put_u8(T_NULL),
            // false is 0x01, never 0x10 (that reads as NULL and unsets the variable).
            TypedData::Bool(b) => out.put_u8(if *b { T_BOOL | FL_TRUE } else { T_BOOL }),
            TypedData::Int32(v) => {
                out.put_u8(T_INT32);
                varint::encode(i64::from(*v) as u64, out);
            }
            TypedData::Uint32(v) => {
                out.put_u8(T_UINT32);
                varint::encode(u64::from(*v), out);
            }
            TypedData::Int64(v) => {
                out.put_u8(T_INT64);
                varint::encode(*v as u64, out);
            }
            TypedData::Uint64(v) => {
                out.put_u8(T_UINT64);
                varint::encode(*v, out);
            }
            TypedData::Ipv4(a) => {
                out.put_u8(T_IPV4);
                out.put_slice(&a.octets());
            }
            TypedData::Ipv6(a) => {
                out.put_u8(T_IPV6);
                out.put_slice(&a.octets());
            }
            TypedData::Str(b) => {
                out.put_u8(T_STR);
                encode_bytes(b, out);
            }
            TypedData::Bin(b) => {
                out.put_u8(T_BIN);
                encode_bytes(b, out);
            }
        }
    }

    /// The number of bytes `encode` writes.
    pub fn encoded_len(&self) -> usize {
        match self {
            TypedData::Null | TypedData::Bool(_) => 1,
            TypedData::Int32(v) => 1 + varint::encoded_len(i64::from(*v) as u64),
            TypedData::Uint32(v) => 1 + varint::encoded_len(u64::from(*v)),
            TypedData::Int64(v) => 1 + varint::encoded_len(*v as u64),
            TypedData::Uint64(v) => 1 + varint::encoded_len(*v),
            TypedData::Ipv4(_) => 5,
            TypedData::Ipv6(_) => 17,
            TypedData::Str(b) | TypedData::Bin(b) => 1 + bytes_len(b),
        }
    }

    /// Detaches the value from the frame buffer.
    pub fn into_owned(self) -> TypedData<'static> {
        match self {
            TypedData::Null => TypedData::Null,
            TypedData::Bool(b) => TypedData::Bool(b),
            TypedData::Int32(v) => TypedData::Int32(v),
            TypedData::Uint32(v) => TypedData::Uint32(v),
            TypedData::Int64(v) => TypedData::Int64(v),
            TypedData::Uint64(v) => TypedData::Uint64(v),
            TypedData::Ipv4(a) => TypedData::Ipv4(a),
            TypedData::Ipv6(a) => TypedData::Ipv6(a),
            TypedData::Str(b) => TypedData::Str(Cow::Owned(b.into_owned())),
            TypedData::Bin(b) => TypedData::Bin(Cow::Owned(b.into_owned())),
        }
    }
}

fn take<'a>(input: &'a [u8], n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
    input.get(..n).ok_or(DecodeError::Truncated(what))
}

/// Decodes `<varint length><bytes>`: a name, or the body of a STRING/BINARY.
pub fn decode_bytes(input: &[u8]) -> Result<(&[u8], usize), DecodeError> {
    let (len, n) = varint::decode(input)?;
    let len = usize::try_from(len).map_err(|_| DecodeError::Truncated("string"))?;
    let end = n.checked_add(len).ok_or(DecodeError::Truncated("string"))?;
    let b = input.get(n..end).ok_or(DecodeError::Truncated("string"))?;
    Ok((b, end))
}

/// Appends `<varint length><bytes>`.
pub fn encode_bytes(b: &[u8], out: &mut impl BufMut) {
    varint::encode(b.len() as u64, out);
    out.put_slice(b);
}

/// The number of bytes `encode_bytes(b)` writes.
pub fn bytes_len(b: &[u8]) -> usize {
    varint::encoded_len(b.len() as u64) + b.len()
}

/// One KV-list item or message argument: a name (no type byte; may be empty or
/// repeated) and a typed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arg<'a> {
    pub name: Cow<'a, [u8]>,
    pub value: TypedData<'a>,
}

impl<'a> Arg<'a> {
    pub fn new(name: &'a str, value: TypedData<'a>) -> Self {
        Arg {
            name: Cow::Borrowed(name.as_bytes()),
            value,
        }
    }

    /// Decodes `<name><typed data>`.
    pub fn decode(input: &'a [u8]) -> Result<(Self, usize), DecodeError> {
        let (name, n) = decode_bytes(input)?;
        let (value, m) = TypedData::decode(&input[n..])?;
        Ok((
            Arg {
                name: Cow::Borrowed(name),
                value,
            },
            n + m,
        ))
    }

    pub fn encode(&self, out: &mut impl BufMut) {
        encode_bytes(&self.name, out);
        self.value.encode(out);
    }

    pub fn encoded_len(&self) -> usize {
        bytes_len(&self.name) + self.value.encoded_len()
    }
}

/// Decodes a KV-list that fills `input` entirely (HELLO and DISCONNECT payloads).
pub fn decode_kv_list(mut input: &[u8]) -> Result<Vec<Arg<'_>>, DecodeError> {
    let mut items = Vec::new();
    while !input.is_empty() {
        let (arg, n) = Arg::decode(input)?;
        items.push(arg);
        input = &input[n..];
    }
    Ok(items)
}

/// The first item named `name` (HAProxy matches KV names the same way).
pub fn kv_get<'s, 'a>(items: &'s [Arg<'a>], name: &str) -> Option<&'s TypedData<'a>> {
    items
        .iter()
        .find(|a| a.name.as_ref() == name.as_bytes())
        .map(|a| &a.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    /// `as_str` takes UTF-8 only: valid text, and each kind of invalid sequence, alone,
    /// at the end of a long run of ASCII and at its start, refused.
    #[test]
    fn as_str_takes_utf8_and_refuses_the_rest() {
        let long = "a".repeat(300);
        let bad: [&[u8]; 8] = [
            b"\xff",
            b"\xc0\xaf",         // overlong '/'
            b"\xed\xa0\x80",     // a surrogate
            b"\xf4\x90\x80\x80", // beyond U+10FFFF
            b"\xe2\x82",         // truncated
            b"\x80",
            b"\xf0\x9f\x98", // truncated 4-byte
            b"\xc2",
        ];
        for b in bad {
            for text in [
                b.to_vec(),
                [long.as_bytes(), b].concat(),
                [b, long.as_bytes()].concat(),
            ] {
                assert_eq!(std::str::from_utf8(&text).ok(), None);
                assert_eq!(
                    TypedData::Str(Cow::Borrowed(&text)).as_str(),
                    None,
                    "{text:?}"
                );
            }
        }
        let good = format!("{long}é€😀\u{2028}{long}");
        assert_eq!(
            TypedData::Str(Cow::Borrowed(good.as_bytes())).as_str(),
            Some(good.as_str())
        );
        assert_eq!(
            TypedData::Bin(Cow::Borrowed(good.as_bytes())).as_str(),
            None
        );
    }

    #[test]
    fn golden_values() {
        let table: Vec<(TypedData, Vec<u8>)> = vec![
            (TypedData::Null, hex("00")),
            (TypedData::Bool(false), hex("01")),
            (TypedData::Bool(true), hex("11")),
            (TypedData::Int32(75), hex("02 4B")),
            (TypedData::Uint32(16380), hex("03 FC F0 06")),
            (TypedData::Int64(443), hex("04 FB 0C")),
            (
                TypedData::Int64(-1),
                hex("04 FF F0 FE FE FE FE FE FE FE 0E"),
            ),
            (
                TypedData::Int64(-5),
                hex("04 FB F0 FE FE FE FE FE FE FE 0E"),
            ),
            (
                TypedData::Ipv4(Ipv4Addr::new(127, 0, 0, 1)),
                hex("06 7F 00 00 01"),
            ),
            (
                TypedData::Ipv6(Ipv6Addr::LOCALHOST),
                hex("07 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01"),
            ),
            (TypedData::str("2.0"), hex("08 03 32 2E 30")),
            (TypedData::Bin(Cow::Borrowed(b"")), hex("09 00")),
        ];
        for (value, bytes) in table {
            let mut out = Vec::new();
            value.encode(&mut out);
            assert_eq!(out, bytes, "encode {value:?}");
            assert_eq!(value.encoded_len(), bytes.len());
            assert_eq!(TypedData::decode(&bytes), Ok((value, bytes.len())));
            for cut in 0..bytes.len() {
                assert!(TypedData::decode(&bytes[..cut]).is_err());
            }
        }
    }

    #[test]
    fn rejects_reserved_types_and_ranges() {
        assert_eq!(
            TypedData::decode(&[0x0A]),
            Err(DecodeError::UnknownDataType(10))
        );
        // UINT32 carrying 2^32.
        let mut b = vec![0x03];
        varint::encode(1 << 32, &mut b);
        assert_eq!(
            TypedData::decode(&b),
            Err(DecodeError::IntOutOfRange("UINT32"))
        );
        // Huge string length must not allocate or panic.
        let b = hex("08 FF F0 FE FE FE FE FE FE FE 0E");
        assert!(TypedData::decode(&b).is_err());
    }

    fn arb_data() -> impl proptest::strategy::Strategy<Value = TypedData<'static>> {
        use proptest::prelude::*;
        prop_oneof![
            Just(TypedData::Null),
            any::<bool>().prop_map(TypedData::Bool),
            any::<i32>().prop_map(TypedData::Int32),
            any::<u32>().prop_map(TypedData::Uint32),
            any::<i64>().prop_map(TypedData::Int64),
            any::<u64>().prop_map(TypedData::Uint64),
            any::<[u8; 4]>().prop_map(|b| TypedData::Ipv4(b.into())),
            any::<[u8; 16]>().prop_map(|b| TypedData::Ipv6(b.into())),
            proptest::collection::vec(any::<u8>(), 0..300)
                .prop_map(|b| TypedData::Str(Cow::Owned(b))),
            proptest::collection::vec(any::<u8>(), 0..300)
                .prop_map(|b| TypedData::Bin(Cow::Owned(b))),
        ]
    }

    proptest::proptest! {
        #[test]
        fn typed_data_round_trips(v in arb_data()) {
            let mut out = Vec::new();
            v.encode(&mut out);
            proptest::prop_assert_eq!(out.len(), v.encoded_len());
            let (back, n) = TypedData::decode(&out).unwrap();
            proptest::prop_assert_eq!(n, out.len());
            proptest::prop_assert_eq!(back, v);
        }

        #[test]
        fn arbitrary_bytes_never_panic(b: Vec<u8>) {
            let _ = TypedData::decode(&b);
            let _ = decode_kv_list(&b);
        }
    }
}
