//! What the server speaks: the one place that knows Tarantool versions.
//!
//! Every connection learns its server from the greeting (version, instance
//! UUID) and, on 2.10+, from an `IPROTO_ID` exchange (protocol version and
//! feature ids). Callers branch on the capabilities of [`ServerInfo`] (or on
//! [`Feature`]s), never on version strings: when a behaviour changes between
//! Tarantool versions, the version boundary is written down here, once, with
//! the source location it was read from (see `docs/compat.md`).
//!
//! Feature ids the crate does not know are kept ([`Features::unknown`]), never
//! an error: a newer server must not break an older client.

use std::{collections::BTreeSet, fmt};

use uuid::Uuid;

use crate::{
    consts::key,
    error::ProtocolError,
    msgpack::{Reader, write},
};

/// A Tarantool version, `major.minor.patch`, as the greeting prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Major.
    pub major: u8,
    /// Minor.
    pub minor: u8,
    /// Patch.
    pub patch: u8,
}

impl Version {
    /// `major.minor.patch`.
    pub const fn new(major: u8, minor: u8, patch: u8) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// Tarantool's version id: `(major << 16) | (minor << 8) | patch`, as
    /// sent in `SERVER_VERSION`.
    pub const fn id(self) -> u32 {
        ((self.major as u32) << 16) | ((self.minor as u32) << 8) | self.patch as u32
    }

    /// The inverse of [`Self::id`] (bits above 24 are ignored).
    pub const fn from_id(id: u32) -> Self {
        Self::new((id >> 16) as u8, (id >> 8) as u8, id as u8)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// An `IPROTO_ID` feature id (`src/box/iproto_features.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Feature {
    /// `STREAM_ID` header key: several streams on one connection (2.10).
    Streams,
    /// IPROTO BEGIN/COMMIT/ROLLBACK (2.10; needs `memtx_use_mvcc_engine`).
    Transactions,
    /// `MP_ERROR` extension in CALL/EVAL results (2.10).
    ErrorExtension,
    /// IPROTO WATCH/UNWATCH/EVENT (2.10).
    Watchers,
    /// Pagination of SELECT (2.11).
    Pagination,
    /// Space and index names instead of ids in requests (3.0).
    SpaceAndIndexNames,
    /// IPROTO WATCH_ONCE (3.0).
    WatchOnce,
    /// Tuples with formats in DML responses (3.0).
    DmlTupleExtension,
    /// Tuples with formats in CALL/EVAL responses (3.0).
    CallRetTupleExtension,
    /// Tuples with formats in CALL/EVAL arguments (3.0).
    CallArgTupleExtension,
    /// Checkpoint cursor in FETCH_SNAPSHOT (3.2; Enterprise builds only).
    FetchSnapshotCursor,
    /// `IS_SYNC` flag on IPROTO BEGIN/COMMIT (3.2).
    IsSync,
    /// INSERT_ARROW (3.3).
    InsertArrow,
}

impl Feature {
    /// Every feature this crate knows, by id.
    pub const ALL: [Feature; 13] = [
        Self::Streams,
        Self::Transactions,
        Self::ErrorExtension,
        Self::Watchers,
        Self::Pagination,
        Self::SpaceAndIndexNames,
        Self::WatchOnce,
        Self::DmlTupleExtension,
        Self::CallRetTupleExtension,
        Self::CallArgTupleExtension,
        Self::FetchSnapshotCursor,
        Self::IsSync,
        Self::InsertArrow,
    ];

    /// The wire id.
    pub const fn id(self) -> u32 {
        match self {
            Self::Streams => 0,
            Self::Transactions => 1,
            Self::ErrorExtension => 2,
            Self::Watchers => 3,
            Self::Pagination => 4,
            Self::SpaceAndIndexNames => 5,
            Self::WatchOnce => 6,
            Self::DmlTupleExtension => 7,
            Self::CallRetTupleExtension => 8,
            Self::CallArgTupleExtension => 9,
            Self::FetchSnapshotCursor => 10,
            Self::IsSync => 11,
            Self::InsertArrow => 12,
        }
    }

    /// The feature with this wire id, if the crate knows it.
    pub fn from_id(id: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.id() == id)
    }
}

/// A set of feature ids, known or not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Features(BTreeSet<u32>);

impl Features {
    /// Whether the set has `feature`.
    pub fn has(&self, feature: Feature) -> bool {
        self.0.contains(&feature.id())
    }

