//! Length-prefixed iproto frames: `MP_UINT length`, a header map and an
//! optional body map. Decoding is zero-copy (the body stays a slice of the
//! received bytes) and never panics: truncated input asks for more bytes,
//! oversized or malformed frames are [`ProtocolError`]s.

use bytes::{Buf, Bytes, BytesMut};

use crate::{
    consts::{key, request},
    error::{ProtocolError, ServerError, StackEntry},
    msgpack::{DecodeError, Reader, write},
};

/// Default upper bound on one frame (Tarantool's own limit is far larger, but
/// a replication row or response above this is treated as hostile).
pub const DEFAULT_MAX_FRAME: usize = 256 * 1024 * 1024;

/// The decoded header of a frame. Absent keys take Tarantool's defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Header {
    /// Request or row type; `0x8000 | code` for errors.
    pub request_type: u32,
    /// Request id (the SUBSCRIBE's on every replication row).
    pub sync: u64,
    /// Origin instance id of a row, or the responder's id.
    pub replica_id: u32,
    /// LSN of a row (0 on heartbeats and snapshot rows).
    pub lsn: u64,
    /// Commit time of a row, send time of a heartbeat.
    pub timestamp: Option<f64>,
    /// Schema version (responses).
    pub schema_version: Option<u64>,
    /// Replication group id.
    pub group_id: u32,
    /// `lsn - tsn` for rows of multi-row transactions; `None` for single-row ones.
    pub tsn_diff: Option<u64>,
    /// Flags (`consts::flag`).
    pub flags: u64,
    /// Stream id (2.10+).
    pub stream_id: Option<u64>,
}

impl Header {
    /// Whether this frame reports an error.
    pub fn is_error(&self) -> bool {
        self.request_type & request::TYPE_ERROR != 0
    }

    /// Decodes a header map from the front of `r`.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        let e = ProtocolError::decode("frame header");
        let mut h = Header::default();
        let n = r.read_map_len().map_err(e)?;
        for _ in 0..n {
            let k = r
                .read_u64()
                .map_err(ProtocolError::decode("frame header key"))?;
            let field = ProtocolError::decode("frame header value");
            match k {
                k if k == u64::from(key::REQUEST_TYPE) => {
                    h.request_type = r.read_u32().map_err(field)?
                }
                k if k == u64::from(key::SYNC) => h.sync = r.read_u64().map_err(field)?,
                k if k == u64::from(key::REPLICA_ID) => {
                    h.replica_id = r.read_u32().map_err(field)?
                }
                k if k == u64::from(key::LSN) => h.lsn = r.read_u64().map_err(field)?,
                k if k == u64::from(key::TIMESTAMP) => {
                    h.timestamp = Some(r.read_f64().map_err(field)?)
                }
                k if k == u64::from(key::SCHEMA_VERSION) => {
                    h.schema_version = Some(r.read_u64().map_err(field)?)
                }
                k if k == u64::from(key::GROUP_ID) => h.group_id = r.read_u32().map_err(field)?,
                k if k == u64::from(key::TSN) => h.tsn_diff = Some(r.read_u64().map_err(field)?),
                k if k == u64::from(key::FLAGS) => h.flags = r.read_u64().map_err(field)?,
                k if k == u64::from(key::STREAM_ID) => {
                    h.stream_id = Some(r.read_u64().map_err(field)?)
                }
                _ => {
                    r.skip().map_err(field)?;
                }
            }
        }
        Ok(h)
    }
}

/// One frame: its decoded header and its raw body (empty when absent).
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The header.
    pub header: Header,
    /// The body map's raw MessagePack bytes, as received.
    pub body: Bytes,
}

impl Frame {
    /// Decodes a frame from its payload (the bytes after the length prefix).
    pub fn from_payload(payload: Bytes) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(&payload);
        let header = Header::decode(&mut r)?;
        let start = r.position();
        if !r.is_empty() {
            r.skip().map_err(ProtocolError::decode("frame body"))?;
        }
        if !r.is_empty() {
            return Err(ProtocolError::TrailingBytes {
                extra: r.rest().len(),
            });
        }
        let end = r.position();
        // The payload itself becomes the body: no reference-count traffic
        // on the shared receive buffer for a slice taken and the whole dropped.
        let mut body = payload;
        body.truncate(end);
        body.advance(start.min(body.len()));
        Ok(Self { header, body })
    }

    /// The server error this frame carries, if it is an error response.
    pub fn server_error(&self) -> Option<ServerError> {
        self.header
            .is_error()
            .then(|| decode_error(self.header.request_type, &self.body))
    }
}

