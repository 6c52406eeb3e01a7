//! The anonymous-replica side of replication: VOTE, FETCH_SNAPSHOT (see
//! `snapshot`) and SUBSCRIBE with acks.
//!
//! Contract, as the gateway relies on it:
//! * [`ReplicationClient::fetch_snapshot`] streams the read view's rows and
//!   ends with its start vclock (subscribe from there) and end vclock;
//! * [`ReplicationClient::subscribe`] always sends the upstream's real
//!   replicaset UUID (learned from `_schema` when the caller gives none:
//!   2.7.3+ refuse any other, the nil UUID included) and, on 3.x, its
//!   replicaset name; it checks that the requested vclock is not ahead of
//!   the upstream's (2.6 would silently send nothing) and, when an expected
//!   replicaset UUID is given, that it matches (2.6 does not check);
//! * acks are sent by an independent timer every `ack_interval`, carrying
//!   whatever vclock the caller last put into the [`AckSender`], and nothing
//!   else: never a Raft term (2.11+ masters act on the term in any ack, and
//!   a term the source never had would depose its leader). On Tarantool
//!   < 2.10 anonymous acks count toward the synchronous quorum, so the caller
//!   must only ever publish what its target has durably committed;
//! * the upstream is judged dead only while [`Subscription::next`] is waiting
//!   on the socket: a caller that stops reading for backpressure never sees a
//!   false death.

use std::time::Duration;

use bytes::BytesMut;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, tcp::OwnedReadHalf},
    sync::watch,
    task::JoinHandle,
};
use uuid::Uuid;

use crate::{
    Row, Vclock,
    conn::{ConnectOptions, Handshake, handshake, read_frame, reserve_read_space},
    consts::{key, request as rt},
    error::{Error, ProtocolError, Result},
    features::ServerInfo,
    frame::{self, Frame},
    greeting::Greeting,
    msgpack::{Reader, write},
    request::{self, Select},
};

/// `_schema` space id.
const SCHEMA_SPACE: u32 = 272;
/// Version sent in SUBSCRIBE (acks are honoured from 1.7.4 on).
pub const DEFAULT_SERVER_VERSION: u32 = 0x020600;

/// An instance's answer to VOTE (Tarantool 2.6 key numbering).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ballot {
    /// `read_only` as configured.
    pub is_ro_cfg: bool,
    /// Whether the instance is actually read-only now (2.6 calls it `is_loading`).
    pub is_ro: bool,
    /// The instance's vclock.
    pub vclock: Vclock,
    /// Vclock of the oldest checkpoint kept: xlogs exist only from here on.
    pub gc_vclock: Vclock,
}

impl Ballot {
    /// Whether the instance still has every row after `position`: no
    /// component of its `gc_vclock` is beyond `position`.
    pub fn has_rows_after(&self, position: &Vclock) -> bool {
        self.gc_vclock.without_local().le(position)
    }

    fn decode(body: &[u8]) -> Result<Self, ProtocolError> {
        let e = ProtocolError::decode("ballot");
        let mut r = Reader::new(body);
        let mut ballot = None;
        for _ in 0..r.read_map_len().map_err(e)? {
            if r.read_u64().map_err(e)? != u64::from(key::BALLOT) {
                r.skip().map_err(e)?;
                continue;
            }
            let mut b = Ballot::default();
            for _ in 0..r.read_map_len().map_err(e)? {
                match r.read_u64().map_err(e)? {
                    1 => b.is_ro_cfg = r.read_bool().map_err(e)?,
                    2 => b.vclock = Vclock::decode(&mut r).map_err(e)?,
                    3 => b.gc_vclock = Vclock::decode(&mut r).map_err(e)?,
                    4 => b.is_ro = r.read_bool().map_err(e)?,
                    _ => {
                        r.skip().map_err(e)?;
                    }
                }
            }
            ballot = Some(b);
        }
        ballot.ok_or(ProtocolError::Missing("BALLOT in VOTE response"))
    }
}