    /// Every id, in order.
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied()
    }

    /// The known features, in id order.
    pub fn known(&self) -> impl Iterator<Item = Feature> + '_ {
        self.ids().filter_map(Feature::from_id)
    }

    /// Ids this crate does not know (kept, never an error).
    pub fn unknown(&self) -> impl Iterator<Item = u32> + '_ {
        self.ids().filter(|id| Feature::from_id(*id).is_none())
    }
}

impl FromIterator<u32> for Features {
    fn from_iter<T: IntoIterator<Item = u32>>(iter: T) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl FromIterator<Feature> for Features {
    fn from_iter<T: IntoIterator<Item = Feature>>(iter: T) -> Self {
        Self(iter.into_iter().map(Feature::id).collect())
    }
}

/// The server's answer to `IPROTO_ID` (2.10+).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Protocol {
    /// The server's iproto protocol version (4 on 2.11, 10 on 3.3).
    pub version: u64,
    /// What it supports.
    pub features: Features,
    /// `box.cfg.auth_type` (2.11+), when sent.
    pub auth_type: Option<String>,
}

/// The protocol version this client announces in `IPROTO_ID`.
pub const CLIENT_PROTOCOL_VERSION: u64 = 3;

/// The features this client announces in `IPROTO_ID`: only those that do not
/// change how the server encodes its answers (no error or tuple extensions).
pub const CLIENT_FEATURES: [Feature; 2] = [Feature::Streams, Feature::Transactions];

impl Protocol {
    /// Appends the body of this client's `IPROTO_ID` request.
    pub(crate) fn encode_request(out: &mut Vec<u8>) {
        write::map_len(out, 2);
        write::uint(out, u64::from(key::VERSION));
        write::uint(out, CLIENT_PROTOCOL_VERSION);
        write::uint(out, u64::from(key::FEATURES));
        write::array_len(out, CLIENT_FEATURES.len() as u32);
        for f in CLIENT_FEATURES {
            write::uint(out, u64::from(f.id()));
        }
    }

    /// Decodes the body of an `IPROTO_ID` response. Unknown keys and unknown
    /// feature ids are kept or skipped, never an error.
    pub fn decode(body: &[u8]) -> Result<Self, ProtocolError> {
        let e = ProtocolError::decode("IPROTO_ID response");
        let mut p = Self::default();
        if body.is_empty() {
            return Ok(p);
        }
        let mut r = Reader::new(body);
        for _ in 0..r.read_map_len().map_err(e)? {
            match r.read_u64().map_err(e)? {
                k if k == u64::from(key::VERSION) => p.version = r.read_u64().map_err(e)?,
                k if k == u64::from(key::FEATURES) => {
                    let n = r.read_array_len().map_err(e)?;
                    let mut ids = BTreeSet::new();
                    for _ in 0..n {
                        ids.insert(r.read_u32().map_err(e)?);
                    }
                    p.features = Features(ids);
                }
                k if k == u64::from(key::AUTH_TYPE) => {
                    p.auth_type = Some(r.read_str().map_err(e)?.to_owned())
                }
                _ => {
                    r.skip().map_err(e)?;
                }
            }
        }
        Ok(p)
    }
}

/// What one server is and speaks, learned on connect.
///
/// The capability methods are the only place where tcf compares Tarantool
/// versions; each names the version boundary and where it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    version: Version,
    instance_uuid: Uuid,
    protocol: Option<Protocol>,
}

impl ServerInfo {
    /// Server info from its greeting and, when it answered one, `IPROTO_ID`.
    pub fn new(version: Version, instance_uuid: Uuid, protocol: Option<Protocol>) -> Self {
        Self {
            version,
            instance_uuid,
            protocol,
        }
    }

    /// The version from the greeting.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The instance's UUID from the greeting.
    pub fn instance_uuid(&self) -> Uuid {
        self.instance_uuid
    }

    /// The `IPROTO_ID` answer; `None` before 2.10 (or when not asked).
    pub fn protocol(&self) -> Option<&Protocol> {
        self.protocol.as_ref()
    }

    /// Whether the server advertised `feature` in `IPROTO_ID`.
    pub fn has(&self, feature: Feature) -> bool {
        self.protocol
            .as_ref()
            .is_some_and(|p| p.features.has(feature))
    }

    /// Whether the server answers `IPROTO_ID` (2.10+): asked once per
    /// connection by the handshake.
    pub fn answers_id(&self) -> bool {
        answers_id(self.version)
    }

