//! A pipelined iproto connection.
//!
//! Requests are matched to responses by `SYNC`, so any number can be in flight
//! on one connection. Writes from all callers are coalesced into one buffer
//! that a writer task flushes; a reader task dispatches responses. Each
//! request has its own timeout. When the connection breaks, every waiting
//! request fails with [`Error::ConnectionLost`] carrying the cause.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::{Notify, oneshot},
    task::JoinHandle,
};

use crate::{
    consts::{GREETING_SIZE, errcode, key, request as rt},
    error::{Error, ProtocolError, Result},
    features::{Protocol, ServerInfo, answers_id},
    frame::{self, DEFAULT_MAX_FRAME, Frame, Header},
    greeting::{Greeting, encode_auth_body},
    msgpack::Reader,
    request::{self, Select, ToMsgpack},
};

/// How to connect and how long to wait.
#[derive(Clone)]
pub struct ConnectOptions {
    credentials: Option<(String, String)>,
    connect_timeout: Duration,
    request_timeout: Duration,
    max_frame: usize,
    identify: bool,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("user", &self.user())
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("max_frame", &self.max_frame)
            .field("identify", &self.identify)
            .finish_non_exhaustive()
    }
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl ConnectOptions {
    /// Guest, 10 s to connect, 30 s per request, frames up to 256 MiB,
    /// `IPROTO_ID` asked where the server answers it.
    pub fn new() -> Self {
        Self {
            credentials: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_frame: DEFAULT_MAX_FRAME,
            identify: true,
        }
    }

    /// Whether the handshake asks `IPROTO_ID` (protocol version and features)
    /// of servers that answer it (2.10+); on by default. Without it,
    /// [`ServerInfo::protocol`] is `None` and feature checks say no.
    pub fn identify(mut self, yes: bool) -> Self {
        self.identify = yes;
        self
    }

    /// Authenticates as `user` with chap-sha1.
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some((user.into(), password.into()));
        self
    }

    /// Limit on TCP connect + greeting + AUTH.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Default limit for each request.
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    /// Largest frame accepted from the server.
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// The user name, if any.
    pub fn user(&self) -> Option<&str> {
        self.credentials.as_ref().map(|(u, _)| u.as_str())
    }

    pub(crate) fn connect_limit(&self) -> Duration {
        self.connect_timeout
    }

    pub(crate) fn frame_limit(&self) -> usize {
        self.max_frame
    }
}

/// A successful response: its header and raw body.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// Header (type OK, the request's sync, schema version).
    pub header: Header,
    /// The raw body map.
    pub body: Bytes,
}

impl Response {
    /// The raw `DATA` value (an array for DML, SELECT, CALL and EVAL).
    pub fn data(&self) -> Result<&[u8]> {
        let mut r = Reader::new(&self.body);
        let e = ProtocolError::decode("response body");
        for _ in 0..r.read_map_len().map_err(e)? {
            let k = r.read_u64().map_err(e)?;
            let v = r.skip().map_err(e)?;
            if k == u64::from(key::DATA) {
                return Ok(v);
            }
        }
        Err(ProtocolError::Missing("DATA in response").into())
    }

    /// `DATA` decoded into a dynamic value.
    pub fn data_value(&self) -> Result<rmpv::Value> {
        let mut raw = self.data()?;
        rmpv::decode::read_value(&mut raw)
            .map_err(|_| Error::Protocol(ProtocolError::Missing("decodable DATA in response")))
    }
}

type Reply = oneshot::Sender<Result<Frame>>;

#[derive(Default)]
struct Pending {
    waiting: HashMap<u64, Reply>,
    dead: Option<Arc<Error>>,
}

struct Shared {
    pending: Mutex<Pending>,
    out: Mutex<Vec<u8>>,
    wake_writer: Notify,
    sync: AtomicU64,
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn out(&self) -> MutexGuard<'_, Vec<u8>> {
        self.out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn fail(&self, cause: Error) {
        let mut p = self.pending();
        let cause = Arc::new(cause);
        if p.dead.is_none() {
            tracing::debug!(error = %cause, "iproto connection lost");
            p.dead = Some(Arc::clone(&cause));
        }
        for (_, reply) in p.waiting.drain() {
            let _ = reply.send(Err(Error::ConnectionLost(Arc::clone(&cause))));
        }
    }
}

