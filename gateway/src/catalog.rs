//! The source's spaces: id -> name, engine, flags and primary key, read from
//! `_space`/`_index` and kept current as `_space` rows pass in the stream.

use std::collections::HashMap;

use bytes::Bytes;
use rmpv::Value;
use tcf_iproto::{Connection, Select, request::Iterator};
use tcf_proto::v1;

/// `_space` and `_index` ids.
pub(crate) const SPACE_SPACE: u32 = 280;
pub(crate) const INDEX_SPACE: u32 = 288;

/// Prefix of tcf's own spaces: never shipped, never part of an initial load.
pub const TCF_SPACE_PREFIX: &str = "_tcf_";

/// One source space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpaceMeta {
    pub(crate) name: String,
    pub(crate) engine: String,
    /// Replication-local (`is_local`, stored as `group_id = 1`).
    pub(crate) is_local: bool,
    pub(crate) temporary: bool,
    pub(crate) is_sync: bool,
    /// `(0-based field, type)` of the primary key, when known.
    pub(crate) primary_key: Vec<(u32, String)>,
}

impl SpaceMeta {
    /// Whether rows of this space are replicated by tcf.
    pub(crate) fn is_replicated(&self) -> bool {
        !self.is_local && !self.temporary && !self.is_tcf()
    }

    /// Whether this is one of tcf's own spaces.
    pub(crate) fn is_tcf(&self) -> bool {
        self.name.starts_with(TCF_SPACE_PREFIX)
    }

    /// Whether it is a global progress space: a transaction writing it was
    /// applied by a tcf destination (the two-way loop breaker).
    pub(crate) fn is_progress_mark(&self) -> bool {
        self.is_tcf() && !self.is_local
    }
}

/// Spaces by id.
#[derive(Debug, Clone, Default)]
pub(crate) struct Catalog {
    spaces: HashMap<u32, SpaceMeta>,
}

/// A `_space` or `_index` tuple that could not be understood.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the source schema: {0}")]
pub(crate) struct CatalogError(pub(crate) String);

impl Catalog {
    /// Loads every user space (id >= 512) and its primary key.
    pub(crate) async fn load(conn: &Connection) -> Result<Self, CatalogError> {
        let all = Select {
            iterator: Iterator::All,
            ..Select::default()
        };
        let no_key: &[Value] = &[];
        let spaces = select(conn, SPACE_SPACE, no_key, all).await?;
        let mut catalog = Catalog::default();
        for t in spaces {
            catalog.apply_space_tuple(&t)?;
        }
        let pk = Select {
            iterator: Iterator::All,
            ..Select::default()
        };
        for t in select(conn, INDEX_SPACE, no_key, pk).await? {
            catalog.apply_index_tuple(&t)?;
        }
        Ok(catalog)
    }

    /// The space with this id.
    pub(crate) fn get(&self, id: u32) -> Option<&SpaceMeta> {
        self.spaces.get(&id)
    }

