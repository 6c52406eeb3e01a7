//! The rows of a batch as `tcf_v1_apply` and `tcf_verify_v1_chunk` take
//! them: one MessagePack string holding every row back to back, walked
//! by `apply_rows` in `destination/lua/tcf_v1.lua` with no Lua value per
//! row (the target's tx thread decodes one string per batch, not a table and
//! up to three strings per row).
//!
//! Layout of one row: a [`HEADER_LEN`]-byte header — op (`u8`, the
//! `tcf.stream.v1.Op` number), index id (`u8`), index base (`u8`), space id
//! (`u32`), key length, tuple length, ops length (`u32` each); integers
//! little-endian — then the key, the tuple and the ops, raw MessagePack as
//! in the source row. Both ends of this layout live in this crate: the Lua
//! file is installed by the same binary that encodes.

use bytes::Bytes;
use tcf_iproto::msgpack::write;
use tcf_proto::v1;

/// Bytes of a row's header.
pub(crate) const HEADER_LEN: usize = 19;

/// One row to apply: the source row with the space mapped to the target id.
#[derive(Debug, Clone)]
pub(crate) struct ApplyRow {
    pub(crate) op: v1::Op,
    pub(crate) space_id: u32,
    pub(crate) index_id: u8,
    pub(crate) index_base: u8,
    pub(crate) key: Bytes,
    pub(crate) tuple: Bytes,
    pub(crate) ops: Bytes,
}

impl ApplyRow {
    /// A row whose only payload is `tuple` (`INSERT`/`REPLACE`) on index 0.
    pub(crate) fn tuple(op: v1::Op, space_id: u32, tuple: Bytes) -> Self {
        Self {
            op,
            space_id,
            index_id: 0,
            index_base: 0,
            key: Bytes::new(),
            tuple,
            ops: Bytes::new(),
        }
    }

    /// Bytes of the row's payload (key, tuple and ops).
    pub(crate) fn payload_len(&self) -> usize {
        self.key.len() + self.tuple.len() + self.ops.len()
    }
}

/// A row part, or a whole batch, longer than a `u32` can say (never from a
/// real source: a Tarantool transaction is far smaller).
#[derive(Debug, thiserror::Error)]
#[error("{part} of {len} bytes is too large for a batch")]
pub(crate) struct TooLarge {
    part: &'static str,
    len: usize,
}

/// Rows checked for encoding: every part fits the header's `u32` lengths.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Packed<'a> {
    rows: &'a [ApplyRow],
    len: usize,
}

/// Checks `rows` for encoding.
pub(crate) fn pack(rows: &[ApplyRow]) -> Result<Packed<'_>, TooLarge> {
    let mut len = 0;
    for r in rows {
        for (part, b) in [("a key", &r.key), ("a tuple", &r.tuple), ("ops", &r.ops)] {
            if u32::try_from(b.len()).is_err() {
                return Err(TooLarge { part, len: b.len() });
            }
        }
        len += HEADER_LEN + r.payload_len();
    }
    if u32::try_from(len).is_err() {
        return Err(TooLarge { part: "batch", len });
    }
    Ok(Packed { rows, len })
}

impl Packed<'_> {
    /// Appends the rows as one MessagePack string. A string, not a binary
    /// value: Tarantool 3.x decodes a binary argument into a `varbinary`
    /// cdata, 2.x into a Lua string; a string argument is a Lua string on
    /// every version (its bytes are not checked as UTF-8).
    pub(crate) fn write(self, o: &mut Vec<u8>) {
        write::str_header(o, self.len);
        o.reserve(self.len);
        for r in self.rows {
            o.extend_from_slice(&[r.op as u8, r.index_id, r.index_base]);
            o.extend_from_slice(&r.space_id.to_le_bytes());
            // `pack` checked that every length fits a u32.
            for part in [&r.key, &r.tuple, &r.ops] {
                o.extend_from_slice(&(part.len() as u32).to_le_bytes());
            }
            o.extend_from_slice(&r.key);
            o.extend_from_slice(&r.tuple);
            o.extend_from_slice(&r.ops);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_laid_out_back_to_back_with_little_endian_lengths() {
        let rows = [
            ApplyRow::tuple(v1::Op::Insert, 512, Bytes::from_static(&[0x91, 0x01])),
            ApplyRow {
                op: v1::Op::Upsert,
                space_id: 0x0102_0304,
                index_id: 2,
                index_base: 1,
                key: Bytes::from_static(&[0x91, 0x05]),
                tuple: Bytes::from_static(&[0x92, 0x05, 0x06]),
                ops: Bytes::from_static(&[0x90]),
            },
        ];
        let mut packed = Vec::new();
        pack(&rows).expect("small rows").write(&mut packed);
        let want: Vec<u8> = [
            &[1, 0, 0][..],
            &[0x00, 0x02, 0, 0],
            &[0, 0, 0, 0],
            &[2, 0, 0, 0],
            &[0, 0, 0, 0],
            &[0x91, 0x01],
            &[5, 2, 1],
            &[0x04, 0x03, 0x02, 0x01],
            &[2, 0, 0, 0],
            &[3, 0, 0, 0],
            &[1, 0, 0, 0],
            &[0x91, 0x05, 0x92, 0x05, 0x06, 0x90],
        ]
        .concat();
        assert_eq!(
            want.len(),
            2 * HEADER_LEN + rows.iter().map(ApplyRow::payload_len).sum::<usize>()
        );
        assert_eq!(packed.get(..2), Some(&[0xd9, want.len() as u8][..]));
        assert_eq!(packed.get(2..), Some(&want[..]));
    }

    #[test]
    fn no_rows_is_an_empty_string() {
        let mut o = Vec::new();
        pack(&[]).expect("nothing to check").write(&mut o);
        assert_eq!(o, [0xa0]);
    }
}