struct Inner {
    shared: Arc<Shared>,
    greeting: Greeting,
    info: ServerInfo,
    request_timeout: Duration,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

/// A pipelined connection. Cheap to clone: clones share the socket, which
/// closes when the last clone is dropped.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("greeting", &self.inner.greeting)
            .finish_non_exhaustive()
    }
}

/// What a handshake learned.
pub(crate) struct Handshake {
    pub(crate) stream: TcpStream,
    pub(crate) greeting: Greeting,
    pub(crate) info: ServerInfo,
    pub(crate) buf: BytesMut,
}

/// Opens a socket, reads the greeting, asks `IPROTO_ID` (2.10+, unless
/// turned off) and authenticates, within the connect timeout. Shared with
/// the replication client. Requests use syncs 0 (AUTH) and `u64::MAX` (ID),
/// which no later request reuses.
pub(crate) async fn handshake(addr: &str, opts: &ConnectOptions) -> Result<Handshake> {
    let limit = opts.connect_timeout;
    let work = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|source| Error::Connect {
                addr: addr.to_owned(),
                source,
            })?;
        stream.set_nodelay(true)?;
        let mut g = [0u8; GREETING_SIZE];
        stream
            .read_exact(&mut g)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => Error::Closed,
                _ => Error::Io(e),
            })?;
        let greeting = Greeting::parse(&g)?;
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let protocol = if opts.identify && answers_id(greeting.version()) {
            identify(&mut stream, &mut buf, opts.max_frame).await?
        } else {
            None
        };
        let info = ServerInfo::new(greeting.version(), greeting.instance_uuid, protocol);
        if let Some((user, password)) = &opts.credentials {
            let mut out = Vec::new();
            frame::encode_frame(&mut out, rt::AUTH, 0, |o| {
                encode_auth_body(o, user, password, &greeting.salt)
            });
            stream.write_all(&out).await?;
            let reply = read_frame(&mut stream, &mut buf, opts.max_frame).await?;
            if let Some(e) = reply.server_error() {
                return Err(Error::Server(e));
            }
        }
        Ok(Handshake {
            stream,
            greeting,
            info,
            buf,
        })
    };
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| Error::Timeout {
            what: "connect and authenticate",
            after: limit,
        })?
}

/// Sync of the handshake's `IPROTO_ID` request.
const ID_SYNC: u64 = u64::MAX;