/// Takes one complete frame off the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed (nothing is consumed), and an
/// error for a length above `max` or a malformed frame (the frame's bytes are
/// consumed, but the stream should be considered broken).
pub fn decode_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Frame>, ProtocolError> {
    let (prefix, len) = match read_length(buf) {
        Ok(v) => v,
        Err(DecodeError::Truncated { .. }) => return Ok(None),
        Err(source) => {
            return Err(ProtocolError::Decode {
                what: "frame length",
                source,
            });
        }
    };
    if len > max as u64 {
        return Err(ProtocolError::FrameTooLarge { len, max });
    }
    let total = prefix + len as usize;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    buf.advance(prefix);
    let payload = buf.split_to(len as usize).freeze();
    Frame::from_payload(payload).map(Some)
}

fn read_length(buf: &[u8]) -> Result<(usize, u64), DecodeError> {
    let mut r = Reader::new(buf);
    let len = r.read_u64()?;
    Ok((r.position(), len))
}

/// Appends a complete frame: length prefix, header `{REQUEST_TYPE, SYNC}` plus
/// `extra_header` pairs (already encoded), and the body written by `body`.
///
/// The length is written as `0xce` + u32, as Tarantool itself does, so it can
/// be patched after the body is known.
pub fn encode_frame(
    out: &mut Vec<u8>,
    request_type: u32,
    sync: u64,
    body: impl FnOnce(&mut Vec<u8>),
) {
    let start = out.len();
    out.extend_from_slice(&[0xce, 0, 0, 0, 0]);
    write::map_len(out, 2);
    write::uint(out, u64::from(key::REQUEST_TYPE));
    write::uint(out, u64::from(request_type));
    write::uint(out, u64::from(key::SYNC));
    write::uint(out, sync);
    body(out);
    let len = (out.len() - start - 5) as u32;
    if let Some(slot) = out.get_mut(start + 1..start + 5) {
        slot.copy_from_slice(&len.to_be_bytes());
    }
}

/// Decodes an error body: the 2.4+ stack when present, else the plain message.
fn decode_error(request_type: u32, body: &[u8]) -> ServerError {
    let code = request_type & !request::TYPE_ERROR;
    let mut err = ServerError {
        code,
        message: String::new(),
        stack: Vec::new(),
    };
    let mut r = Reader::new(body);
    let Ok(n) = r.read_map_len() else { return err };
    for _ in 0..n {
        let Ok(k) = r.read_u64() else { break };
        if k == u64::from(key::ERROR_24) {
            match r.read_str() {
                Ok(s) => err.message = s.to_owned(),
                Err(_) => break,
            }
        } else if k == u64::from(key::ERROR) {
            match decode_stack(&mut r) {
                Ok(stack) => err.stack = stack,
                Err(_) => break,
            }
        } else if r.skip().is_err() {
            break;
        }
    }
    if let Some(top) = err.stack.first()
        && err.message.is_empty()
    {
        err.message.clone_from(&top.message);
    }
    err
}

