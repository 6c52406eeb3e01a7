//! Recorded iproto conversations: what a real server sent, kept as test
//! fixtures and played back to the real client code.
//!
//! CI runs Tarantool 2.6 only; the bytes 2.11 and 3.x send (greeting,
//! `IPROTO_ID`, ballots, snapshots with their meta section, synchronous
//! replication rows) are recorded once against real servers by
//! [`record`] (a one-connection proxy) and replayed by [`replay`] (a
//! one-connection server) in the decoding tests, so a regression on those
//! paths fails CI. `docs/compat.md` says how to refresh them.
//!
//! File format (`*.bin`): the magic `b"TCFREC1\n"`, then records
//! `[direction: b'C' | b'S'][length: u32 little-endian][bytes]` in arrival
//! order: `C` bytes went from the client to the server, `S` bytes back.
//!
//! Replay pairs each request the client sends with the server frames the
//! recording received after the same request (same type, in order, with the
//! same body keys and the same replicaset UUID); acks (type OK from the
//! client) are read and ignored. A response's `SYNC` is rewritten to the
//! live request's when the two differ (the rest of every frame is sent byte
//! for byte).

use bytes::BytesMut;
use thiserror::Error;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::{
    consts::{GREETING_SIZE, key, request as rt},
    frame::{self, Frame},
    msgpack::{Reader, write},
};

const MAGIC: &[u8] = b"TCFREC1\n";
/// Largest frame a recording or a replayed client may contain.
const MAX_FRAME: usize = 64 << 20;

/// Who sent a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to server.
    Client,
    /// Server to client.
    Server,
}

/// Bytes as they arrived from one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Their sender.
    pub from: Direction,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// A malformed recording, or a client that does not follow it.
#[derive(Debug, Error)]
pub enum RecordingError {
    /// Not a recording file, or cut short.
    #[error("malformed recording: {0}")]
    Format(&'static str),
    /// A recorded frame does not decode.
    #[error("recorded frame: {0}")]
    Frame(#[from] crate::ProtocolError),
    /// The live client sent another request than the recording's next one.
    #[error("the client sent request type {got}, the recording expects {expected:?}")]
    Diverged {
        /// Type the client sent.
        got: u32,
        /// Type recorded next, `None` when the recording has no more.
        expected: Option<u32>,
    },
    /// The live request's body differs from the recorded one in its keys or
    /// its replicaset UUID.
    #[error("request type {request_type}: body {live} where the recording has {recorded}")]
    BodyDiffers {
        /// The request type.
        request_type: u32,
        /// What was recorded (keys, replicaset UUID).
        recorded: String,
        /// What the client sent.
        live: String,
    },
    /// The socket failed.
    #[error("i/o")]
    Io(#[from] std::io::Error),
}

/// One request of the recording and the server frames that followed it.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The request's type.
    pub request_type: u32,
    /// The request's sync.
    pub sync: u64,
    /// The request's body, as recorded.
    pub body: Vec<u8>,
    /// Every server frame received after it (before the next request),
    /// each with its length prefix, as recorded.
    pub responses: Vec<Vec<u8>>,
}

/// A whole recorded connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conversation {
    /// Chunks in arrival order.
    pub chunks: Vec<Chunk>,
}

impl Conversation {
    /// The file form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for c in &self.chunks {
            out.push(match c.from {
                Direction::Client => b'C',
                Direction::Server => b'S',
            });
            out.extend_from_slice(&(c.bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(&c.bytes);
        }
        out
    }

    /// Reads the file form.
    pub fn decode(mut bytes: &[u8]) -> Result<Self, RecordingError> {
        bytes = bytes
            .strip_prefix(MAGIC)
            .ok_or(RecordingError::Format("no TCFREC1 magic"))?;
        let mut chunks = Vec::new();
        while let Some((&dir, rest)) = bytes.split_first() {
            let from = match dir {
                b'C' => Direction::Client,
                b'S' => Direction::Server,
                _ => return Err(RecordingError::Format("bad direction byte")),
            };
            let len = rest
                .get(..4)
                .and_then(|l| <[u8; 4]>::try_from(l).ok())
                .map(u32::from_le_bytes)
                .ok_or(RecordingError::Format("truncated length"))? as usize;
            let body = rest
                .get(4..4 + len)
                .ok_or(RecordingError::Format("truncated chunk"))?;
            chunks.push(Chunk {
                from,
                bytes: body.to_vec(),
            });
            bytes = rest.get(4 + len..).unwrap_or_default();
        }
        Ok(Self { chunks })
    }