    /// Replicated spaces, for the handshake.
    pub(crate) fn replicated(&self) -> Vec<v1::SpaceInfo> {
        let mut out: Vec<v1::SpaceInfo> = self
            .spaces
            .values()
            .filter(|s| s.is_replicated())
            .map(|s| v1::SpaceInfo {
                name: s.name.clone(),
                engine: s.engine.clone(),
                is_sync: s.is_sync,
                primary_key: s
                    .primary_key
                    .iter()
                    .map(|(field, ty)| v1::KeyPart {
                        field: *field,
                        r#type: ty.clone(),
                    })
                    .collect(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Applies a `_space` tuple (INSERT/REPLACE from the stream or a snapshot).
    pub(crate) fn apply_space_tuple(&mut self, t: &Value) -> Result<(), CatalogError> {
        let f = t
            .as_array()
            .ok_or_else(|| CatalogError(format!("_space tuple {t}")))?;
        let id = field_u32(f, 0, "_space.id")?;
        if id < tcf_iproto::consts::USER_SPACE_MIN {
            return Ok(());
        }
        let name = field_str(f, 2, "_space.name")?.to_owned();
        let engine = field_str(f, 3, "_space.engine")?.to_owned();
        let opts = f.get(5);
        let opt = |key: &str| {
            opts.and_then(Value::as_map)
                .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some(key)))
                .map(|(_, v)| v)
        };
        let is_local = opt("group_id").and_then(Value::as_u64) == Some(1)
            || opt("is_local").and_then(Value::as_bool) == Some(true);
        let temporary = opt("temporary").and_then(Value::as_bool) == Some(true);
        let is_sync = opt("is_sync").and_then(Value::as_bool) == Some(true);
        let primary_key = self
            .spaces
            .get(&id)
            .map(|s| s.primary_key.clone())
            .unwrap_or_default();
        self.spaces.insert(
            id,
            SpaceMeta {
                name,
                engine,
                is_local,
                temporary,
                is_sync,
                primary_key,
            },
        );
        Ok(())
    }

    /// Applies an `_index` tuple: records the primary key's parts.
    pub(crate) fn apply_index_tuple(&mut self, t: &Value) -> Result<(), CatalogError> {
        let f = t
            .as_array()
            .ok_or_else(|| CatalogError(format!("_index tuple {t}")))?;
        let id = field_u32(f, 0, "_index.id")?;
        if field_u32(f, 1, "_index.iid")? != 0 {
            return Ok(());
        }
        let Some(space) = self.spaces.get_mut(&id) else {
            return Ok(());
        };
        let parts = f
            .get(5)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        space.primary_key = parts.iter().filter_map(key_part).collect();
        Ok(())
    }

    /// Forgets a dropped space.
    pub(crate) fn remove(&mut self, id: u32) {
        self.spaces.remove(&id);
    }
}

/// A key part in either 2.x layout: `[field, type]` or `{field=, type=, ...}`.
fn key_part(p: &Value) -> Option<(u32, String)> {
    match p {
        Value::Array(a) => Some((
            u32::try_from(a.first()?.as_u64()?).ok()?,
            a.get(1)?.as_str()?.to_owned(),
        )),
        Value::Map(m) => {
            let get = |k: &str| {
                m.iter()
                    .find(|(key, _)| key.as_str() == Some(k))
                    .map(|(_, v)| v)
            };
            Some((
                u32::try_from(get("field")?.as_u64()?).ok()?,
                get("type")?.as_str()?.to_owned(),
            ))
        }
        _ => None,
    }
}

fn field_u32(f: &[Value], i: usize, what: &str) -> Result<u32, CatalogError> {
    f.get(i)
        .and_then(Value::as_u64)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| CatalogError(format!("{what} is not a number")))
}

fn field_str<'a>(f: &'a [Value], i: usize, what: &str) -> Result<&'a str, CatalogError> {
    f.get(i)
        .and_then(Value::as_str)
        .ok_or_else(|| CatalogError(format!("{what} is not a string")))
}

async fn select(
    conn: &Connection,
    space: u32,
    key: &[Value],
    opts: Select,
) -> Result<Vec<Value>, CatalogError> {
    let resp = conn
        .select(space, key, opts)
        .await
        .map_err(|e| CatalogError(format!("select from space {space}: {e}")))?;
    match resp.data_value().map_err(|e| CatalogError(e.to_string()))? {
        Value::Array(rows) => Ok(rows),
        other => Err(CatalogError(format!(
            "select from space {space} returned {other}"
        ))),
    }
}

/// Decodes raw MessagePack into a value (schema rows are small).
pub(crate) fn decode(raw: &Bytes) -> Option<Value> {
    let mut slice = &raw[..];
    rmpv::decode::read_value(&mut slice).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(json: &str) -> Value {
        // Minimal JSON-ish builder for the tests below.
        match json {
            "a" => Value::Array(vec![
                512.into(),
                1.into(),
                "a".into(),
                "memtx".into(),
                0.into(),
                Value::Map(vec![]),
                Value::Array(vec![]),
            ]),
            "l" => Value::Array(vec![
                513.into(),
                1.into(),
                "l".into(),
                "memtx".into(),
                0.into(),
                Value::Map(vec![("group_id".into(), 1.into())]),
                Value::Array(vec![]),
            ]),
            "p" => Value::Array(vec![
                514.into(),
                1.into(),
                "_tcf_progress_memtx".into(),
                "memtx".into(),
                0.into(),
                Value::Map(vec![("is_sync".into(), false.into())]),
                Value::Array(vec![]),
            ]),
            _ => Value::Nil,
        }
    }

    #[test]
    fn reads_flags_and_both_key_part_layouts() {
        let mut c = Catalog::default();
        for s in ["a", "l", "p"] {
            c.apply_space_tuple(&v(s)).unwrap();
        }
        let idx = Value::Array(vec![
            512.into(),
            0.into(),
            "pk".into(),
            "tree".into(),
            Value::Map(vec![]),
            Value::Array(vec![
                Value::Map(vec![
                    ("field".into(), 0.into()),
                    ("type".into(), "unsigned".into()),
                ]),
                Value::Array(vec![1.into(), "string".into()]),
            ]),
        ]);
        c.apply_index_tuple(&idx).unwrap();
        let a = c.get(512).unwrap();
        assert!(a.is_replicated());
        assert_eq!(
            a.primary_key,
            vec![(0, "unsigned".to_owned()), (1, "string".to_owned())]
        );
        assert!(!c.get(513).unwrap().is_replicated());
        let p = c.get(514).unwrap();
        assert!(p.is_progress_mark() && !p.is_replicated());
        assert_eq!(c.replicated().len(), 1);
    }
}
