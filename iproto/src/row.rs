//! Replication rows: a decoded header and the raw body, with cheap access to
//! the body fields a replicator needs. Tuples, keys and ops stay raw bytes.

use bytes::Bytes;

use crate::{
    consts::{flag, group, key, request},
    error::ProtocolError,
    frame::{Frame, Header},
    msgpack::Reader,
};

/// What a row does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKind {
    /// A data change of the given kind.
    Dml(DmlKind),
    /// A WAL no-op (advances the LSN; may close a transaction).
    Nop,
    /// CONFIRM of synchronous transactions up to an LSN.
    Confirm,
    /// ROLLBACK of synchronous transactions from an LSN on.
    Rollback,
    /// PROMOTE (2.6.3+): confirms what the new leader keeps.
    Promote,
    /// DEMOTE (2.7.3+).
    Demote,
    /// Any other row type, passed through for the caller to judge.
    Other(u32),
}

/// The five data-changing requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmlKind {
    /// INSERT.
    Insert,
    /// REPLACE.
    Replace,
    /// UPDATE (ops under `TUPLE`).
    Update,
    /// DELETE.
    Delete,
    /// UPSERT (tuple under `TUPLE`, ops under `OPS`).
    Upsert,
}

impl DmlKind {
    /// The iproto request type of this change.
    pub fn request_type(self) -> u32 {
        match self {
            Self::Insert => request::INSERT,
            Self::Replace => request::REPLACE,
            Self::Update => request::UPDATE,
            Self::Delete => request::DELETE,
            Self::Upsert => request::UPSERT,
        }
    }
}

impl RowKind {
    /// Classifies a request type.
    pub fn from_type(t: u32) -> Self {
        match t {
            request::INSERT => Self::Dml(DmlKind::Insert),
            request::REPLACE => Self::Dml(DmlKind::Replace),
            request::UPDATE => Self::Dml(DmlKind::Update),
            request::DELETE => Self::Dml(DmlKind::Delete),
            request::UPSERT => Self::Dml(DmlKind::Upsert),
            request::NOP => Self::Nop,
            request::CONFIRM => Self::Confirm,
            request::ROLLBACK => Self::Rollback,
            request::RAFT_PROMOTE => Self::Promote,
            request::RAFT_DEMOTE => Self::Demote,
            other => Self::Other(other),
        }
    }
}

/// One WAL row (or snapshot row) as received.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The header.
    pub header: Header,
    /// The raw body map (empty for NOP).
    pub body: Bytes,
}

impl From<Frame> for Row {
    fn from(f: Frame) -> Self {
        Self {
            header: f.header,
            body: f.body,
        }
    }
}

impl Row {
    /// What the row does.
    pub fn kind(&self) -> RowKind {
        RowKind::from_type(self.header.request_type)
    }

    /// Origin instance id.
    pub fn replica_id(&self) -> u32 {
        self.header.replica_id
    }

    /// LSN in the origin's component.
    pub fn lsn(&self) -> u64 {
        self.header.lsn
    }

    /// Transaction id: the LSN of the transaction's first row.
    pub fn tsn(&self) -> u64 {
        self.header
            .lsn
            .saturating_sub(self.header.tsn_diff.unwrap_or(0))
    }

    /// Whether this row ends its transaction (single-row rows always do).
    pub fn is_commit(&self) -> bool {
        self.header.tsn_diff.is_none() || self.header.flags & flag::COMMIT != 0
    }

    /// Whether the row is replication-local.
    pub fn is_local(&self) -> bool {
        self.header.group_id == group::LOCAL
    }

    /// Locates the body fields. Costs one pass over the body's top-level map.
    pub fn fields(&self) -> Result<BodyFields, ProtocolError> {
        BodyFields::parse(&self.body)
    }

    /// The body of a CONFIRM/ROLLBACK/PROMOTE/DEMOTE row.
    pub fn synchro(&self) -> Result<Synchro, ProtocolError> {
        let e = ProtocolError::decode("synchro row body");
        let mut r = Reader::new(&self.body);
        let mut s = Synchro::default();
        for _ in 0..r.read_map_len().map_err(e)? {
            let e = ProtocolError::decode("synchro row body");
            match r.read_u64().map_err(e)? {
                k if k == u64::from(key::REPLICA_ID) => s.replica_id = r.read_u32().map_err(e)?,
                k if k == u64::from(key::LSN) => s.lsn = r.read_u64().map_err(e)?,
                0x53 => s.term = r.read_u64().map_err(e)?,
                _ => {
                    r.skip().map_err(e)?;
                }
            }
        }
        Ok(s)
    }
}

/// The body of a synchro row: which origin and LSN it refers to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Synchro {
    /// The origin of the confirmed or rolled-back rows.
    pub replica_id: u32,
    /// CONFIRM: everything up to this LSN; ROLLBACK: everything from it on.
    pub lsn: u64,
    /// Raft term (PROMOTE/DEMOTE only).
    pub term: u64,
}

/// Where the fields of a DML body are. Byte fields are cheap slices of the
/// row's body (reference-counted, no copy).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BodyFields {
    /// `SPACE_ID` (0 when absent, as Tarantool omits it for 0).
    pub space_id: u32,
    /// `INDEX_ID` (0 when absent).
    pub index_id: u32,
    /// `INDEX_BASE` when present (update/upsert field numbering).
    pub index_base: Option<u32>,
    /// Raw `KEY`.
    pub key: Option<Bytes>,
    /// Raw `TUPLE` (update operations for UPDATE).
    pub tuple: Option<Bytes>,
    /// Raw `OPS` (UPSERT operations).
    pub ops: Option<Bytes>,
}

impl BodyFields {
    /// Parses the top-level map of a DML body.
    pub fn parse(body: &Bytes) -> Result<Self, ProtocolError> {
        let mut f = Self::default();
        if body.is_empty() {
            return Ok(f);
        }
        let e = ProtocolError::decode("row body");
        let mut r = Reader::new(body);
        for _ in 0..r.read_map_len().map_err(e)? {
            let k = r.read_u64().map_err(e)?;
            let start = r.position();
            match k {
                k if k == u64::from(key::SPACE_ID) => f.space_id = r.read_u32().map_err(e)?,
                k if k == u64::from(key::INDEX_ID) => f.index_id = r.read_u32().map_err(e)?,
                k if k == u64::from(key::INDEX_BASE) => {
                    f.index_base = Some(r.read_u32().map_err(e)?)
                }
                _ => {
                    r.skip().map_err(e)?;
                    let raw = body.slice(start..r.position());
                    match k {
                        k if k == u64::from(key::KEY) => f.key = Some(raw),
                        k if k == u64::from(key::TUPLE) => f.tuple = Some(raw),
                        k if k == u64::from(key::OPS) => f.ops = Some(raw),
                        _ => {}
                    }
                }
            }
        }
        Ok(f)
    }
}