/// Asks `addr` for its ballot (IPROTO_VOTE; needs no authentication, and
/// skips `IPROTO_ID`: polled often, it needs nothing but the ballot).
pub async fn vote(addr: &str, opts: &ConnectOptions) -> Result<Ballot> {
    let guest = ConnectOptions::new()
        .connect_timeout(opts.connect_limit())
        .max_frame(opts.frame_limit())
        .identify(false);
    let mut c = ReplicationClient::connect(addr, &guest).await?;
    let reply = c.round_trip(rt::VOTE, |_| {}).await?;
    Ok(Ballot::decode(&reply.body)?)
}

/// Timing of a subscription.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// The upstream's `replication_timeout`: heartbeats come this often when idle.
    pub heartbeat_interval: Duration,
    /// Heartbeat intervals without any frame, while reading, before the
    /// upstream is judged dead (Tarantool's applier uses 4).
    pub dead_after_heartbeats: u32,
    /// How often acks are sent, independent of reading.
    pub ack_interval: Duration,
    /// How long a subscription may stay silent before it settles (its first
    /// row, or a heartbeat after the one the relay sends when it starts). A
    /// relay starting far back scans its xlog file up to the requested
    /// vclock and sends nothing meanwhile, heartbeats included (seconds for
    /// a large file on a busy source); judging it dead after the usual
    /// silence would resubscribe, be refused as a duplicate until the old
    /// relay finishes its scan, and never get past it.
    pub start_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(1),
            dead_after_heartbeats: 4,
            ack_interval: Duration::from_secs(1),
            start_timeout: Duration::from_secs(60),
        }
    }
}

impl Timing {
    /// The silence that marks the upstream dead.
    pub fn dead_after(&self) -> Duration {
        self.heartbeat_interval * self.dead_after_heartbeats
    }
}

/// What to subscribe with.
#[derive(Debug, Clone)]
pub struct SubscribeRequest {
    /// Start position: rows after it are sent (component 0 is dropped).
    pub vclock: Vclock,
    /// Expected replicaset UUID, checked against the upstream's answer. What
    /// SUBSCRIBE sends is always the upstream's own UUID (and on 3.x its
    /// name), read from its `_schema` first: never the nil UUID, which 2.7.3+
    /// refuse.
    pub replicaset_uuid: Option<Uuid>,
    /// This subscriber's instance UUID (random by default). A server refuses
    /// a second connection with the same UUID while the first one's relay
    /// lives (`ER_CFG` "duplicate connection"); on 3.3+ the UUID names the
    /// WAL GC consumer the server keeps for the subscriber, so a long-lived
    /// subscriber should use a stable one.
    pub instance_uuid: Uuid,
    /// Version id announced to the upstream.
    pub server_version: u32,
    /// Origins whose rows must not be sent.
    pub id_filter: Vec<u32>,
    /// Heartbeat, liveness and ack timing.
    pub timing: Timing,
}

impl SubscribeRequest {
    /// Subscribes from `vclock` with a fresh random instance UUID.
    pub fn new(vclock: Vclock) -> Self {
        Self {
            vclock,
            replicaset_uuid: None,
            instance_uuid: Uuid::new_v4(),
            server_version: DEFAULT_SERVER_VERSION,
            id_filter: Vec::new(),
            timing: Timing::default(),
        }
    }
}

/// The caller's side of the ack channel: publish the vclock to acknowledge.
pub type AckSender = watch::Sender<Vclock>;

/// Creates an ack channel starting at `initial`.
pub fn ack_channel(initial: Vclock) -> (AckSender, watch::Receiver<Vclock>) {
    watch::channel(initial)
}

/// A replicaset's identity as its `_schema` records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicasetIdentity {
    /// The replicaset UUID (`_schema.cluster` on 2.x, `replicaset_uuid` on 3.x).
    pub uuid: Uuid,
    /// The replicaset name (3.x, when configured).
    pub name: Option<String>,
}

