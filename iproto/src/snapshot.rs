//! FETCH_SNAPSHOT: the read view an anonymous replica starts from.
//!
//! What the server sends, in order (`relay_initial_join` in
//! `src/box/relay.cc`, `memtx_engine_join` in `src/box/memtx_engine.cc`):
//! 1. `OK {VCLOCK}`: the read view's vclock (the **start**: subscribe from it);
//! 2. when the request names a version and the server reads it (2.11.4+,
//!    3.0+: commit 2c7e82c20c, gh-9401): the meta section, `JOIN_META`, the
//!    Raft state (`RAFT`: term, vote, leader; 3.x only, 2.11 drops it as
//!    replication-local), the synchronous queue's state (`PROMOTE`: owner,
//!    confirmed LSN, term, confirmed vclock), then `JOIN_SNAPSHOT`;
//! 3. one `INSERT {SPACE_ID, TUPLE}` per tuple, system spaces first, header
//!    without LSN;
//! 4. `OK {VCLOCK}`: the server's vclock after the last row (the **end**).
//!
//! 2.11.4+ and 3.x refuse a FETCH_SNAPSHOT without a body map
//! (`ER_INVALID_MSGPACK`); older servers ignore the body.
//! The request always carries `SERVER_VERSION` (and the subscriber's UUID
//! when given, which 3.3+ uses for its WAL GC consumer). A fetch that breaks
//! off is void: nothing tells the rows received so far are complete.

use uuid::Uuid;

use crate::{
    Row, Synchro, Vclock,
    consts::{key, raft_key, request as rt},
    error::{Error, ProtocolError, Result},
    frame::Frame,
    msgpack::{Reader, write},
    replication::{DEFAULT_SERVER_VERSION, ReplicationClient, vclock_of},
};

/// The source's Raft state at the read view (3.x sends it; see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftState {
    /// Current term.
    pub term: u64,
    /// Instance id voted for in this term (0: none).
    pub vote: u32,
    /// 1 follower, 2 candidate, 3 leader (0: not sent).
    pub state: u32,
    /// The known leader's id (0: none).
    pub leader_id: u32,
    /// Whether the sender sees the leader.
    pub is_leader_seen: bool,
}

impl RaftState {
    /// Decodes the body of a RAFT row; unknown keys are skipped.
    pub fn decode(body: &[u8]) -> Result<Self, ProtocolError> {
        let e = ProtocolError::decode("RAFT row body");
        let mut s = Self::default();
        if body.is_empty() {
            return Ok(s);
        }
        let mut r = Reader::new(body);
        for _ in 0..r.read_map_len().map_err(e)? {
            match r.read_u64().map_err(e)? {
                k if k == u64::from(raft_key::TERM) => s.term = r.read_u64().map_err(e)?,
                k if k == u64::from(raft_key::VOTE) => s.vote = r.read_u32().map_err(e)?,
                k if k == u64::from(raft_key::STATE) => s.state = r.read_u32().map_err(e)?,
                k if k == u64::from(raft_key::LEADER_ID) => {
                    s.leader_id = r.read_u32().map_err(e)?
                }
                k if k == u64::from(raft_key::IS_LEADER_SEEN) => {
                    s.is_leader_seen = r.read_bool().map_err(e)?
                }
                _ => {
                    r.skip().map_err(e)?;
                }
            }
        }
        Ok(s)
    }
}

/// The meta section of a snapshot (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The Raft state, when sent (3.x).
    pub raft: Option<RaftState>,
    /// The synchronous queue's state as a PROMOTE: `replica_id` is the queue
    /// owner (0: unclaimed), `lsn` its confirmed LSN, `term` the greatest
    /// PROMOTE term.
    pub queue: Option<Synchro>,
    /// The queue's confirmed vclock, when sent (2.11+).
    pub confirmed_vclock: Option<Vclock>,
    /// Types of meta rows this crate does not know (kept, not errors).
    pub other_types: Vec<u32>,
}