/// Sends `IPROTO_ID` and reads the answer. A server that refuses it (an
/// unknown request type, a malformed-body complaint) simply has no protocol
/// info; a broken connection is an error.
async fn identify(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<Protocol>> {
    let mut out = Vec::new();
    frame::encode_frame(&mut out, rt::ID, ID_SYNC, Protocol::encode_request);
    stream.write_all(&out).await?;
    let reply = read_frame(stream, buf, max).await?;
    if reply.header.sync != ID_SYNC {
        return Err(ProtocolError::UnexpectedType {
            got: reply.header.request_type,
            during: "waiting for the IPROTO_ID answer (foreign sync)",
        }
        .into());
    }
    if let Some(e) = reply.server_error() {
        if e.code == errcode::ER_UNKNOWN_REQUEST_TYPE {
            tracing::debug!(error = %e, "server does not know IPROTO_ID; no protocol info");
        } else {
            tracing::warn!(error = %e, "IPROTO_ID refused; continuing without protocol info");
        }
        return Ok(None);
    }
    Ok(Some(Protocol::decode(&reply.body)?))
}

/// Makes room in `buf` for one socket read (64 KiB when less than 16 KiB
/// is left).
pub(crate) fn reserve_read_space(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < 16 * 1024 {
        buf.reserve(64 * 1024);
    }
}

/// Reads one frame from a socket that is not shared with a reader task.
pub(crate) async fn read_frame<R: AsyncReadExt + Unpin>(
    stream: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Frame> {
    loop {
        if let Some(f) = frame::decode_frame(buf, max)? {
            return Ok(f);
        }
        reserve_read_space(buf);
        if stream.read_buf(buf).await? == 0 {
            return Err(Error::Closed);
        }
    }
}

impl Connection {
    /// Connects to `addr` (`host:port`), reads the greeting and authenticates
    /// when credentials are set.
    pub async fn connect(addr: &str, opts: &ConnectOptions) -> Result<Self> {
        let Handshake {
            stream,
            greeting,
            info,
            buf,
        } = handshake(addr, opts).await?;
        let (rd, wr) = stream.into_split();
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            out: Mutex::new(Vec::with_capacity(64 * 1024)),
            wake_writer: Notify::new(),
            sync: AtomicU64::new(1),
        });
        let reader = tokio::spawn(read_loop(rd, buf, opts.max_frame, Arc::clone(&shared)));
        let writer = tokio::spawn(write_loop(wr, Arc::clone(&shared)));
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                greeting,
                info,
                request_timeout: opts.request_timeout,
                reader,
                writer,
            }),
        })
    }

    /// The server's greeting.
    pub fn greeting(&self) -> &Greeting {
        &self.inner.greeting
    }

    /// What the server is and speaks (version, `IPROTO_ID` features):
    /// branch on its capabilities, never on version strings.
    pub fn server(&self) -> &ServerInfo {
        &self.inner.info
    }

    /// Whether the connection has broken (every later request fails at once).
    pub fn is_closed(&self) -> bool {
        self.inner.shared.pending().dead.is_some()
    }

    /// Sends a request whose body `body` writes (nothing for no body) and
    /// waits for its response, within `timeout` or the connection's default.
    ///
    /// Server errors come back as [`Error::Server`]. A request that timed out
    /// may still have been executed by the server.
    pub async fn request_with(
        &self,
        request_type: u32,
        timeout: Option<Duration>,
        body: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Response> {
        let shared = &self.inner.shared;
        let sync = shared.sync.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut p = shared.pending();
            if let Some(dead) = &p.dead {
                return Err(Error::ConnectionLost(Arc::clone(dead)));
            }
            p.waiting.insert(sync, tx);
        }
        frame::encode_frame(&mut shared.out(), request_type, sync, body);
        shared.wake_writer.notify_one();
        let limit = timeout.unwrap_or(self.inner.request_timeout);
        let frame = match tokio::time::timeout(limit, rx).await {
            Ok(Ok(reply)) => reply?,
            Ok(Err(_)) => return Err(self.lost()),
            Err(_) => {
                shared.pending().waiting.remove(&sync);
                return Err(Error::Timeout {
                    what: "request",
                    after: limit,
                });
            }
        };
        if let Some(e) = frame.server_error() {
            return Err(Error::Server(e));
        }
        Ok(Response {
            header: frame.header,
            body: frame.body,
        })
    }

    fn lost(&self) -> Error {
        match &self.inner.shared.pending().dead {
            Some(d) => Error::ConnectionLost(Arc::clone(d)),
            None => Error::Closed,
        }
    }

    /// Sends a request with a body that is already MessagePack (a body map),
    /// verbatim: the replication path forwards WAL row bodies this way.
    pub async fn request_raw(&self, request_type: u32, body: &[u8]) -> Result<Response> {
        self.request_with(request_type, None, |o| o.extend_from_slice(body))
            .await
    }

    /// PING.
    pub async fn ping(&self) -> Result<()> {
        self.request_with(rt::PING, None, |_| {}).await.map(drop)
    }

    /// SELECT by `key` (an array; empty for all rows with `Iterator::All`/`Eq`).
    pub async fn select(
        &self,
        space_id: u32,
        key: &(impl ToMsgpack + ?Sized),
        opts: Select,
    ) -> Result<Response> {
        self.request_with(rt::SELECT, None, |o| {
            request::select(o, space_id, key, opts)
        })
        .await
    }

    /// INSERT.
    pub async fn insert(
        &self,
        space_id: u32,
        tuple: &(impl ToMsgpack + ?Sized),
    ) -> Result<Response> {
        self.request_with(rt::INSERT, None, |o| request::tuple(o, space_id, tuple))
            .await
    }

    /// REPLACE.
    pub async fn replace(
        &self,
        space_id: u32,
        tuple: &(impl ToMsgpack + ?Sized),
    ) -> Result<Response> {
        self.request_with(rt::REPLACE, None, |o| request::tuple(o, space_id, tuple))
            .await
    }

    /// UPDATE by key with `ops`; `index_base: Some(1)` for 1-based field numbers.
    pub async fn update(
        &self,
        space_id: u32,
        index_id: u32,
        key: &(impl ToMsgpack + ?Sized),
        ops: &(impl ToMsgpack + ?Sized),
        index_base: Option<u32>,
    ) -> Result<Response> {
        self.request_with(rt::UPDATE, None, |o| {
            request::update(o, space_id, index_id, key, ops, index_base)
        })
        .await
    }

    /// DELETE by key.
    pub async fn delete(
        &self,
        space_id: u32,
        index_id: u32,
        key: &(impl ToMsgpack + ?Sized),
    ) -> Result<Response> {
        self.request_with(rt::DELETE, None, |o| {
            request::delete(o, space_id, index_id, key)
        })
        .await
    }

    /// UPSERT.
    pub async fn upsert(
        &self,
        space_id: u32,
        tuple: &(impl ToMsgpack + ?Sized),
        ops: &(impl ToMsgpack + ?Sized),
        index_base: Option<u32>,
    ) -> Result<Response> {
        self.request_with(rt::UPSERT, None, |o| {
            request::upsert(o, space_id, tuple, ops, index_base)
        })
        .await
    }

    /// CALL a function; returns `DATA` (the array of returned values).
    pub async fn call(
        &self,
        function: &str,
        args: &(impl ToMsgpack + ?Sized),
    ) -> Result<rmpv::Value> {
        self.request_with(rt::CALL, None, |o| request::call(o, function, args))
            .await?
            .data_value()
    }

    /// EVAL a Lua expression; returns `DATA` (the array of returned values).
    pub async fn eval(&self, expr: &str, args: &(impl ToMsgpack + ?Sized)) -> Result<rmpv::Value> {
        self.request_with(rt::EVAL, None, |o| request::eval(o, expr, args))
            .await?
            .data_value()
    }
}