/// A connection for replication: requests are answered one at a time, and
/// FETCH_SNAPSHOT and SUBSCRIBE take it over.
#[derive(Debug)]
pub struct ReplicationClient {
    stream: TcpStream,
    buf: BytesMut,
    greeting: Greeting,
    info: ServerInfo,
    opts: ConnectOptions,
    sync: u64,
}

impl ReplicationClient {
    /// Connects and authenticates (the user needs `read` on `universe`).
    pub async fn connect(addr: &str, opts: &ConnectOptions) -> Result<Self> {
        let Handshake {
            stream,
            greeting,
            info,
            buf,
        } = handshake(addr, opts).await?;
        Ok(Self {
            stream,
            buf,
            greeting,
            info,
            opts: opts.clone(),
            sync: 0,
        })
    }

    /// The upstream's greeting (its instance UUID and version).
    pub fn greeting(&self) -> &Greeting {
        &self.greeting
    }

    /// What the upstream is and speaks: branch on its capabilities.
    pub fn server(&self) -> &ServerInfo {
        &self.info
    }

    pub(crate) async fn send(
        &mut self,
        request_type: u32,
        body: impl FnOnce(&mut Vec<u8>),
    ) -> Result<u64> {
        self.sync += 1;
        let mut out = Vec::new();
        frame::encode_frame(&mut out, request_type, self.sync, body);
        self.stream.write_all(&out).await?;
        Ok(self.sync)
    }

    pub(crate) async fn recv(&mut self, what: &'static str, limit: Duration) -> Result<Frame> {
        let max = self.opts.frame_limit();
        tokio::time::timeout(limit, read_frame(&mut self.stream, &mut self.buf, max))
            .await
            .map_err(|_| Error::Timeout { what, after: limit })?
    }