    /// Every byte one side sent, in order.
    fn stream(&self, from: Direction) -> Vec<u8> {
        self.chunks
            .iter()
            .filter(|c| c.from == from)
            .flat_map(|c| c.bytes.iter().copied())
            .collect()
    }

    /// The server's 128-byte greeting.
    pub fn greeting(&self) -> Result<Vec<u8>, RecordingError> {
        self.stream(Direction::Server)
            .get(..GREETING_SIZE)
            .map(<[u8]>::to_vec)
            .ok_or(RecordingError::Format("no greeting"))
    }

    /// Every frame the server sent after its greeting, decoded.
    pub fn server_frames(&self) -> Result<Vec<Frame>, RecordingError> {
        let all = self.stream(Direction::Server);
        let mut buf = BytesMut::from(all.get(GREETING_SIZE..).unwrap_or_default());
        let mut out = Vec::new();
        while let Some(f) = frame::decode_frame(&mut buf, MAX_FRAME)? {
            out.push(f);
        }
        Ok(out)
    }

    /// The client's requests (acks left out), each with the server frames
    /// that arrived after it and before the next one.
    pub fn exchanges(&self) -> Result<Vec<Exchange>, RecordingError> {
        let mut client = Vec::new();
        let mut server = Vec::new();
        let mut greeting_left = GREETING_SIZE;
        let mut out: Vec<Exchange> = Vec::new();
        for c in &self.chunks {
            match c.from {
                Direction::Client => {
                    client.extend_from_slice(&c.bytes);
                    while let Some((_, f)) = take_frame(&mut client)? {
                        if f.header.request_type != rt::OK {
                            out.push(Exchange {
                                request_type: f.header.request_type,
                                sync: f.header.sync,
                                body: f.body.to_vec(),
                                responses: Vec::new(),
                            });
                        }
                    }
                }
                Direction::Server => {
                    let mut bytes = &c.bytes[..];
                    if greeting_left > 0 {
                        let n = greeting_left.min(bytes.len());
                        greeting_left -= n;
                        bytes = bytes.get(n..).unwrap_or_default();
                    }
                    server.extend_from_slice(bytes);
                    while let Some((raw, _)) = take_frame(&mut server)? {
                        let ex = out
                            .last_mut()
                            .ok_or(RecordingError::Format("a server frame before any request"))?;
                        ex.responses.push(raw);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The same conversation with the server's answers to the last request
    /// cut after `frames` frames: a connection that broke off.
    pub fn cut_after(&self, frames: usize) -> Result<Vec<Exchange>, RecordingError> {
        let mut ex = self.exchanges()?;
        if let Some(last) = ex.last_mut() {
            last.responses.truncate(frames);
        }
        Ok(ex)
    }
}

/// Takes one whole frame off `buf`: its raw bytes and the decoded frame.
fn take_frame(buf: &mut Vec<u8>) -> Result<Option<(Vec<u8>, Frame)>, RecordingError> {
    let mut r = Reader::new(buf);
    let Ok(len) = r.read_u64() else {
        return Ok(None);
    };
    let total = usize::try_from(len)
        .ok()
        .filter(|l| *l <= MAX_FRAME)
        .and_then(|l| l.checked_add(r.position()))
        .ok_or(RecordingError::Format("frame length"))?;
    if total > buf.len() {
        return Ok(None);
    }
    let raw: Vec<u8> = buf.drain(..total).collect();
    let mut b = BytesMut::from(&raw[..]);
    let f = frame::decode_frame(&mut b, MAX_FRAME)?.ok_or(RecordingError::Format("frame"))?;
    Ok(Some((raw, f)))
}

/// The top-level keys of a request body and its replicaset UUID, for
/// comparing a live request with the recorded one.
fn body_shape(body: &[u8]) -> String {
    let mut r = Reader::new(body);
    let mut keys = Vec::new();
    let mut rs = None;
    if let Ok(n) = r.read_map_len() {
        for _ in 0..n {
            let Ok(k) = r.read_u64() else { break };
            let Ok(v) = r.skip() else { break };
            if k == u64::from(key::CLUSTER_UUID) {
                rs = Reader::new(v).read_str().ok().map(str::to_owned);
            }
            keys.push(k);
        }
    }
    keys.sort_unstable();
    format!("keys {keys:?} replicaset {rs:?}")
}

/// Rewrites the header `SYNC` of one raw frame (length prefix included).
fn with_sync(raw: &[u8], sync: u64) -> Result<Vec<u8>, RecordingError> {
    let bad = |_| RecordingError::Format("frame header");
    let mut r = Reader::new(raw);
    r.read_u64().map_err(bad)?;
    let mut header = Vec::new();
    let n = r.read_map_len().map_err(bad)?;
    write::map_len(&mut header, n);
    for _ in 0..n {
        let k = r.read_u64().map_err(bad)?;
        let v = r.skip().map_err(bad)?;
        write::uint(&mut header, k);
        if k == u64::from(key::SYNC) {
            write::uint(&mut header, sync);
        } else {
            header.extend_from_slice(v);
        }
    }
    let body = r.rest();
    let len = (header.len() + body.len()) as u32;
    let mut out = vec![0xce];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(body);
    Ok(out)
}

/// Proxies the first connection accepted on `listener` to `upstream` and
/// records both directions until either side closes.
pub async fn record(listener: TcpListener, upstream: &str) -> Result<Conversation, RecordingError> {
    let (mut client, _) = listener.accept().await?;
    let mut server = TcpStream::connect(upstream).await?;
    let mut conv = Conversation::default();
    let (mut cb, mut sb) = ([0u8; 64 * 1024], [0u8; 64 * 1024]);
    loop {
        tokio::select! {
            n = client.read(&mut cb) => {
                let n = n?;
                if n == 0 {
                    break;
                }
                let bytes = cb.get(..n).unwrap_or_default();
                server.write_all(bytes).await?;
                conv.chunks.push(Chunk { from: Direction::Client, bytes: bytes.to_vec() });
            }
            n = server.read(&mut sb) => {
                let n = n?;
                if n == 0 {
                    break;
                }
                let bytes = sb.get(..n).unwrap_or_default();
                client.write_all(bytes).await?;
                conv.chunks.push(Chunk { from: Direction::Server, bytes: bytes.to_vec() });
            }
        }
    }
    Ok(conv)
}

/// Serves the first connection accepted on `listener` from `exchanges`
/// (see the module docs), then closes it when `hold` is false, or waits
/// for the client to close it.
pub async fn replay(
    listener: TcpListener,
    greeting: Vec<u8>,
    exchanges: Vec<Exchange>,
    hold: bool,
) -> Result<(), RecordingError> {
    let (mut sock, _) = listener.accept().await?;
    sock.write_all(&greeting).await?;
    let mut pending = exchanges.into_iter();
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut left = pending.len();
    loop {
        if left == 0 && !hold {
            return Ok(());
        }
        let f = loop {
            if let Some(f) = frame::decode_frame(&mut buf, MAX_FRAME)? {
                break Some(f);
            }
            let n = sock.read(&mut chunk).await?;
            if n == 0 {
                break None;
            }
            buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        };
        let Some(f) = f else { return Ok(()) };
        if f.header.request_type == rt::OK {
            continue;
        }
        let ex = pending.next();
        left = left.saturating_sub(1);
        let ex = match ex {
            Some(ex) if ex.request_type == f.header.request_type => ex,
            other => {
                return Err(RecordingError::Diverged {
                    got: f.header.request_type,
                    expected: other.map(|e| e.request_type),
                });
            }
        };
        let (recorded, live) = (body_shape(&ex.body), body_shape(&f.body));
        if recorded != live {
            return Err(RecordingError::BodyDiffers {
                request_type: ex.request_type,
                recorded,
                live,
            });
        }
        let mut out = Vec::new();
        for raw in &ex.responses {
            let mut b = BytesMut::from(&raw[..]);
            let sync = frame::decode_frame(&mut b, MAX_FRAME)?
                .map(|r| r.header.sync)
                .unwrap_or_default();
            if sync == ex.sync && sync != f.header.sync {
                out.extend_from_slice(&with_sync(raw, f.header.sync)?);
            } else {
                out.extend_from_slice(raw);
            }
        }
        sock.write_all(&out).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_bytes(rt: u32, sync: u64) -> Vec<u8> {
        let mut out = Vec::new();
        frame::encode_frame(&mut out, rt, sync, |o| {
            write::map_len(o, 1);
            write::uint(o, 0x30);
            write::array_len(o, 0);
        });
        out
    }

    #[test]
    fn files_round_trip_and_exchanges_pair_requests_with_answers() {
        let mut greeting = vec![b' '; 128];
        greeting[0] = b'T';
        let conv = Conversation {
            chunks: vec![
                Chunk {
                    from: Direction::Server,
                    bytes: greeting.clone(),
                },
                Chunk {
                    from: Direction::Client,
                    bytes: frame_bytes(rt::VOTE, 1),
                },
                Chunk {
                    from: Direction::Server,
                    bytes: frame_bytes(rt::OK, 1)[..3].to_vec(),
                },
                Chunk {
                    from: Direction::Client,
                    bytes: frame_bytes(rt::OK, 0),
                },
                Chunk {
                    from: Direction::Server,
                    bytes: frame_bytes(rt::OK, 1)[3..].to_vec(),
                },
            ],
        };
        let back = Conversation::decode(&conv.encode()).unwrap();
        assert_eq!(back, conv);
        assert_eq!(back.greeting().unwrap(), greeting);
        let ex = back.exchanges().unwrap();
        assert_eq!(ex.len(), 1, "acks are not requests");
        assert_eq!(ex[0].request_type, rt::VOTE);
        assert_eq!(ex[0].responses, [frame_bytes(rt::OK, 1)]);
        assert_eq!(back.server_frames().unwrap().len(), 1);
        assert!(Conversation::decode(b"nope").is_err());
        assert!(Conversation::decode(b"TCFREC1\nC\x05\x00").is_err());
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let mut with_magic = MAGIC.to_vec();
            with_magic.extend_from_slice(&bytes);
            for input in [&bytes[..], &with_magic[..]] {
                if let Ok(conv) = Conversation::decode(input) {
                    let _ = conv.greeting();
                    let _ = conv.server_frames();
                    let _ = conv.exchanges();
                }
            }
        }

        #[test]
        fn arbitrary_chunks_never_panic(
            chunks in proptest::collection::vec(
                (proptest::prelude::any::<bool>(), proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)),
                0..8,
            ),
        ) {
            let conv = Conversation {
                chunks: chunks
                    .into_iter()
                    .map(|(c, bytes)| Chunk {
                        from: if c { Direction::Client } else { Direction::Server },
                        bytes,
                    })
                    .collect(),
            };
            proptest::prop_assert_eq!(Conversation::decode(&conv.encode()).ok(), Some(conv.clone()));
            let _ = conv.server_frames();
            let _ = conv.exchanges();
            let _ = conv.cut_after(1);
        }
    }

    #[test]
    fn sync_is_rewritten_and_nothing_else() {
        let raw = frame_bytes(rt::OK, 7);
        let moved = with_sync(&raw, 1 << 40).unwrap();
        let mut b = BytesMut::from(&moved[..]);
        let f = frame::decode_frame(&mut b, MAX_FRAME).unwrap().unwrap();
        assert_eq!(f.header.sync, 1 << 40);
        let mut orig = BytesMut::from(&raw[..]);
        let o = frame::decode_frame(&mut orig, MAX_FRAME).unwrap().unwrap();
        assert_eq!(f.body, o.body);
    }
}
