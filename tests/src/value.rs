//! Small helpers for the `rmpv::Value`s that `eval` returns.

use anyhow::bail;
use rmpv::Value;

/// The first element of a DATA array (`Nil` if empty or not an array).
pub fn first(v: Value) -> Value {
    match v {
        Value::Array(a) => a.into_iter().next().unwrap_or(Value::Nil),
        _ => Value::Nil,
    }
}

/// The elements of an array value; fails for any other value.
pub fn expect_array(v: Value) -> anyhow::Result<Vec<Value>> {
    match v {
        Value::Array(a) => Ok(a),
        other => bail!("expected an array, got {other}"),
    }
}