    async fn round_trip(
        &mut self,
        request_type: u32,
        body: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Frame> {
        let sync = self.send(request_type, body).await?;
        let limit = self.opts.connect_limit();
        loop {
            let f = self.recv("request", limit).await?;
            if f.header.sync != sync {
                continue;
            }
            return match f.server_error() {
                Some(e) => Err(Error::Server(e)),
                None => Ok(f),
            };
        }
    }

    /// One `_schema` value (field 2 of the tuple keyed `name`), if any.
    async fn schema_value(&mut self, name: &str) -> Result<Option<String>> {
        let key = [rmpv::Value::from(name)];
        let opts = Select {
            limit: 1,
            ..Select::default()
        };
        let reply = self
            .round_trip(rt::SELECT, |o| {
                request::select(o, SCHEMA_SPACE, &key[..], opts)
            })
            .await?;
        let resp = crate::conn::Response {
            header: reply.header,
            body: reply.body,
        };
        let data = resp.data_value()?;
        Ok(data
            .as_array()
            .and_then(|rows| rows.first())
            .and_then(|t| t.as_array())
            .and_then(|t| t.get(1))
            .and_then(|v| v.as_str())
            .map(str::to_owned))
    }

    /// The replicaset UUID from `_schema` (`cluster` on 2.x,
    /// `replicaset_uuid` on 3.x; the other key is tried too, for a schema
    /// not yet upgraded).
    pub async fn replicaset_uuid(&mut self) -> Result<Uuid> {
        let first = self.info.replicaset_uuid_key();
        let second = if first == "cluster" {
            "replicaset_uuid"
        } else {
            "cluster"
        };
        for name in [first, second] {
            if let Some(uuid) = self
                .schema_value(name)
                .await?
                .and_then(|s| Uuid::parse_str(&s).ok())
                .filter(|u| !u.is_nil())
            {
                return Ok(uuid);
            }
        }
        Err(ProtocolError::Missing("replicaset uuid in _schema").into())
    }

    /// The replicaset's UUID and, where the server has names (3.x), its name.
    pub async fn replicaset(&mut self) -> Result<ReplicasetIdentity> {
        let uuid = self.replicaset_uuid().await?;
        let name = if self.info.has_node_names() {
            self.schema_value("replicaset_name")
                .await?
                .filter(|n| !n.is_empty())
        } else {
            None
        };
        Ok(ReplicasetIdentity { uuid, name })
    }

    pub(crate) fn snapshot_limit(&self) -> Duration {
        // A snapshot answer waits for the WAL sync and confirmed sync
        // transactions; give it the generous connect limit times two.
        self.opts.connect_limit() * 2
    }

    /// Subscribes as an anonymous replica. `acks` is read by the ack timer.
    ///
    /// The upstream's replicaset identity is read from its `_schema` first
    /// (one round trip on this connection) and sent as is; a mismatch with
    /// the expected UUID is then reported by the answer's check
    /// ([`Error::ReplicasetMismatch`]), whatever the server version.
    pub async fn subscribe(
        mut self,
        req: &SubscribeRequest,
        acks: watch::Receiver<Vclock>,
    ) -> Result<Subscription> {
        let vclock = req.vclock.without_local();
        let ReplicasetIdentity { uuid: rs, name } = self.replicaset().await?;
        self.send(rt::SUBSCRIBE, |o| {
            let extra = u32::from(!req.id_filter.is_empty()) + u32::from(name.is_some());
            write::map_len(o, 5 + extra);
            write::uint(o, u64::from(key::CLUSTER_UUID));
            write::str(o, &rs.to_string());
            if let Some(name) = &name {
                write::uint(o, u64::from(key::REPLICASET_NAME));
                write::str(o, name);
            }
            write::uint(o, u64::from(key::INSTANCE_UUID));
            write::str(o, &req.instance_uuid.to_string());
            write::uint(o, u64::from(key::VCLOCK));
            vclock.encode(o);
            write::uint(o, u64::from(key::SERVER_VERSION));
            write::uint(o, u64::from(req.server_version));
            write::uint(o, u64::from(key::REPLICA_ANON));
            write::bool(o, true);
            if !req.id_filter.is_empty() {
                write::uint(o, u64::from(key::ID_FILTER));
                write::array_len(o, req.id_filter.len() as u32);
                for id in &req.id_filter {
                    write::uint(o, u64::from(*id));
                }
            }
        })
        .await?;
        let reply = self.recv("SUBSCRIBE", self.opts.connect_limit()).await?;
        if let Some(e) = reply.server_error() {
            return Err(classify(e));
        }
        let upstream_vclock = vclock_of(&reply.body)?;
        let replicaset_uuid = uuid_of(&reply.body)?;
        let replicaset_name = name_of(&reply.body)?;
        if let Some(expected) = req.replicaset_uuid
            && expected != replicaset_uuid
        {
            return Err(Error::ReplicasetMismatch {
                expected,
                actual: replicaset_uuid,
            });
        }
        if let Some(component) = vclock.first_ahead_of(&upstream_vclock) {
            return Err(Error::AheadOfUpstream {
                requested: vclock,
                upstream: upstream_vclock,
                component,
            });
        }
        let (rd, wr) = self.stream.into_split();
        let acker = tokio::spawn(ack_loop(wr, acks, req.timing.ack_interval));
        Ok(Subscription {
            rd,
            buf: self.buf,
            max_frame: self.opts.frame_limit(),
            dead_after: req.timing.dead_after(),
            start_timeout: req.timing.start_timeout.max(req.timing.dead_after()),
            start: Start::Subscribed,
            responder_id: reply.header.replica_id,
            upstream_vclock,
            replicaset_uuid,
            replicaset_name,
            info: self.info,
            acker,
        })
    }
}

fn classify(e: crate::error::ServerError) -> Error {
    if e.is_xlog_gap() {
        Error::XlogGap(e)
    } else {
        Error::Server(e)
    }
}

fn body_key<'a>(body: &'a [u8], wanted: u8, what: &'static str) -> Result<Reader<'a>> {
    let e = ProtocolError::decode(what);
    let mut r = Reader::new(body);
    for _ in 0..r.read_map_len().map_err(e)? {
        if r.read_u64().map_err(e)? == u64::from(wanted) {
            return Ok(r);
        }
        r.skip().map_err(e)?;
    }
    Err(ProtocolError::Missing(what).into())
}

pub(crate) fn vclock_of(body: &[u8]) -> Result<Vclock> {
    let mut r = body_key(body, key::VCLOCK, "VCLOCK")?;
    Ok(Vclock::decode(&mut r).map_err(ProtocolError::decode("VCLOCK"))?)
}

fn uuid_of(body: &[u8]) -> Result<Uuid> {
    let mut r = body_key(body, key::CLUSTER_UUID, "CLUSTER_UUID")?;
    let s = r
        .read_str()
        .map_err(ProtocolError::decode("CLUSTER_UUID"))?;
    Uuid::parse_str(s).map_err(|_| ProtocolError::Missing("a valid CLUSTER_UUID").into())
}

/// The replicaset name of a SUBSCRIBE answer (3.x), if any.
fn name_of(body: &[u8]) -> Result<Option<String>> {
    match body_key(body, key::REPLICASET_NAME, "REPLICASET_NAME") {
        Ok(mut r) => Ok(Some(
            r.read_str()
                .map_err(ProtocolError::decode("REPLICASET_NAME"))?
                .to_owned(),
        )),
        Err(Error::Protocol(ProtocolError::Missing(_))) => Ok(None),
        Err(e) => Err(e),
    }
}

/// What a subscription yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A WAL row.
    Row(Row),
    /// A heartbeat: the upstream is idle and alive; `timestamp` is its clock.
    Heartbeat {
        /// Upstream time when sent (seconds since the epoch), if present.
        timestamp: Option<f64>,
    },
}

