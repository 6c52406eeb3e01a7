//! An instance's user spaces: id -> name, engine, flags and primary key, read
//! from `_space`/`_index` (or from their rows as they pass in a replication
//! stream or snapshot).

use std::collections::HashMap;

use bytes::Bytes;
use rmpv::Value;

use crate::{Connection, Select, request::Iterator};

/// `_space` id.
pub const SPACE_SPACE: u32 = 280;
/// `_index` id.
pub const INDEX_SPACE: u32 = 288;

/// Prefix of tcf's own spaces: never shipped, never part of an initial load
/// (the names are federation-wide constants, see `docs/progress.md`).
pub const TCF_SPACE_PREFIX: &str = "_tcf_";

/// tcf's watermark space on a source (global, memtx): the low and high
/// watermarks of online verification are written here by a gateway; a
/// gateway reading the source recognises them by this name
/// (`docs/verify.md`). Never shipped as data.
pub const WATERMARK_SPACE: &str = "_tcf_watermark";

/// One user space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaceMeta {
    /// Space id.
    pub id: u32,
    /// Name.
    pub name: String,
    /// `memtx` or `vinyl`.
    pub engine: String,
    /// Replication-local (`is_local`, stored as `group_id = 1`).
    pub is_local: bool,
    /// Temporary (not persisted, not replicated).
    pub temporary: bool,
    /// Synchronous replication.
    pub is_sync: bool,
    /// `(0-based field, type)` of the primary key, when known.
    pub primary_key: Vec<(u32, String)>,
    /// A primary key part has a collation or a JSON path: keys equal under
    /// the index can differ in bytes, so verification cannot match them.
    pub primary_key_collated: bool,
}

impl SpaceMeta {
    /// Whether rows of this space are replicated by tcf: global, persistent
    /// and not one of tcf's own spaces.
    pub fn is_replicated(&self) -> bool {
        !self.is_local && !self.temporary && !self.is_tcf()
    }

    /// Whether this is one of tcf's own spaces.
    pub fn is_tcf(&self) -> bool {
        self.name.starts_with(TCF_SPACE_PREFIX)
    }

    /// Whether it is a global tcf space: a transaction writing it was
    /// applied by a tcf destination (the two-way loop breaker).
    pub fn is_progress_mark(&self) -> bool {
        self.is_tcf() && !self.is_local
    }
}

/// User spaces by id.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    spaces: HashMap<u32, SpaceMeta>,
    by_name: HashMap<String, u32>,
}

/// A `_space` or `_index` tuple that could not be understood, or a failed read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the schema: {0}")]
pub struct CatalogError(pub String);

impl Catalog {
    /// Loads every user space (id >= 512) and its primary key.
    pub async fn load(conn: &Connection) -> Result<Self, CatalogError> {
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
    pub fn get(&self, id: u32) -> Option<&SpaceMeta> {
        self.spaces.get(&id)
    }

    /// The space with this name.
    pub fn by_name(&self, name: &str) -> Option<&SpaceMeta> {
        self.by_name.get(name).and_then(|id| self.spaces.get(id))
    }

    /// Every space replicated by tcf, by name.
    pub fn replicated(&self) -> Vec<&SpaceMeta> {
        let mut out: Vec<&SpaceMeta> = self.spaces.values().filter(|s| s.is_replicated()).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Applies a `_space` tuple (INSERT/REPLACE from a stream or a snapshot).
    pub fn apply_space_tuple(&mut self, t: &Value) -> Result<(), CatalogError> {
        let f = t
            .as_array()
            .ok_or_else(|| CatalogError(format!("_space tuple {t}")))?;
        let id = field_u32(f, 0, "_space.id")?;
        if id < crate::consts::USER_SPACE_MIN {
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
        let (primary_key, primary_key_collated) = self
            .spaces
            .get(&id)
            .map(|s| (s.primary_key.clone(), s.primary_key_collated))
            .unwrap_or_default();
        if let Some(old) = self.spaces.get(&id) {
            self.by_name.remove(&old.name);
        }
        self.by_name.insert(name.clone(), id);
        self.spaces.insert(
            id,
            SpaceMeta {
                id,
                name,
                engine,
                is_local,
                temporary,
                is_sync,
                primary_key,
                primary_key_collated,
            },
        );
        Ok(())
    }

    /// Applies an `_index` tuple: records the primary key's parts.
    pub fn apply_index_tuple(&mut self, t: &Value) -> Result<(), CatalogError> {
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
        space.primary_key_collated = parts.iter().any(collated);
        Ok(())
    }

    /// Forgets a dropped space.
    pub fn remove(&mut self, id: u32) {
        if let Some(old) = self.spaces.remove(&id) {
            self.by_name.remove(&old.name);
        }
    }
}

/// Whether a key part (map layout) has a collation or a JSON path.
fn collated(p: &Value) -> bool {
    p.as_map().is_some_and(|m| {
        m.iter()
            .any(|(k, v)| matches!(k.as_str(), Some("collation" | "path")) && !v.is_nil())
    })
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
pub fn decode(raw: &Bytes) -> Option<Value> {
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
