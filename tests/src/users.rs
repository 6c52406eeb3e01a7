//! Typed descriptions of users and their grants, rendered as Lua.
//!
//! Created on the master in its `box.once` bootstrap after all spaces (so that
//! space grants can name them); replicas get them by replication.

use crate::lua::lua_str;

/// A set of object privileges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Privileges {
    /// `read`
    pub read: bool,
    /// `write`
    pub write: bool,
    /// `execute`
    pub execute: bool,
}

impl Privileges {
    /// `read`
    pub const READ: Privileges = Privileges {
        read: true,
        write: false,
        execute: false,
    };
    /// `read,write`
    pub const READ_WRITE: Privileges = Privileges {
        read: true,
        write: true,
        execute: false,
    };
    /// `read,write,execute`
    pub const ALL: Privileges = Privileges {
        read: true,
        write: true,
        execute: true,
    };
    /// `execute`
    pub const EXECUTE: Privileges = Privileges {
        read: false,
        write: false,
        execute: true,
    };

    /// The comma-separated list `box.schema.user.grant` expects.
    pub fn as_lua_list(self) -> String {
        let mut v = Vec::new();
        if self.read {
            v.push("read");
        }
        if self.write {
            v.push("write");
        }
        if self.execute {
            v.push("execute");
        }
        v.join(",")
    }
}

/// A grant given to a [`UserSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// Privileges on `universe`.
    Universe(Privileges),
    /// Privileges on one space (created by the same bootstrap).
    Space {
        /// Space name.
        space: String,
        /// Privileges on it.
        privileges: Privileges,
    },
    /// `execute` on a Lua function (must exist in `box.schema.func`).
    Function(String),
    /// A role: `"super"`, `"replication"` or any role created by bootstrap Lua.
    Role(String),
}

impl Grant {
    /// The `super` role (everything).
    pub fn super_role() -> Grant {
        Grant::Role("super".to_owned())
    }

    /// The `replication` role (read on universe, write on `_cluster`).
    pub fn replication() -> Grant {
        Grant::Role("replication".to_owned())
    }

    /// The Lua statement granting this to `user`.
    pub fn to_lua(&self, user: &str) -> String {
        let u = lua_str(user);
        match self {
            Grant::Universe(p) => {
                format!(
                    "box.schema.user.grant({u}, {}, \"universe\")",
                    lua_str(&p.as_lua_list())
                )
            }
            Grant::Space { space, privileges } => format!(
                "box.schema.user.grant({u}, {}, \"space\", {})",
                lua_str(&privileges.as_lua_list()),
                lua_str(space)
            ),
            Grant::Function(f) => {
                format!(
                    "box.schema.user.grant({u}, \"execute\", \"function\", {})",
                    lua_str(f)
                )
            }
            Grant::Role(r) => format!("box.schema.user.grant({u}, {})", lua_str(r)),
        }
    }
}

/// A user to create on the master at bootstrap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpec {
    /// User name.
    pub name: String,
    /// Password (chap-sha1).
    pub password: String,
    /// Grants, applied in order after all spaces exist.
    pub grants: Vec<Grant>,
}

impl UserSpec {
    /// A user with a password and no grants.
    pub fn new(name: impl Into<String>, password: impl Into<String>) -> UserSpec {
        UserSpec {
            name: name.into(),
            password: password.into(),
            grants: Vec::new(),
        }
    }

    /// Adds a grant.
    pub fn grant(mut self, grant: Grant) -> Self {
        self.grants.push(grant);
        self
    }

    /// The Lua statements creating the user and applying its grants.
    pub fn to_lua(&self) -> String {
        let mut lua = format!(
            "box.schema.user.create({}, {{password = {}}})\n",
            lua_str(&self.name),
            lua_str(&self.password)
        );
        for g in &self.grants {
            lua.push_str(&g.to_lua(&self.name));
            lua.push('\n');
        }
        lua
    }
}
