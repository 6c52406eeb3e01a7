//! Canonical MessagePack: one encoding per value, so that two servers (or
//! clients) that encode the same tuple differently still hash it the same.
//!
//! Tarantool stores a tuple's MessagePack as it was given (or as its update
//! engine produced it) and returns it as stored, so the same row can be
//! held as different bytes on two clusters: an integer written by one
//! client as `uint16` and by another as a positive fixint, a float32 and a
//! float64 of the same value, an integral double where the other side
//! holds the integer (Tarantool itself compares `1` and `1.0` equal in
//! `number`/`scalar` keys), maps whose pairs come in another order. Online
//! verification (`docs/verify.md`) compares per-row hashes computed here,
//! on both sides, by this one function: never by Lua on the servers, so the
//! result does not depend on the Tarantool version (2.x or 3.x) either.
//!
//! The canonical form:
//! * integers of any width or signedness: the shortest encoding of the value
//!   (non-negative values as unsigned);
//! * floats (32 or 64 bits): an integral value that fits `i64`/`u64` is the
//!   integer; `-0.0` is `0`; NaN is one NaN; anything else a float64;
//! * strings and binaries: shortest headers, bytes as they are (`str` and
//!   `bin` stay distinct);
//! * arrays: shortest header, elements canonical;
//! * maps: shortest header, pairs canonical and sorted by their canonical key;
//! * extensions (decimal, UUID, datetime, ...): shortest header, type and
//!   payload as they are;
//! * nil and booleans as they are.
//!
//! Nesting deeper than [`MAX_DEPTH`] is an error rather than a deep recursion.

use sha1::{Digest, Sha1};

use crate::msgpack::{DecodeError, Reader, write};

/// Nesting depth beyond which a value is refused.
pub const MAX_DEPTH: usize = 64;

/// Why a value has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonError {
    /// Not one well-formed MessagePack value.
    #[error("malformed msgpack: {0}")]
    Decode(#[from] DecodeError),
    /// Bytes after the value.
    #[error("{0} byte(s) after the value")]
    Trailing(usize),
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("value nested deeper than {MAX_DEPTH}")]
    TooDeep,
    /// A tuple that is not an array.
    #[error("a tuple must be an array (marker 0x{0:02x})")]
    NotATuple(u8),
    /// A key part's field is missing from the tuple.
    #[error("the tuple has {len} field(s); key field {field} is missing")]
    MissingField {
        /// 0-based field number asked for.
        field: u32,
        /// Fields the tuple has.
        len: u32,
    },
}

/// The canonical encoding of the single MessagePack value in `raw`.
pub fn canonical(raw: &[u8]) -> Result<Vec<u8>, CanonError> {
    let mut out = Vec::with_capacity(raw.len());
    canonical_into(raw, &mut out)?;
    Ok(out)
}

/// Appends the canonical encoding of the single value in `raw` to `out`.
pub fn canonical_into(raw: &[u8], out: &mut Vec<u8>) -> Result<(), CanonError> {
    let mut r = Reader::new(raw);
    value(&mut r, out, 0)?;
    if !r.is_empty() {
        return Err(CanonError::Trailing(r.rest().len()));
    }
    Ok(())
}

/// The 64-bit hash of a value's canonical form (the first eight bytes of
/// its SHA-1, big-endian): what verification compares per row.
pub fn hash(raw: &[u8]) -> Result<u64, CanonError> {
    let mut buf = Vec::with_capacity(raw.len());
    canonical_into(raw, &mut buf)?;
    Ok(hash_canonical(&buf))
}

/// The hash of bytes that are already canonical.
pub fn hash_canonical(canonical: &[u8]) -> u64 {
    let d = Sha1::digest(canonical);
    let mut b = [0u8; 8];
    b.copy_from_slice(d.get(..8).unwrap_or(&[0u8; 8]));
    u64::from_be_bytes(b)
}