async fn read_loop(mut rd: OwnedReadHalf, mut buf: BytesMut, max: usize, shared: Arc<Shared>) {
    let cause = loop {
        let frame = match frame::decode_frame(&mut buf, max) {
            Ok(Some(f)) => f,
            Ok(None) => {
                if buf.capacity() - buf.len() < 16 * 1024 {
                    buf.reserve(64 * 1024);
                }
                match rd.read_buf(&mut buf).await {
                    Ok(0) => break Error::Closed,
                    Ok(_) => continue,
                    Err(e) => break Error::Io(e),
                }
            }
            Err(e) => break Error::Protocol(e),
        };
        let reply = shared.pending().waiting.remove(&frame.header.sync);
        if let Some(reply) = reply {
            let _ = reply.send(Ok(frame));
        }
    };
    shared.fail(cause);
}

async fn write_loop(mut wr: OwnedWriteHalf, shared: Arc<Shared>) {
    let mut spare = Vec::with_capacity(64 * 1024);
    loop {
        {
            let mut out = shared.out();
            if !out.is_empty() {
                std::mem::swap(&mut *out, &mut spare);
            }
        }
        if spare.is_empty() {
            shared.wake_writer.notified().await;
            continue;
        }
        if let Err(e) = wr.write_all(&spare).await {
            shared.fail(Error::Io(e));
            return;
        }
        spare.clear();
    }
}
