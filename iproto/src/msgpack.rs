//! A small, panic-free MessagePack reader and writer.
//!
//! The reader walks a borrowed slice with checked arithmetic and returns
//! [`DecodeError`] for anything truncated or malformed; it never allocates for
//! values it only skips. The writer appends to a `Vec<u8>` and cannot fail.

use thiserror::Error;

/// Why a MessagePack value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The input ended inside a value.
    #[error("truncated msgpack: needed {needed} more byte(s)")]
    Truncated {
        /// Bytes missing at the point of failure.
        needed: usize,
    },
    /// A value of another type stood where `expected` was required.
    #[error("unexpected msgpack marker 0x{marker:02x}, expected {expected}")]
    Unexpected {
        /// What the reader wanted.
        expected: &'static str,
        /// The marker byte found.
        marker: u8,
    },
    /// The reserved marker 0xc1.
    #[error("reserved msgpack marker 0xc1")]
    Reserved,
    /// An integer that does not fit the requested type.
    #[error("msgpack integer out of range for {target}")]
    OutOfRange {
        /// The requested integer type.
        target: &'static str,
    },
    /// A string that is not UTF-8.
    #[error("msgpack string is not valid UTF-8")]
    Utf8,
    /// More pending nested values than can be counted.
    #[error("msgpack value nested too deeply")]
    TooDeep,
}