/// The key of `tuple` for a primary key made of `fields` (0-based, in key
/// order): an array of the fields' raw MessagePack, as a request's key.
pub fn key_of(tuple: &[u8], fields: &[u32]) -> Result<Vec<u8>, CanonError> {
    let mut r = Reader::new(tuple);
    let marker = r.peek_marker()?;
    let len = r
        .read_array_len()
        .map_err(|_| CanonError::NotATuple(marker))?;
    let mut slices: Vec<Option<&[u8]>> = vec![None; fields.len()];
    let last = fields.iter().copied().max().unwrap_or(0);
    for i in 0..len.min(last.saturating_add(1)) {
        let v = r.skip()?;
        for (slot, f) in slices.iter_mut().zip(fields) {
            if *f == i {
                *slot = Some(v);
            }
        }
    }
    let mut out = Vec::new();
    write::array_len(&mut out, fields.len() as u32);
    for (slot, f) in slices.iter().zip(fields) {
        let v = slot.ok_or(CanonError::MissingField { field: *f, len })?;
        out.extend_from_slice(v);
    }
    Ok(out)
}

fn ext(out: &mut Vec<u8>, ty: u8, data: &[u8]) {
    match data.len() {
        1 => out.push(0xd4),
        2 => out.push(0xd5),
        4 => out.push(0xd6),
        8 => out.push(0xd7),
        16 => out.push(0xd8),
        n if n <= usize::from(u8::MAX) => out.extend_from_slice(&[0xc7, n as u8]),
        n if n <= usize::from(u16::MAX) => {
            out.push(0xc8);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0xc9);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
    out.push(ty);
    out.extend_from_slice(data);
}

/// Canonical float: integral values that fit an integer become it.
fn float(out: &mut Vec<u8>, v: f64) {
    if v.is_nan() {
        write::f64(out, f64::NAN);
    } else if v.fract() == 0.0
        && (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&v)
    {
        write::int(out, v as i64);
    } else if v.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&v) {
        write::uint(out, v as u64);
    } else {
        write::f64(out, v);
    }
}

