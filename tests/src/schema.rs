//! Typed descriptions of spaces and indexes, rendered as Lua.
//!
//! The harness turns these into `box.schema` calls inside the master's
//! `box.once` block (see [`crate::lua`]); replicas get them by replication.
//! Users and grants are in [`crate::users`].
//!
//! ```
//! use tcf_tests::{Engine, Grant, Privileges, SpaceSpec, UserSpec};
//! let space = SpaceSpec::new("accounts")
//!     .engine(Engine::Vinyl)
//!     .field("id", "unsigned")
//!     .field("name", "string")
//!     .primary_key(&[(1, "unsigned")])
//!     .secondary_index("by_name", false, &[(2, "string")]);
//! let user = UserSpec::new("app", "secret")
//!     .grant(Grant::Space { space: "accounts".into(), privileges: Privileges::READ_WRITE })
//!     .grant(Grant::Role("replication".into()));
//! assert!(space.to_lua().contains("box.schema.space.create(\"accounts\""));
//! assert!(user.to_lua().contains("box.schema.user.grant(\"app\", \"replication\")"));
//! ```

use std::fmt::Write as _;

use crate::lua::lua_str;

/// Storage engine of a space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// In-memory engine (the default).
    #[default]
    Memtx,
    /// On-disk LSM engine.
    Vinyl,
}

impl Engine {
    /// The engine's name as `box.schema.space.create` expects it.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Memtx => "memtx",
            Engine::Vinyl => "vinyl",
        }
    }
}

/// One index part: 1-based field number and field type (`"unsigned"`, `"string"`...).
pub type IndexPart = (u32, String);

/// A secondary index of a [`SpaceSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSpec {
    /// Index name.
    pub name: String,
    /// Whether the index is unique.
    pub unique: bool,
    /// Index parts.
    pub parts: Vec<IndexPart>,
}

/// A space to create on the master at bootstrap.
///
/// Defaults: memtx, global (not `is_local`), persistent (not `temporary`), not
/// synchronous, id assigned by Tarantool, no format, primary key `{1, unsigned}`
/// named `pk`, no secondary indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaceSpec {
    /// Space name.
    pub name: String,
    /// Storage engine.
    pub engine: Engine,
    /// Replication-local space (`is_local = true`): never replicated.
    pub is_local: bool,
    /// Temporary space: not persisted nor replicated (memtx only).
    pub temporary: bool,
    /// Synchronous replication (`is_sync = true`).
    pub is_sync: bool,
    /// Fixed space id; `None` lets Tarantool assign one (512 and up).
    pub id: Option<u32>,
    /// Space format: `(field name, field type)`.
    pub format: Vec<(String, String)>,
    /// Primary key parts.
    pub primary_key: Vec<IndexPart>,
    /// Secondary indexes, created after the primary key in this order.
    pub secondary: Vec<IndexSpec>,
}

impl SpaceSpec {
    /// A memtx space named `name` with the defaults listed on [`SpaceSpec`].
    pub fn new(name: impl Into<String>) -> SpaceSpec {
        SpaceSpec {
            name: name.into(),
            engine: Engine::Memtx,
            is_local: false,
            temporary: false,
            is_sync: false,
            id: None,
            format: Vec::new(),
            primary_key: vec![(1, "unsigned".to_owned())],
            secondary: Vec::new(),
        }
    }

    /// Sets the storage engine.
    pub fn engine(mut self, engine: Engine) -> Self {
        self.engine = engine;
        self
    }

    /// Makes the space replication-local (`is_local`).
    pub fn local(mut self) -> Self {
        self.is_local = true;
        self
    }

    /// Makes the space temporary.
    pub fn temporary(mut self) -> Self {
        self.temporary = true;
        self
    }

    /// Makes the space synchronous (`is_sync`).
    pub fn sync(mut self) -> Self {
        self.is_sync = true;
        self
    }

    /// Fixes the space id.
    pub fn id(mut self, id: u32) -> Self {
        self.id = Some(id);
        self
    }

    /// Appends a field `(name, type)` to the format.
    pub fn field(mut self, name: impl Into<String>, ty: impl Into<String>) -> Self {
        self.format.push((name.into(), ty.into()));
        self
    }

    /// Replaces the primary key parts.
    pub fn primary_key(mut self, parts: &[(u32, &str)]) -> Self {
        self.primary_key = to_parts(parts);
        self
    }

    /// Adds a secondary index.
    pub fn secondary_index(
        mut self,
        name: impl Into<String>,
        unique: bool,
        parts: &[(u32, &str)],
    ) -> Self {
        self.secondary.push(IndexSpec {
            name: name.into(),
            unique,
            parts: to_parts(parts),
        });
        self
    }

    /// The Lua statements that create the space and its indexes.
    pub fn to_lua(&self) -> String {
        let mut opts = format!("engine = {}", lua_str(self.engine.as_str()));
        if self.is_local {
            opts.push_str(", is_local = true");
        }
        if self.temporary {
            opts.push_str(", temporary = true");
        }
        if self.is_sync {
            opts.push_str(", is_sync = true");
        }
        if let Some(id) = self.id {
            let _ = write!(opts, ", id = {id}");
        }
        if !self.format.is_empty() {
            let fields: Vec<String> = self
                .format
                .iter()
                .map(|(n, t)| format!("{{name = {}, type = {}}}", lua_str(n), lua_str(t)))
                .collect();
            let _ = write!(opts, ", format = {{{}}}", fields.join(", "));
        }
        let name = lua_str(&self.name);
        let mut lua = format!("do\n    local s = box.schema.space.create({name}, {{{opts}}})\n");
        let _ = writeln!(
            lua,
            "    s:create_index(\"pk\", {{parts = {}}})",
            parts_lua(&self.primary_key)
        );
        for idx in &self.secondary {
            let _ = writeln!(
                lua,
                "    s:create_index({}, {{unique = {}, parts = {}}})",
                lua_str(&idx.name),
                idx.unique,
                parts_lua(&idx.parts)
            );
        }
        lua.push_str("end\n");
        lua
    }
}

fn to_parts(parts: &[(u32, &str)]) -> Vec<IndexPart> {
    parts.iter().map(|(n, t)| (*n, (*t).to_owned())).collect()
}

fn parts_lua(parts: &[IndexPart]) -> String {
    let p: Vec<String> = parts
        .iter()
        .map(|(n, t)| format!("{{{n}, {}}}", lua_str(t)))
        .collect();
    format!("{{{}}}", p.join(", "))
}