/// A cursor over a borrowed MessagePack buffer.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Whether every byte has been consumed.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// The unread rest of the buffer.
    pub fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(DecodeError::Truncated { needed: n })?;
        let s = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated {
            needed: end.saturating_sub(self.buf.len()),
        })?;
        self.pos = end;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?.first().copied().unwrap_or_default())
    }

    fn peek(&self) -> Result<u8, DecodeError> {
        self.buf
            .get(self.pos)
            .copied()
            .ok_or(DecodeError::Truncated { needed: 1 })
    }

    fn be(&mut self, n: usize) -> Result<u64, DecodeError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    /// Whether the next value is nil (does not consume it).
    pub fn peek_is_nil(&self) -> bool {
        self.peek().is_ok_and(|m| m == 0xc0)
    }

    /// The marker byte of the next value (does not consume it).
    pub fn peek_marker(&self) -> Result<u8, DecodeError> {
        self.peek()
    }

    /// Reads nil.
    pub fn read_nil(&mut self) -> Result<(), DecodeError> {
        match self.byte()? {
            0xc0 => Ok(()),
            m => Err(unexpected("nil", m)),
        }
    }

    /// Reads a boolean.
    pub fn read_bool(&mut self) -> Result<bool, DecodeError> {
        match self.byte()? {
            0xc2 => Ok(false),
            0xc3 => Ok(true),
            m => Err(unexpected("bool", m)),
        }
    }

    /// Reads any integer that fits in `u64` (negative values are an error).
    pub fn read_u64(&mut self) -> Result<u64, DecodeError> {
        let m = self.byte()?;
        match m {
            0x00..=0x7f => Ok(u64::from(m)),
            0xcc => self.be(1),
            0xcd => self.be(2),
            0xce => self.be(4),
            0xcf => self.be(8),
            0xd0..=0xd3 | 0xe0..=0xff => {
                self.pos -= 1;
                let v = self.read_i64()?;
                u64::try_from(v).map_err(|_| DecodeError::OutOfRange { target: "u64" })
            }
            _ => Err(unexpected("unsigned integer", m)),
        }
    }

    /// Reads any integer that fits in `i64`.
    pub fn read_i64(&mut self) -> Result<i64, DecodeError> {
        let m = self.byte()?;
        let out_of_range = DecodeError::OutOfRange { target: "i64" };
        match m {
            0x00..=0x7f => Ok(i64::from(m)),
            0xe0..=0xff => Ok(i64::from(m as i8)),
            0xcc..=0xcf => {
                self.pos -= 1;
                i64::try_from(self.read_u64()?).map_err(|_| out_of_range)
            }
            0xd0 => Ok(i64::from(self.be(1)? as u8 as i8)),
            0xd1 => Ok(i64::from(self.be(2)? as u16 as i16)),
            0xd2 => Ok(i64::from(self.be(4)? as u32 as i32)),
            0xd3 => Ok(self.be(8)? as i64),
            _ => Err(unexpected("integer", m)),
        }
    }

    /// Reads an integer that fits in `u32`.
    pub fn read_u32(&mut self) -> Result<u32, DecodeError> {
        u32::try_from(self.read_u64()?).map_err(|_| DecodeError::OutOfRange { target: "u32" })
    }

    /// Reads a float (32 or 64 bit) or an integer as `f64`.
    pub fn read_f64(&mut self) -> Result<f64, DecodeError> {
        match self.peek()? {
            0xca => {
                self.pos += 1;
                Ok(f64::from(f32::from_bits(self.be(4)? as u32)))
            }
            0xcb => {
                self.pos += 1;
                Ok(f64::from_bits(self.be(8)?))
            }
            _ => Ok(self.read_i64()? as f64),
        }
    }

    /// Reads a string header and its bytes.
    pub fn read_str_bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let m = self.byte()?;
        let len = match m {
            0xa0..=0xbf => usize::from(m & 0x1f),
            0xd9 => self.be(1)? as usize,
            0xda => self.be(2)? as usize,
            0xdb => self.be(4)? as usize,
            _ => return Err(unexpected("string", m)),
        };
        self.take(len)
    }

    /// Reads a UTF-8 string.
    pub fn read_str(&mut self) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.read_str_bytes()?).map_err(|_| DecodeError::Utf8)
    }

    /// Reads a string or binary value as bytes.
    pub fn read_str_or_bin(&mut self) -> Result<&'a [u8], DecodeError> {
        let m = self.peek()?;
        let len = match m {
            0xc4..=0xc6 => {
                self.pos += 1;
                self.be(1 << (m - 0xc4))? as usize
            }
            _ => return self.read_str_bytes(),
        };
        self.take(len)
    }

    /// Reads an array header and returns the number of elements.
    pub fn read_array_len(&mut self) -> Result<u32, DecodeError> {
        let m = self.byte()?;
        match m {
            0x90..=0x9f => Ok(u32::from(m & 0x0f)),
            0xdc => Ok(self.be(2)? as u32),
            0xdd => Ok(self.be(4)? as u32),
            _ => Err(unexpected("array", m)),
        }
    }

    /// Reads a map header and returns the number of pairs.
    pub fn read_map_len(&mut self) -> Result<u32, DecodeError> {
        let m = self.byte()?;
        match m {
            0x80..=0x8f => Ok(u32::from(m & 0x0f)),
            0xde => Ok(self.be(2)? as u32),
            0xdf => Ok(self.be(4)? as u32),
            _ => Err(unexpected("map", m)),
        }
    }

    /// Skips one complete value of any type and returns its bytes.
    ///
    /// Iterative (a counter of pending values, no recursion), so hostile input
    /// cannot overflow the stack; a count of pending values larger than the
    /// bytes left is reported as truncated at once.
    pub fn skip(&mut self) -> Result<&'a [u8], DecodeError> {
        let start = self.pos;
        let mut pending: u64 = 1;
        while pending > 0 {
            pending -= 1;
            let m = self.byte()?;
            let (payload, children): (u64, u64) = match m {
                0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
                0x80..=0x8f => (0, 2 * u64::from(m & 0x0f)),
                0x90..=0x9f => (0, u64::from(m & 0x0f)),
                0xa0..=0xbf => (u64::from(m & 0x1f), 0),
                0xc1 => return Err(DecodeError::Reserved),
                0xc4 | 0xd9 => (self.be(1)?, 0),
                0xc5 | 0xda => (self.be(2)?, 0),
                0xc6 | 0xdb => (self.be(4)?, 0),
                0xc7 => (self.be(1)? + 1, 0),
                0xc8 => (self.be(2)? + 1, 0),
                0xc9 => (self.be(4)? + 1, 0),
                0xca => (4, 0),
                0xcb => (8, 0),
                0xcc | 0xd0 => (1, 0),
                0xcd | 0xd1 => (2, 0),
                0xce | 0xd2 => (4, 0),
                0xcf | 0xd3 => (8, 0),
                0xd4 => (2, 0),
                0xd5 => (3, 0),
                0xd6 => (5, 0),
                0xd7 => (9, 0),
                0xd8 => (17, 0),
                0xdc => (0, self.be(2)?),
                0xdd => (0, self.be(4)?),
                0xde => (0, 2 * self.be(2)?),
                0xdf => (0, 2 * self.be(4)?),
            };
            let payload = usize::try_from(payload)
                .map_err(|_| DecodeError::Truncated { needed: usize::MAX })?;
            self.take(payload)?;
            // Every child needs at least one byte: more pending children than
            // bytes left means truncated input, reported without looping.
            pending = pending.checked_add(children).ok_or(DecodeError::TooDeep)?;
            let left = (self.buf.len() - self.pos) as u64;
            if pending > left {
                return Err(DecodeError::Truncated {
                    needed: (pending - left) as usize,
                });
            }
        }
        Ok(self.buf.get(start..self.pos).unwrap_or_default())
    }
}