/// What FETCH_SNAPSHOT asks for.
#[derive(Debug, Clone, Default)]
pub struct FetchRequest {
    /// The subscriber's instance UUID: on 3.3+ the server registers its WAL
    /// GC consumer under it (use the UUID you will SUBSCRIBE with).
    pub instance_uuid: Option<Uuid>,
}

impl FetchRequest {
    fn encode(&self, out: &mut Vec<u8>) {
        write::map_len(out, if self.instance_uuid.is_some() { 2 } else { 1 });
        write::uint(out, u64::from(key::SERVER_VERSION));
        write::uint(out, u64::from(DEFAULT_SERVER_VERSION));
        if let Some(uuid) = self.instance_uuid {
            write::uint(out, u64::from(key::INSTANCE_UUID));
            write::str(out, &uuid.to_string());
        }
    }
}

impl ReplicationClient {
    /// Sends FETCH_SNAPSHOT (without an instance UUID) and reads up to the
    /// first data row.
    pub async fn fetch_snapshot(self) -> Result<SnapshotStream> {
        self.fetch_snapshot_with(&FetchRequest::default()).await
    }

    /// Sends FETCH_SNAPSHOT, waits for the start vclock and reads the meta
    /// section when the server sends one.
    pub async fn fetch_snapshot_with(mut self, req: &FetchRequest) -> Result<SnapshotStream> {
        let sync = self.send(rt::FETCH_SNAPSHOT, |o| req.encode(o)).await?;
        let limit = self.snapshot_limit();
        let first = self.recv("FETCH_SNAPSHOT", limit).await?;
        if let Some(e) = first.server_error() {
            return Err(Error::Server(e));
        }
        if first.header.request_type != rt::OK {
            return Err(ProtocolError::UnexpectedType {
                got: first.header.request_type,
                during: "waiting for the snapshot's start vclock",
            }
            .into());
        }
        let start = vclock_of(&first.body)?;
        let mut stream = SnapshotStream {
            client: self,
            sync,
            start,
            end: None,
            meta: None,
            pending: None,
        };
        let next = stream.recv().await?;
        if next.header.request_type == rt::JOIN_META {
            stream.meta = Some(stream.read_meta().await?);
        } else {
            stream.pending = Some(next);
        }
        Ok(stream)
    }
}

/// The rows of a FETCH_SNAPSHOT, then its end vclock.
#[derive(Debug)]
pub struct SnapshotStream {
    client: ReplicationClient,
    sync: u64,
    start: Vclock,
    end: Option<Vclock>,
    meta: Option<SnapshotMeta>,
    pending: Option<Frame>,
}

impl SnapshotStream {
    /// The read view's vclock: subscribe from here, not from the end vclock.
    pub fn start_vclock(&self) -> &Vclock {
        &self.start
    }

    /// The upstream's vclock when the snapshot ended (after the last row).
    pub fn end_vclock(&self) -> Option<&Vclock> {
        self.end.as_ref()
    }

    /// The meta section, when the server sent one.
    pub fn meta(&self) -> Option<&SnapshotMeta> {
        self.meta.as_ref()
    }

    async fn recv(&mut self) -> Result<Frame> {
        let limit = self.client.snapshot_limit();
        let f = self.client.recv("snapshot row", limit).await?;
        if let Some(e) = f.server_error() {
            return Err(Error::Server(e));
        }
        if f.header.sync != self.sync {
            return Err(ProtocolError::UnexpectedType {
                got: f.header.request_type,
                during: "reading a snapshot (foreign sync)",
            }
            .into());
        }
        Ok(f)
    }