fn value(r: &mut Reader<'_>, out: &mut Vec<u8>, depth: usize) -> Result<(), CanonError> {
    if depth > MAX_DEPTH {
        return Err(CanonError::TooDeep);
    }
    let m = r.peek_marker()?;
    match m {
        0x00..=0x7f | 0xcc..=0xcf => write::uint(out, r.read_u64()?),
        0xe0..=0xff | 0xd0..=0xd3 => {
            // Signed formats may hold non-negative values too.
            let raw = r.skip()?;
            let v = Reader::new(raw).read_i64()?;
            write::int(out, v);
        }
        0xc0 => {
            r.read_nil()?;
            write::nil(out);
        }
        0xc2 | 0xc3 => write::bool(out, r.read_bool()?),
        0xca | 0xcb => float(out, r.read_f64()?),
        0xa0..=0xbf | 0xd9..=0xdb => {
            let s = r.read_str_bytes()?;
            write::str_header(out, s.len());
            out.extend_from_slice(s);
        }
        0xc4..=0xc6 => {
            let raw = r.skip()?;
            let hdr = match m {
                0xc4 => 2,
                0xc5 => 3,
                _ => 5,
            };
            write::bin(out, raw.get(hdr..).unwrap_or_default());
        }
        0xd4..=0xd8 | 0xc7..=0xc9 => {
            let raw = r.skip()?;
            let hdr = match m {
                0xd4..=0xd8 => 1,
                0xc7 => 2,
                0xc8 => 3,
                _ => 5,
            };
            let ty = raw.get(hdr).copied().unwrap_or_default();
            ext(out, ty, raw.get(hdr + 1..).unwrap_or_default());
        }
        0x90..=0x9f | 0xdc | 0xdd => {
            let n = r.read_array_len()?;
            write::array_len(out, n);
            for _ in 0..n {
                value(r, out, depth + 1)?;
            }
        }
        0x80..=0x8f | 0xde | 0xdf => {
            let n = r.read_map_len()?;
            let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            for _ in 0..n {
                let mut k = Vec::new();
                value(r, &mut k, depth + 1)?;
                let mut v = Vec::new();
                value(r, &mut v, depth + 1)?;
                pairs.push((k, v));
            }
            pairs.sort();
            write::map_len(out, n);
            for (k, v) in pairs {
                out.extend_from_slice(&k);
                out.extend_from_slice(&v);
            }
        }
        0xc1 => return Err(DecodeError::Reserved.into()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(bytes: &[u8]) -> Vec<u8> {
        canonical(bytes).unwrap()
    }

    #[test]
    fn integers_of_any_width_are_one_value() {
        // 5 as fixint, uint8, uint16, uint64, int8, int64.
        let five = [
            vec![0x05],
            vec![0xcc, 5],
            vec![0xcd, 0, 5],
            vec![0xcf, 0, 0, 0, 0, 0, 0, 0, 5],
            vec![0xd0, 5],
            vec![0xd3, 0, 0, 0, 0, 0, 0, 0, 5],
        ];
        for f in &five {
            assert_eq!(c(f), vec![0x05], "{f:?}");
        }
        assert_eq!(c(&[0xd1, 0xff, 0xfe]), vec![0xfe], "-2 as int16");
    }

    #[test]
    fn integral_floats_are_integers_and_float32_widens() {
        let one_f64 = [0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0];
        let one_f32 = [0xca, 0x3f, 0x80, 0, 0];
        assert_eq!(c(&one_f64), vec![0x01]);
        assert_eq!(c(&one_f32), vec![0x01]);
        let half_f32 = [0xca, 0x3f, 0x00, 0, 0];
        let half_f64 = [0xcb, 0x3f, 0xe0, 0, 0, 0, 0, 0, 0];
        assert_eq!(c(&half_f32), c(&half_f64));
        assert_eq!(c(&half_f64), half_f64.to_vec());
        let neg_zero = [0xcb, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(c(&neg_zero), vec![0x00]);
    }

    #[test]
    fn maps_are_sorted_and_headers_shortest() {
        // {"b": 1, "a": 2} with a map16 header and str8 keys.
        let m = [0xde, 0, 2, 0xd9, 1, b'b', 0x01, 0xd9, 1, b'a', 0x02];
        assert_eq!(c(&m), vec![0x82, 0xa1, b'a', 0x02, 0xa1, b'b', 0x01]);
        // [1] with an array32 header.
        assert_eq!(c(&[0xdd, 0, 0, 0, 1, 0x01]), vec![0x91, 0x01]);
        // str and bin stay distinct.
        assert_ne!(c(&[0xa1, b'x']), c(&[0xc4, 1, b'x']));
        // ext8 of 16 bytes becomes fixext16.
        let mut e = vec![0xc7, 16, 2];
        e.extend_from_slice(&[7u8; 16]);
        let mut f = vec![0xd8, 2];
        f.extend_from_slice(&[7u8; 16]);
        assert_eq!(c(&e), f);
    }

    #[test]
    fn malformed_input_is_an_error_never_a_panic() {
        assert!(canonical(&[]).is_err());
        assert!(canonical(&[0x92, 0x01]).is_err());
        assert!(canonical(&[0xc1]).is_err());
        assert!(matches!(
            canonical(&[0x01, 0x02]),
            Err(CanonError::Trailing(1))
        ));
        let deep = vec![0x91u8; MAX_DEPTH + 5];
        assert!(matches!(
            canonical(&deep),
            Err(CanonError::TooDeep) | Err(CanonError::Decode(_))
        ));
    }

    #[test]
    fn keys_are_taken_from_the_tuple_in_key_order() {
        // [10, "x", 7]
        let t = [0x93, 0x0a, 0xa1, b'x', 0x07];
        assert_eq!(key_of(&t, &[0]).unwrap(), vec![0x91, 0x0a]);
        assert_eq!(key_of(&t, &[2, 0]).unwrap(), vec![0x92, 0x07, 0x0a]);
        assert!(matches!(
            key_of(&t, &[3]),
            Err(CanonError::MissingField { field: 3, len: 3 })
        ));
        assert!(key_of(&[0x05], &[0]).is_err());
    }

    #[test]
    fn equal_tuples_hash_equal() {
        let a = [0x92, 0x05, 0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0];
        let b = [0x92, 0xcd, 0, 5, 0x01];
        assert_eq!(hash(&a).unwrap(), hash(&b).unwrap());
        assert_ne!(hash(&a).unwrap(), hash(&[0x92, 0x05, 0x02]).unwrap());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = canonical(&bytes);
            let _ = key_of(&bytes, &[0, 1]);
        }

        #[test]
        fn canonical_is_a_fixed_point(v in proptest::num::i64::ANY, s in ".{0,40}") {
            let mut raw = Vec::new();
            write::array_len(&mut raw, 2);
            write::int(&mut raw, v);
            write::str(&mut raw, &s);
            let once = canonical(&raw).unwrap();
            proptest::prop_assert_eq!(canonical(&once).unwrap(), once);
        }
    }
}