fn unexpected(expected: &'static str, marker: u8) -> DecodeError {
    DecodeError::Unexpected { expected, marker }
}

/// Appends MessagePack values to a byte vector. Writing cannot fail.
pub mod write {
    /// Appends nil.
    pub fn nil(out: &mut Vec<u8>) {
        out.push(0xc0);
    }

    /// Appends a boolean.
    pub fn bool(out: &mut Vec<u8>, v: bool) {
        out.push(if v { 0xc3 } else { 0xc2 });
    }

    /// Appends an unsigned integer in its shortest encoding.
    pub fn uint(out: &mut Vec<u8>, v: u64) {
        if v < 0x80 {
            out.push(v as u8);
        } else if v <= u64::from(u8::MAX) {
            out.extend_from_slice(&[0xcc, v as u8]);
        } else if v <= u64::from(u16::MAX) {
            out.push(0xcd);
            out.extend_from_slice(&(v as u16).to_be_bytes());
        } else if v <= u64::from(u32::MAX) {
            out.push(0xce);
            out.extend_from_slice(&(v as u32).to_be_bytes());
        } else {
            out.push(0xcf);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }

    /// Appends a signed integer in its shortest encoding.
    pub fn int(out: &mut Vec<u8>, v: i64) {
        if v >= 0 {
            uint(out, v as u64);
        } else if v >= -32 {
            out.push(v as i8 as u8);
        } else if v >= i64::from(i8::MIN) {
            out.extend_from_slice(&[0xd0, v as i8 as u8]);
        } else if v >= i64::from(i16::MIN) {
            out.push(0xd1);
            out.extend_from_slice(&(v as i16).to_be_bytes());
        } else if v >= i64::from(i32::MIN) {
            out.push(0xd2);
            out.extend_from_slice(&(v as i32).to_be_bytes());
        } else {
            out.push(0xd3);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }

    /// Appends a 64-bit float.
    pub fn f64(out: &mut Vec<u8>, v: f64) {
        out.push(0xcb);
        out.extend_from_slice(&v.to_bits().to_be_bytes());
    }

    /// Appends a string.
    pub fn str(out: &mut Vec<u8>, v: &str) {
        str_header(out, v.len());
        out.extend_from_slice(v.as_bytes());
    }

    /// Appends the header of a string of `n` bytes (the bytes follow).
    pub fn str_header(out: &mut Vec<u8>, n: usize) {
        if n < 32 {
            out.push(0xa0 | n as u8);
        } else if n <= usize::from(u8::MAX) {
            out.extend_from_slice(&[0xd9, n as u8]);
        } else if n <= usize::from(u16::MAX) {
            out.push(0xda);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            out.push(0xdb);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }

    /// Appends a binary value.
    pub fn bin(out: &mut Vec<u8>, v: &[u8]) {
        let n = v.len();
        if n <= usize::from(u8::MAX) {
            out.extend_from_slice(&[0xc4, n as u8]);
        } else if n <= usize::from(u16::MAX) {
            out.push(0xc5);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            out.push(0xc6);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        out.extend_from_slice(v);
    }

    /// Appends an array header for `n` elements.
    pub fn array_len(out: &mut Vec<u8>, n: u32) {
        if n < 16 {
            out.push(0x90 | n as u8);
        } else if n <= u32::from(u16::MAX) {
            out.push(0xdc);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            out.push(0xdd);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }

    /// Appends a map header for `n` pairs.
    pub fn map_len(out: &mut Vec<u8>, n: u32) {
        if n < 16 {
            out.push(0x80 | n as u8);
        } else if n <= u32::from(u16::MAX) {
            out.push(0xde);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            out.push(0xdf);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }

    /// Appends a dynamic value (used for typed requests built by callers).
    pub fn value(out: &mut Vec<u8>, v: &rmpv::Value) {
        // Writing into a Vec cannot fail; rmpv's error type is only I/O.
        let _ = rmpv::encode::write_value(out, v);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn encoded(v: &rmpv::Value) -> Vec<u8> {
        let mut out = Vec::new();
        write::value(&mut out, v);
        out
    }

    fn arb_value() -> impl Strategy<Value = rmpv::Value> {
        let leaf = prop_oneof![
            Just(rmpv::Value::Nil),
            any::<bool>().prop_map(rmpv::Value::from),
            any::<u64>().prop_map(rmpv::Value::from),
            any::<i64>().prop_map(rmpv::Value::from),
            any::<f64>().prop_map(rmpv::Value::from),
            ".{0,40}".prop_map(rmpv::Value::from),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(rmpv::Value::from),
            (any::<i8>(), proptest::collection::vec(any::<u8>(), 0..20))
                .prop_map(|(t, d)| rmpv::Value::Ext(t, d)),
        ];
        leaf.prop_recursive(4, 64, 10, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..20).prop_map(rmpv::Value::Array),
                proptest::collection::vec((inner.clone(), inner), 0..10).prop_map(rmpv::Value::Map),
            ]
        })
    }

    proptest! {
        #[test]
        fn skip_consumes_exactly_one_value(v in arb_value(), tail in proptest::collection::vec(any::<u8>(), 0..8)) {
            let mut buf = encoded(&v);
            let len = buf.len();
            buf.extend_from_slice(&tail);
            let mut r = Reader::new(&buf);
            prop_assert_eq!(r.skip().map(<[u8]>::len), Ok(len));
        }

        #[test]
        fn skip_never_panics_on_garbage(buf in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Reader::new(&buf).skip();
        }

        #[test]
        fn truncated_values_are_errors(v in arb_value()) {
            let buf = encoded(&v);
            for cut in 0..buf.len() {
                let slice = buf.get(..cut).unwrap_or_default();
                prop_assert!(Reader::new(slice).skip().is_err());
            }
        }

        #[test]
        fn ints_round_trip(u in any::<u64>(), i in any::<i64>()) {
            let mut out = Vec::new();
            write::uint(&mut out, u);
            write::int(&mut out, i);
            let mut r = Reader::new(&out);
            prop_assert_eq!(r.read_u64(), Ok(u));
            prop_assert_eq!(r.read_i64(), Ok(i));
            prop_assert!(r.is_empty());
        }

        #[test]
        fn strings_round_trip(s in ".{0,300}", b in proptest::collection::vec(any::<u8>(), 0..70000)) {
            let mut out = Vec::new();
            write::str(&mut out, &s);
            write::bin(&mut out, &b);
            let mut r = Reader::new(&out);
            prop_assert_eq!(r.read_str(), Ok(s.as_str()));
            prop_assert_eq!(r.read_str_or_bin(), Ok(b.as_slice()));
        }
    }

    #[test]
    fn deep_nesting_is_rejected_without_recursion() {
        let buf = vec![0x91u8; 1_000_000];
        assert!(Reader::new(&buf).skip().is_err());
    }
}