fn decode_stack(r: &mut Reader<'_>) -> Result<Vec<StackEntry>, DecodeError> {
    let mut stack = Vec::new();
    for _ in 0..r.read_map_len()? {
        if r.read_u64()? != 0 {
            r.skip()?;
            continue;
        }
        for _ in 0..r.read_array_len()? {
            let mut e = StackEntry::default();
            for _ in 0..r.read_map_len()? {
                match r.read_u64()? {
                    0x00 => e.kind = r.read_str()?.to_owned(),
                    0x01 => e.file = r.read_str()?.to_owned(),
                    0x02 => e.line = r.read_u32()?,
                    0x03 => e.message = r.read_str()?.to_owned(),
                    0x05 => e.code = r.read_u32()?,
                    0x06 => {
                        for _ in 0..r.read_map_len()? {
                            let k = r.read_str_or_bin()?;
                            let k = String::from_utf8_lossy(k).into_owned();
                            let raw = r.skip()?;
                            if let Ok(v) = Reader::new(raw).read_str() {
                                e.fields.push((k, v.to_owned()));
                            }
                        }
                    }
                    _ => {
                        r.skip()?;
                    }
                }
            }
            stack.push(e);
        }
    }
    Ok(stack)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn frame_bytes(rt: u32, sync: u64, body: &rmpv::Value) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(&mut out, rt, sync, |o| write::value(o, body));
        out
    }

    proptest! {
        #[test]
        fn frames_round_trip_split_anywhere(
            rt in 0u32..0x9000, sync in any::<u64>(), key in any::<u64>(),
            payload in proptest::collection::vec(any::<u8>(), 0..2000),
            split in any::<prop::sample::Index>(),
        ) {
            let body = rmpv::Value::Map(vec![(key.into(), payload.into())]);
            let bytes = frame_bytes(rt, sync, &body);
            let cut = split.index(bytes.len() + 1);
            let mut buf = BytesMut::from(bytes.get(..cut).unwrap_or_default());
            let first = decode_frame(&mut buf, DEFAULT_MAX_FRAME).unwrap();
            if cut < bytes.len() {
                prop_assert!(first.is_none());
                buf.extend_from_slice(bytes.get(cut..).unwrap_or_default());
            }
            let frame = match first { Some(f) => f, None => decode_frame(&mut buf, DEFAULT_MAX_FRAME).unwrap().unwrap() };
            prop_assert_eq!(frame.header.request_type, rt);
            prop_assert_eq!(frame.header.sync, sync);
            let mut expect = Vec::new();
            write::value(&mut expect, &body);
            prop_assert_eq!(&frame.body[..], &expect[..]);
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = decode_frame(&mut buf, 1024) {}
        }
    }

    #[test]
    fn oversized_frame_is_an_error() {
        let mut buf = BytesMut::from(&[0xce, 0x7f, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            decode_frame(&mut buf, 1024),
            Err(ProtocolError::FrameTooLarge {
                len: 0x7fff_ffff,
                max: 1024
            })
        ));
    }

    #[test]
    fn trailing_bytes_inside_a_frame_are_an_error() {
        // length 4: header {} , body {}, then one stray byte.
        let mut buf = BytesMut::from(&[0x03, 0x80, 0x80, 0xc0][..]);
        assert!(matches!(
            decode_frame(&mut buf, 1024),
            Err(ProtocolError::TrailingBytes { extra: 1 })
        ));
    }

    #[test]
    fn error_stack_is_decoded() {
        let entry = rmpv::Value::Map(vec![
            (0.into(), "ClientError".into()),
            (1.into(), "box.cc".into()),
            (2.into(), 12.into()),
            (3.into(), "Space '999' does not exist".into()),
            (5.into(), 36.into()),
            (
                6.into(),
                rmpv::Value::Map(vec![
                    ("details".into(), "Replica is connected".into()),
                    ("line".into(), 7.into()),
                ]),
            ),
        ]);
        let body = rmpv::Value::Map(vec![
            (0x31.into(), "Space '999' does not exist".into()),
            (
                0x52.into(),
                rmpv::Value::Map(vec![(0.into(), rmpv::Value::Array(vec![entry]))]),
            ),
        ]);
        let mut buf = BytesMut::from(&frame_bytes(0x8000 | 36, 7, &body)[..]);
        let frame = decode_frame(&mut buf, DEFAULT_MAX_FRAME).unwrap().unwrap();
        let err = frame.server_error().unwrap();
        assert_eq!(err.code, 36);
        assert_eq!(err.message, "Space '999' does not exist");
        assert_eq!(err.stack.len(), 1);
        assert_eq!(err.stack[0].kind, "ClientError");
        assert_eq!(err.stack[0].code, 36);
        assert_eq!(
            err.stack[0].fields,
            [("details".to_owned(), "Replica is connected".to_owned())]
        );
        assert_eq!(
            err.message_with_details(),
            "Space '999' does not exist: Replica is connected"
        );
    }
}