    async fn read_meta(&mut self) -> Result<SnapshotMeta> {
        let mut meta = SnapshotMeta::default();
        loop {
            let f = self.recv().await?;
            match f.header.request_type {
                rt::JOIN_SNAPSHOT => return Ok(meta),
                rt::RAFT => meta.raft = Some(RaftState::decode(&f.body)?),
                rt::RAFT_PROMOTE => {
                    let row = Row::from(f);
                    meta.queue = Some(row.synchro()?);
                    meta.confirmed_vclock = confirmed_vclock(&row.body)?;
                }
                rt::OK => {
                    return Err(ProtocolError::UnexpectedType {
                        got: rt::OK,
                        during: "reading a snapshot's meta section (no JOIN_SNAPSHOT)",
                    }
                    .into());
                }
                other => meta.other_types.push(other),
            }
        }
    }

    /// The next snapshot row (system spaces first), or `None` at the end.
    pub async fn next_row(&mut self) -> Result<Option<Row>> {
        if self.end.is_some() {
            return Ok(None);
        }
        let f = match self.pending.take() {
            Some(f) => f,
            None => self.recv().await?,
        };
        if f.header.request_type == rt::OK {
            self.end = Some(vclock_of(&f.body)?);
            return Ok(None);
        }
        Ok(Some(Row::from(f)))
    }

    /// Gives the connection back once the stream has ended (to SUBSCRIBE on
    /// the same socket right away: before 3.3 the server keeps no xlogs for
    /// an anonymous replica in between).
    pub fn into_client(self) -> Result<ReplicationClient> {
        if self.end.is_none() {
            return Err(ProtocolError::Missing("end of snapshot").into());
        }
        Ok(self.client)
    }
}

fn confirmed_vclock(body: &[u8]) -> Result<Option<Vclock>, ProtocolError> {
    let e = ProtocolError::decode("PROMOTE body");
    let mut r = Reader::new(body);
    if body.is_empty() {
        return Ok(None);
    }
    for _ in 0..r.read_map_len().map_err(e)? {
        if r.read_u64().map_err(e)? == u64::from(key::VCLOCK) {
            return Vclock::decode(&mut r).map(Some).map_err(e);
        }
        r.skip().map_err(e)?;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_always_has_a_body_with_the_version() {
        let mut out = Vec::new();
        FetchRequest::default().encode(&mut out);
        let v = rmpv::decode::read_value(&mut &out[..]).unwrap();
        assert_eq!(
            v,
            rmpv::Value::Map(vec![(6.into(), DEFAULT_SERVER_VERSION.into())])
        );
        let uuid = Uuid::from_u128(7);
        let mut out = Vec::new();
        FetchRequest {
            instance_uuid: Some(uuid),
        }
        .encode(&mut out);
        let v = rmpv::decode::read_value(&mut &out[..]).unwrap();
        let m = v.as_map().unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[1], (0x24.into(), uuid.to_string().into()));
    }

    #[test]
    fn raft_state_and_confirmed_vclock_decode() {
        let mut body = Vec::new();
        write::map_len(&mut body, 4);
        for (k, v) in [(0u64, 7u64), (1, 2), (4, 2)] {
            write::uint(&mut body, k);
            write::uint(&mut body, v);
        }
        write::uint(&mut body, 5);
        write::bool(&mut body, true);
        let s = RaftState::decode(&body).unwrap();
        assert_eq!(
            s,
            RaftState {
                term: 7,
                vote: 2,
                state: 0,
                leader_id: 2,
                is_leader_seen: true
            }
        );
        assert!(RaftState::decode(&[0x81, 0x00]).is_err());

        let mut promote = Vec::new();
        write::map_len(&mut promote, 2);
        write::uint(&mut promote, 0x03);
        write::uint(&mut promote, 5);
        write::uint(&mut promote, u64::from(key::VCLOCK));
        [(1, 5)]
            .into_iter()
            .collect::<Vclock>()
            .encode(&mut promote);
        assert_eq!(
            confirmed_vclock(&promote).unwrap(),
            Some([(1, 5)].into_iter().collect())
        );
        assert_eq!(confirmed_vclock(&[0x80]).unwrap(), None);
    }
}