/// How far a subscription has come: until it settles, silence is judged
/// against [`Timing::start_timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Subscribed,
    FirstHeartbeat,
    Settled,
}

/// A live anonymous subscription. Dropping it stops the acks and closes the
/// socket.
#[derive(Debug)]
pub struct Subscription {
    rd: OwnedReadHalf,
    buf: BytesMut,
    max_frame: usize,
    dead_after: Duration,
    start_timeout: Duration,
    start: Start,
    responder_id: u32,
    upstream_vclock: Vclock,
    replicaset_uuid: Uuid,
    replicaset_name: Option<String>,
    info: ServerInfo,
    acker: JoinHandle<()>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.acker.abort();
    }
}

impl Subscription {
    /// The responding instance's id.
    pub fn responder_id(&self) -> u32 {
        self.responder_id
    }

    /// The upstream's vclock when the subscription was accepted.
    pub fn upstream_vclock(&self) -> &Vclock {
        &self.upstream_vclock
    }

    /// The upstream's replicaset UUID.
    pub fn replicaset_uuid(&self) -> Uuid {
        self.replicaset_uuid
    }

    /// The upstream's replicaset name, when it has one (3.x).
    pub fn replicaset_name(&self) -> Option<&str> {
        self.replicaset_name.as_deref()
    }

    /// What the upstream is and speaks.
    pub fn server(&self) -> &ServerInfo {
        &self.info
    }

    /// The next row or heartbeat.
    ///
    /// Fails with [`Error::UpstreamDead`] when nothing arrives for the dead
    /// interval *while this call waits* (before the subscription settles,
    /// [`Timing::start_timeout`]), [`Error::XlogGap`] when the upstream
    /// lacks the xlogs, [`Error::Server`] for other upstream errors, and
    /// [`Error::Closed`] when the socket closes.
    pub async fn next(&mut self) -> Result<Event> {
        // A frame already buffered costs no timer and no clock read: the
        // deadline starts only when this call has to wait on the socket.
        let f = match frame::decode_frame(&mut self.buf, self.max_frame)? {
            Some(f) => f,
            None => self.wait_frame().await?,
        };
        if let Some(e) = f.server_error() {
            return Err(classify(e));
        }
        if f.header.request_type == rt::OK {
            self.start = match self.start {
                Start::Subscribed => Start::FirstHeartbeat,
                _ => Start::Settled,
            };
            return Ok(Event::Heartbeat {
                timestamp: f.header.timestamp,
            });
        }
        self.start = Start::Settled;
        Ok(Event::Row(Row::from(f)))
    }