    /// Whether the last row of a transaction carries the limbo flags
    /// `WAIT_SYNC` (the transaction waits in the synchronous queue) and
    /// `WAIT_ACK` (it is synchronous itself): 2.6.3, 2.7.2, 2.8.1 and later
    /// (`IPROTO_FLAG_WAIT_SYNC` in `src/box/iproto_constants.h`, commit
    /// 109502cc0b). Before, only the space's `is_sync` tells.
    pub fn sends_synchro_flags(&self) -> bool {
        let v = self.version;
        match (v.major, v.minor) {
            (2, 6) => v >= Version::new(2, 6, 3),
            (2, 7) => v >= Version::new(2, 7, 2),
            (2, 8) => v >= Version::new(2, 8, 1),
            _ => v > Version::new(2, 8, 0),
        }
    }

    /// Whether the server has Raft elections (`election_mode`,
    /// `box.info.election`, RAFT rows): 2.6.1+.
    pub fn has_elections(&self) -> bool {
        self.version >= Version::new(2, 6, 1)
    }

    /// Whether a master counts an anonymous replica's acks toward the
    /// synchronous quorum: before 2.10.0 (gh-5418, commit 04b223094c). tcf
    /// acks only what its target committed durably, so counting them is safe.
    pub fn anon_acks_count_for_quorum(&self) -> bool {
        self.version < Version::new(2, 10, 0)
    }

    /// Whether a master processes `IPROTO_TERM` in every ack, anonymous
    /// ones included, and may start a new Raft term because of it (2.11.0+,
    /// `tx_status_update` in `src/box/relay.cc`). tcf never sends a term.
    pub fn acts_on_ack_term(&self) -> bool {
        self.version >= Version::new(2, 11, 0)
    }

    /// Whether SUBSCRIBE is refused with a replicaset UUID other than the
    /// server's (`ER_REPLICASET_UUID_MISMATCH`, 2.7.3/2.8.2/2.10+, commit
    /// ea0b126ffa and its backports; 2.6 accepts anything). tcf always
    /// sends the real one.
    pub fn checks_subscribe_replicaset(&self) -> bool {
        let v = self.version;
        match (v.major, v.minor) {
            (2, 7) => v >= Version::new(2, 7, 3),
            (2, 8) => v >= Version::new(2, 8, 2),
            _ => v >= Version::new(2, 9, 0),
        }
    }

    /// The `_schema` key holding the replicaset UUID: `cluster` before 3.0,
    /// `replicaset_uuid` from 3.0 (`box_populate_schema_space`).
    pub fn replicaset_uuid_key(&self) -> &'static str {
        if self.has_node_names() {
            "replicaset_uuid"
        } else {
            "cluster"
        }
    }

    /// Whether instances and replicasets may have names (`INSTANCE_NAME`,
    /// `REPLICASET_NAME` in handshakes, `_schema.replicaset_name`): 3.0+.
    pub fn has_node_names(&self) -> bool {
        self.version.major >= 3
    }

    /// Whether system spaces (DDL, users, grants) can become synchronous
    /// once the synchronous queue is claimed: 3.2+, with
    /// `compat.box_consider_system_spaces_synchronous = 'new'` (the default
    /// is still 'old' on 3.3; `src/box/space.c`, `src/lua/compat.lua`).
    /// Their rows then carry `WAIT_ACK` and wait for a CONFIRM like a
    /// synchronous space's; the gateway follows the flags either way.
    pub fn system_spaces_sync(&self) -> bool {
        self.version >= Version::new(3, 2, 0)
    }

    /// Whether an anonymous replica gets a persistent WAL GC consumer
    /// (`_gc_consumers`, kept `replication_anon_ttl` after it disconnects,
    /// released by `box.ctl.replica_gc(uuid)`): 3.3.0+ (`box_connect_replica`
    /// in `src/box/box.cc`). Before, the server keeps no WAL for it.
    pub fn pins_wal_for_anon(&self) -> bool {
        self.version >= Version::new(3, 3, 0)
    }

    /// Whether FETCH_SNAPSHOT reads its request body: it then requires one
    /// (a body-less request is `ER_INVALID_MSGPACK`) and, given a
    /// `SERVER_VERSION`, sends the meta section (Raft and synchronous queue
    /// state) before the data: 2.11.4+ and 3.0+ (commit 2c7e82c20c, gh-9401).
    /// tcf always sends a body, which older servers ignore.
    pub fn snapshot_has_meta(&self) -> bool {
        let v = self.version;
        match (v.major, v.minor) {
            (2, 11) => v >= Version::new(2, 11, 4),
            _ => v.major >= 3,
        }
    }

    /// Whether FETCH_SNAPSHOT takes the subscriber's `INSTANCE_UUID` (and
    /// registers the GC consumer under it): 3.3.0+.
    pub fn fetch_snapshot_takes_uuid(&self) -> bool {
        self.pins_wal_for_anon()
    }
}

