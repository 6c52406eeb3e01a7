//! Request bodies, typed or raw.
//!
//! Typed builders take anything that implements [`ToMsgpack`]: an
//! [`rmpv::Value`], a slice of them (sent as an array), or [`Raw`] bytes that
//! are already MessagePack and are copied verbatim (the replication path uses
//! that: tuples are never re-encoded).

use crate::{consts::key, msgpack::write};

/// A value that can be appended as MessagePack.
pub trait ToMsgpack {
    /// Appends exactly one MessagePack value.
    fn write_msgpack(&self, out: &mut Vec<u8>);
}

impl ToMsgpack for rmpv::Value {
    fn write_msgpack(&self, out: &mut Vec<u8>) {
        write::value(out, self);
    }
}

impl ToMsgpack for [rmpv::Value] {
    fn write_msgpack(&self, out: &mut Vec<u8>) {
        write::array_len(out, self.len() as u32);
        for v in self {
            write::value(out, v);
        }
    }
}

impl ToMsgpack for Vec<rmpv::Value> {
    fn write_msgpack(&self, out: &mut Vec<u8>) {
        self.as_slice().write_msgpack(out);
    }
}

/// Bytes that already hold exactly one MessagePack value; written verbatim.
#[derive(Debug, Clone, Copy)]
pub struct Raw<'a>(pub &'a [u8]);

impl ToMsgpack for Raw<'_> {
    fn write_msgpack(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0);
    }
}

/// SELECT iterator types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u32)]
pub enum Iterator {
    /// Keys equal to the key (all rows for an empty key).
    #[default]
    Eq = 0,
    /// Equal, in reverse order.
    Req = 1,
    /// Every row.
    All = 2,
    /// Less than.
    Lt = 3,
    /// Less or equal.
    Le = 4,
    /// Greater or equal.
    Ge = 5,
    /// Greater than.
    Gt = 6,
}

/// Options of a SELECT.
#[derive(Debug, Clone, Copy)]
pub struct Select {
    /// Index id (0 = primary).
    pub index_id: u32,
    /// Iterator.
    pub iterator: Iterator,
    /// Maximum rows.
    pub limit: u32,
    /// Rows to skip.
    pub offset: u32,
}

impl Default for Select {
    fn default() -> Self {
        Self {
            index_id: 0,
            iterator: Iterator::Eq,
            limit: u32::MAX,
            offset: 0,
        }
    }
}

fn pair(out: &mut Vec<u8>, k: u8, v: &(impl ToMsgpack + ?Sized)) {
    write::uint(out, u64::from(k));
    v.write_msgpack(out);
}

fn uint_pair(out: &mut Vec<u8>, k: u8, v: u64) {
    write::uint(out, u64::from(k));
    write::uint(out, v);
}

/// SELECT body.
pub fn select(out: &mut Vec<u8>, space_id: u32, key: &(impl ToMsgpack + ?Sized), opts: Select) {
    write::map_len(out, 6);
    uint_pair(out, key::SPACE_ID, u64::from(space_id));
    uint_pair(out, key::INDEX_ID, u64::from(opts.index_id));
    uint_pair(out, key::LIMIT, u64::from(opts.limit));
    uint_pair(out, key::OFFSET, u64::from(opts.offset));
    uint_pair(out, key::ITERATOR, opts.iterator as u64);
    pair(out, key::KEY, key);
}

/// INSERT or REPLACE body.
pub fn tuple(out: &mut Vec<u8>, space_id: u32, tuple: &(impl ToMsgpack + ?Sized)) {
    write::map_len(out, 2);
    uint_pair(out, key::SPACE_ID, u64::from(space_id));
    pair(out, key::TUPLE, tuple);
}

/// UPDATE body; `index_base` 1 means Lua-style 1-based field numbers.
pub fn update(
    out: &mut Vec<u8>,
    space_id: u32,
    index_id: u32,
    key: &(impl ToMsgpack + ?Sized),
    ops: &(impl ToMsgpack + ?Sized),
    index_base: Option<u32>,
) {
    write::map_len(out, if index_base.is_some() { 5 } else { 4 });
    uint_pair(out, key::SPACE_ID, u64::from(space_id));
    uint_pair(out, key::INDEX_ID, u64::from(index_id));
    if let Some(base) = index_base {
        uint_pair(out, key::INDEX_BASE, u64::from(base));
    }
    pair(out, key::KEY, key);
    pair(out, key::TUPLE, ops);
}

/// DELETE body.
pub fn delete(out: &mut Vec<u8>, space_id: u32, index_id: u32, key: &(impl ToMsgpack + ?Sized)) {
    write::map_len(out, 3);
    uint_pair(out, key::SPACE_ID, u64::from(space_id));
    uint_pair(out, key::INDEX_ID, u64::from(index_id));
    pair(out, key::KEY, key);
}

/// UPSERT body.
pub fn upsert(
    out: &mut Vec<u8>,
    space_id: u32,
    tuple: &(impl ToMsgpack + ?Sized),
    ops: &(impl ToMsgpack + ?Sized),
    index_base: Option<u32>,
) {
    write::map_len(out, if index_base.is_some() { 4 } else { 3 });
    uint_pair(out, key::SPACE_ID, u64::from(space_id));
    if let Some(base) = index_base {
        uint_pair(out, key::INDEX_BASE, u64::from(base));
    }
    pair(out, key::TUPLE, tuple);
    pair(out, key::OPS, ops);
}

/// CALL body.
pub fn call(out: &mut Vec<u8>, function: &str, args: &(impl ToMsgpack + ?Sized)) {
    write::map_len(out, 2);
    write::uint(out, u64::from(key::FUNCTION_NAME));
    write::str(out, function);
    pair(out, key::TUPLE, args);
}

/// EVAL body.
pub fn eval(out: &mut Vec<u8>, expr: &str, args: &(impl ToMsgpack + ?Sized)) {
    write::map_len(out, 2);
    write::uint(out, u64::from(key::EXPR));
    write::str(out, expr);
    pair(out, key::TUPLE, args);
}