    /// Reads from the socket until a whole frame is buffered, failing with
    /// [`Error::UpstreamDead`] once `dead_after` (before the subscription
    /// settles, `start_timeout`) passes from the first wait.
    async fn wait_frame(&mut self) -> Result<Frame> {
        let silence = if self.start == Start::Settled {
            self.dead_after
        } else {
            self.start_timeout
        };
        let deadline = tokio::time::Instant::now() + silence;
        loop {
            reserve_read_space(&mut self.buf);
            let read = self.rd.read_buf(&mut self.buf);
            let n = tokio::time::timeout_at(deadline, read)
                .await
                .map_err(|_| Error::UpstreamDead {
                    silent_for: silence,
                })??;
            if n == 0 {
                return Err(Error::Closed);
            }
            if let Some(f) = frame::decode_frame(&mut self.buf, self.max_frame)? {
                return Ok(f);
            }
        }
    }
}

async fn ack_loop(
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    acks: watch::Receiver<Vclock>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut out = Vec::with_capacity(256);
    loop {
        tick.tick().await;
        let vclock = acks.borrow().without_local();
        out.clear();
        encode_ack(&mut out, &vclock);
        if let Err(e) = wr.write_all(&out).await {
            tracing::debug!(error = %e, "ack write failed; the reader will see the broken socket");
            return;
        }
    }
}

/// One ack frame: `OK {VCLOCK}` and nothing else. In particular no
/// `IPROTO_TERM`: 2.11+ masters call `raft_process_term` with the term of
/// every ack (an absent one reads as 0, a no-op), and the gateway has no
/// term of its own to report. No `VCLOCK_SYNC` echo either: masters ask
/// registered replicas only (`box_collect_confirmed_vclock` skips anonymous
/// ones).
pub(crate) fn encode_ack(out: &mut Vec<u8>, vclock: &Vclock) {
    frame::encode_frame(out, rt::OK, 0, |o| {
        write::map_len(o, 1);
        write::uint(o, u64::from(key::VCLOCK));
        vclock.encode(o);
    });
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;

    #[test]
    fn an_ack_carries_the_vclock_and_never_a_term() {
        let mut out = Vec::new();
        let vclock: Vclock = [(1, 10), (2, 3)].into_iter().collect();
        encode_ack(&mut out, &vclock);
        let mut buf = BytesMut::from(&out[..]);
        let f = frame::decode_frame(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(f.header.request_type, rt::OK);
        let body = rmpv::decode::read_value(&mut &f.body[..]).unwrap();
        let keys: Vec<u64> = body
            .as_map()
            .unwrap()
            .iter()
            .map(|(k, _)| k.as_u64().unwrap())
            .collect();
        assert_eq!(keys, [u64::from(key::VCLOCK)], "no TERM, no VCLOCK_SYNC");
        assert_eq!(vclock_of(&f.body).unwrap(), vclock);
    }

    #[test]
    fn a_subscribe_answer_may_name_the_replicaset() {
        let mut body = Vec::new();
        write::map_len(&mut body, 1);
        write::uint(&mut body, u64::from(key::REPLICASET_NAME));
        write::str(&mut body, "storage-1");
        assert_eq!(name_of(&body).unwrap().as_deref(), Some("storage-1"));
        assert_eq!(name_of(&[0x80]).unwrap(), None);
        assert!(name_of(&[0x81, 0x5c, 0x01]).is_err());
    }
}