/// Whether a server of `version` answers `IPROTO_ID` (2.10+).
pub(crate) fn answers_id(version: Version) -> bool {
    version >= Version::new(2, 10, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(major: u8, minor: u8, patch: u8) -> ServerInfo {
        ServerInfo::new(Version::new(major, minor, patch), Uuid::nil(), None)
    }

    #[test]
    fn version_ids_round_trip_and_order() {
        let v = Version::new(2, 11, 5);
        assert_eq!(v.id(), 0x020b05);
        assert_eq!(Version::from_id(v.id()), v);
        assert!(Version::new(3, 0, 0) > Version::new(2, 11, 5));
        assert_eq!(v.to_string(), "2.11.5");
    }

    #[test]
    fn capabilities_follow_the_documented_boundaries() {
        let v26 = info(2, 6, 0);
        let v211 = info(2, 11, 5);
        let v33 = info(3, 3, 0);
        assert!(!v26.answers_id() && v211.answers_id() && v33.answers_id());
        assert!(!v26.sends_synchro_flags());
        assert!(info(2, 6, 3).sends_synchro_flags());
        assert!(!info(2, 7, 1).sends_synchro_flags());
        assert!(info(2, 7, 2).sends_synchro_flags());
        assert!(!info(2, 8, 0).sends_synchro_flags());
        assert!(v211.sends_synchro_flags() && v33.sends_synchro_flags());
        assert!(!v26.acts_on_ack_term() && v211.acts_on_ack_term());
        assert!(v26.anon_acks_count_for_quorum() && !v211.anon_acks_count_for_quorum());
        assert!(!v26.checks_subscribe_replicaset() && v211.checks_subscribe_replicaset());
        assert_eq!(v211.replicaset_uuid_key(), "cluster");
        assert_eq!(v33.replicaset_uuid_key(), "replicaset_uuid");
        assert!(!v211.system_spaces_sync() && info(3, 2, 0).system_spaces_sync());
        assert!(!v26.snapshot_has_meta() && !info(2, 11, 3).snapshot_has_meta());
        assert!(v211.snapshot_has_meta() && info(3, 0, 0).snapshot_has_meta());
        assert!(!info(3, 2, 9).pins_wal_for_anon() && v33.pins_wal_for_anon());
    }

    #[test]
    fn unknown_features_are_kept_not_errors() {
        let mut body = Vec::new();
        write::map_len(&mut body, 4);
        write::uint(&mut body, u64::from(key::VERSION));
        write::uint(&mut body, 42);
        write::uint(&mut body, u64::from(key::FEATURES));
        write::array_len(&mut body, 4);
        for id in [0, 3, 11, 99] {
            write::uint(&mut body, id);
        }
        write::uint(&mut body, u64::from(key::AUTH_TYPE));
        write::str(&mut body, "chap-sha1");
        write::uint(&mut body, 0x7f);
        write::str(&mut body, "a key from the future");
        let p = Protocol::decode(&body).unwrap();
        assert_eq!(p.version, 42);
        assert!(p.features.has(Feature::Streams) && p.features.has(Feature::IsSync));
        assert!(!p.features.has(Feature::Transactions));
        assert_eq!(p.features.unknown().collect::<Vec<_>>(), [99]);
        assert_eq!(p.auth_type.as_deref(), Some("chap-sha1"));
        let s = ServerInfo::new(Version::new(9, 0, 0), Uuid::nil(), Some(p));
        assert!(s.has(Feature::Watchers) && !s.has(Feature::WatchOnce));
    }

    #[test]
    fn malformed_id_answers_are_errors_not_panics() {
        assert!(Protocol::decode(&[0x81, 0x55, 0x91, 0xc1]).is_err());
        assert!(Protocol::decode(&[0x81]).is_err());
        assert_eq!(Protocol::decode(&[]).unwrap(), Protocol::default());
    }

    #[test]
    fn the_client_request_names_only_encoding_neutral_features() {
        let mut out = Vec::new();
        Protocol::encode_request(&mut out);
        let p = Protocol::decode(&out).unwrap();
        assert_eq!(p.version, CLIENT_PROTOCOL_VERSION);
        assert_eq!(
            p.features.known().collect::<Vec<_>>(),
            [Feature::Streams, Feature::Transactions]
        );
    }
}
