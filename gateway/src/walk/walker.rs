//! The walker of one stream: turns the destination's `WalkStep`s into
//! chunks bracketed by watermarks on the source master.
//!
//! Per step: find the replicaset's single writable instance, register the
//! chunk, write the low watermark (its commit is awaited: everything before
//! it in the WAL is committed and visible), select the chunk (a range of
//! the primary key, or a list of keys), record what it found, write the
//! high watermark (every row the select saw, committed or still in flight,
//! has a lower LSN). The reader puts the chunk into the stream when the
//! high watermark passes by. One chunk at a time; the next step comes from
//! the destination once it handled this one. Chunks are paced to the
//! step's `rows_per_second`, and one select holds the master's transaction
//! thread for a range of at most `limit` rows.

use std::time::Duration;

use bytes::Bytes;
use rmpv::Value;
use tcf_iproto::{
    ConnectOptions, Connection, Raw, Select, canon,
    msgpack::Reader,
    request::Iterator,
    schema::{Catalog, WATERMARK_SPACE},
};
use tcf_proto::v1;
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Chunks, Content, Pending};
use crate::{metrics as m, status::StatusCell};

/// A chunk's rows (repair) are cut to fit one gRPC message.
const MAX_CHUNK_BYTES: usize = 3 << 20;
/// Pacing when a step names no rate.
const DEFAULT_ROWS_PER_SECOND: u64 = 50_000;

/// Lua that creates the watermark space when it is missing (needs `create`
/// and `execute`; otherwise an administrator creates it, `docs/verify.md`).
const CREATE: &str = r"
local name = ...
if box.space[name] == nil then
    local s = box.schema.space.create(name, {if_not_exists = true, format = {
        {name = 'walker', type = 'string'}, {name = 'nonce', type = 'unsigned'},
        {name = 'kind', type = 'string'}, {name = 'walk', type = 'string'},
        {name = 'seq', type = 'unsigned'}}})
    s:create_index('pk', {parts = {{1, 'string'}}, if_not_exists = true})
end
return box.space[name].id
";

/// Why a chunk could not be made (retried after a pause).
#[derive(Debug, thiserror::Error)]
enum WalkError {
    #[error("{0}")]
    Master(String),
    #[error("source master {uri}: {source}")]
    Iproto {
        uri: String,
        #[source]
        source: tcf_iproto::Error,
    },
    #[error("source master {uri}: malformed select answer: {why}")]
    Answer { uri: String, why: String },
}

/// A connection to the source master with the ids it needs.
struct Master {
    uri: String,
    conn: Connection,
    catalog: Catalog,
    watermark: u32,
}

/// The walker of one replicaset stream.
pub(crate) struct Walker {
    pub(crate) alias: String,
    pub(crate) replicaset: String,
    pub(crate) instances: Vec<String>,
    pub(crate) connect: ConnectOptions,
    pub(crate) chunks: Chunks,
    pub(crate) steps: watch::Receiver<Option<v1::WalkStep>>,
    pub(crate) status: StatusCell,
}

impl Walker {
    /// Runs until `cancel` fires or the destination goes away.
    pub(crate) async fn run(mut self, cancel: CancellationToken) {
        let mut master: Option<Master> = None;
        let mut done: Option<(String, u64)> = None;
        let mut not_before = Instant::now();
        let chunks_made =
            metrics::counter!(m::WALK_CHUNKS, m::REPLICASET => self.replicaset.clone());
        let rows_read = metrics::counter!(m::WALK_ROWS, m::REPLICASET => self.replicaset.clone());
        loop {
            let step = {
                let wanted = self.steps.wait_for(|s| {
                    s.as_ref().is_some_and(|s| {
                        !s.walk.is_empty() && done.as_ref() != Some(&(s.walk.clone(), s.seq))
                    })
                });
                tokio::select! {
                    s = wanted => match s { Ok(s) => s.clone(), Err(_) => return },
                    () = cancel.cancelled() => return,
                }
            };
            let Some(step) = step else { continue };
            tokio::select! {
                () = tokio::time::sleep_until(not_before) => {}
                () = cancel.cancelled() => return,
            }
            let started = Instant::now();
            let result = tokio::select! {
                r = self.chunk(&mut master, &step) => r,
                () = cancel.cancelled() => return,
            };
            match result {
                Ok(rows) => {
                    done = Some((step.walk.clone(), step.seq));
                    chunks_made.increment(1);
                    rows_read.increment(rows as u64);
                    let rate = match step.rows_per_second {
                        0 => DEFAULT_ROWS_PER_SECOND,
                        r => r,
                    };
                    not_before = started + Duration::from_secs_f64(rows as f64 / rate as f64);
                    let mut st = self.status.lock();
                    st.walk = Some(step.walk.clone());
                    st.walk_error = None;
                }
                Err(e) => {
                    warn!(replicaset = %self.replicaset, walk = %step.walk, seq = step.seq, "verification chunk failed: {e}; retrying");
                    metrics::counter!(m::WALK_ERRORS, m::REPLICASET => self.replicaset.clone())
                        .increment(1);
                    self.status.lock().walk_error = Some(e.to_string());
                    master = None;
                    not_before = Instant::now() + Duration::from_secs(1);
                }
            }
        }
    }

    async fn master(&self) -> Result<Master, WalkError> {
        let asks = self
            .instances
            .iter()
            .map(|uri| async move { (uri.clone(), tcf_iproto::vote(uri, &self.connect).await) });
        let writable: Vec<String> = futures::future::join_all(asks)
            .await
            .into_iter()
            .filter_map(|(uri, b)| b.ok().filter(|b| !b.is_ro).map(|_| uri))
            .collect();
        let uri = match writable.as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(WalkError::Master(format!(
                    "no writable instance among {:?}",
                    self.instances
                )));
            }
            many => {
                return Err(WalkError::Master(format!(
                    "more than one writable instance ({many:?}): verification needs one writer"
                )));
            }
        };
        let err = |source| WalkError::Iproto {
            uri: uri.clone(),
            source,
        };
        let conn = Connection::connect(&uri, &self.connect)
            .await
            .map_err(err)?;
        let mut catalog = Catalog::load(&conn)
            .await
            .map_err(|e| WalkError::Master(format!("source master {uri}: {e}")))?;
        let watermark = match catalog.by_name(WATERMARK_SPACE) {
            Some(s) => s.id,
            None => {
                let v = conn
                    .eval(CREATE, &[Value::from(WATERMARK_SPACE)][..])
                    .await
                    .map_err(|e| {
                        WalkError::Master(format!(
                            "source master {uri}: space {WATERMARK_SPACE} is missing and cannot be created ({e}); create it and grant the replication user write on it (docs/verify.md)"
                        ))
                    })?;
                catalog = Catalog::load(&conn)
                    .await
                    .map_err(|e| WalkError::Master(format!("source master {uri}: {e}")))?;
                v.as_array()
                    .and_then(|a| a.first())
                    .and_then(Value::as_u64)
                    .and_then(|id| u32::try_from(id).ok())
                    .ok_or_else(|| {
                        WalkError::Master(format!(
                            "source master {uri}: no id for {WATERMARK_SPACE}"
                        ))
                    })?
            }
        };
        info!(replicaset = %self.replicaset, master = %uri, "verification walker connected");
        Ok(Master {
            uri,
            conn,
            catalog,
            watermark,
        })
    }

    async fn write_watermark(
        &self,
        m: &Master,
        nonce: u64,
        kind: &str,
        step: &v1::WalkStep,
    ) -> Result<(), WalkError> {
        let t = [
            Value::from(self.alias.as_str()),
            Value::from(nonce),
            Value::from(kind),
            Value::from(step.walk.as_str()),
            Value::from(step.seq),
        ];
        m.conn
            .replace(m.watermark, &t[..])
            .await
            .map(drop)
            .map_err(|source| WalkError::Iproto {
                uri: m.uri.clone(),
                source,
            })
    }

    /// Makes one chunk; returns the rows selected.
    async fn chunk(
        &self,
        master: &mut Option<Master>,
        step: &v1::WalkStep,
    ) -> Result<usize, WalkError> {
        if master.as_ref().is_none_or(|m| m.conn.is_closed()) {
            *master = Some(self.master().await?);
        }
        let Some(m) = master.as_ref() else {
            return Err(WalkError::Master("no connection".into()));
        };
        let space = m.catalog.by_name(&step.space).cloned();
        let nonce = u64::from_le_bytes(
            uuid::Uuid::new_v4().as_bytes()[..8]
                .try_into()
                .unwrap_or_default(),
        );
        let pk = space
            .as_ref()
            .map(|s| s.primary_key.iter().map(|(f, _)| *f).collect())
            .unwrap_or_default();
        self.chunks.expect(
            nonce,
            Pending {
                walk: step.walk.clone(),
                seq: step.seq,
                space: step.space.clone(),
                pk,
                content: None,
            },
        );
        let result = async {
            self.write_watermark(m, nonce, "low", step).await?;
            let (content, rows) = match &space {
                None => (
                    Content {
                        skipped: format!("space {} does not exist on the source", step.space),
                        ..Content::default()
                    },
                    0,
                ),
                Some(s) if s.primary_key_collated || s.primary_key.is_empty() => (
                    Content {
                        skipped: format!(
                            "space {}: its primary key has a collation or a JSON path (keys equal under the index may differ in bytes)",
                            step.space
                        ),
                        ..Content::default()
                    },
                    0,
                ),
                Some(s) => self.select(m, s.id, &s.primary_key, step).await?,
            };
            self.chunks.fill(nonce, content);
            self.write_watermark(m, nonce, "high", step).await?;
            Ok(rows)
        }
        .await;
        if result.is_err() {
            self.chunks.forget(nonce);
        }
        result
    }

    async fn select(
        &self,
        m: &Master,
        space_id: u32,
        pk: &[(u32, String)],
        step: &v1::WalkStep,
    ) -> Result<(Content, usize), WalkError> {
        let fields: Vec<u32> = pk.iter().map(|(f, _)| *f).collect();
        let err = |source| WalkError::Iproto {
            uri: m.uri.clone(),
            source,
        };
        let mut content = Content::default();
        let mut bytes = 0usize;
        match &step.select {
            Some(v1::walk_step::Select::Keys(keys)) => {
                let asks = keys.keys.iter().map(|k| async move {
                    let opts = Select {
                        iterator: Iterator::Eq,
                        limit: 1,
                        ..Select::default()
                    };
                    m.conn.select(space_id, &Raw(k), opts).await
                });
                let answers = futures::future::join_all(asks).await;
                for (k, a) in keys.keys.iter().zip(answers) {
                    let a = a.map_err(err)?;
                    let tuples = tuples(&a).map_err(|why| WalkError::Answer {
                        uri: m.uri.clone(),
                        why,
                    })?;
                    match tuples.first() {
                        Some(t) => content
                            .entries
                            .push(self.entry(m, t, &fields, step.repair)?),
                        None => content.entries.push(v1::ChunkEntry {
                            key: k.clone(),
                            absent: true,
                            ..v1::ChunkEntry::default()
                        }),
                    }
                }
                Ok((content, keys.keys.len()))
            }
            Some(v1::walk_step::Select::Range(r)) => {
                let limit = r.limit.max(1);
                let opts = Select {
                    iterator: if r.after.is_empty() {
                        Iterator::All
                    } else {
                        Iterator::Gt
                    },
                    limit,
                    ..Select::default()
                };
                let a = if r.after.is_empty() {
                    m.conn.select(space_id, &Vec::<Value>::new(), opts).await
                } else {
                    m.conn.select(space_id, &Raw(&r.after), opts).await
                }
                .map_err(err)?;
                let tuples = tuples(&a).map_err(|why| WalkError::Answer {
                    uri: m.uri.clone(),
                    why,
                })?;
                let n = tuples.len();
                content.end = n < limit as usize;
                for t in &tuples {
                    let e = self.entry(m, t, &fields, step.repair)?;
                    bytes += e.key.len() + e.tuple.len() + 16;
                    let key = e.key.clone();
                    content.entries.push(e);
                    content.last_key = key;
                    if bytes > MAX_CHUNK_BYTES {
                        content.end = false;
                        break;
                    }
                }
                if content.end {
                    content.last_key = Bytes::new();
                }
                Ok((content, n))
            }
            None => Err(WalkError::Master("a walk step without a select".into())),
        }
    }

    fn entry(
        &self,
        m: &Master,
        tuple: &Bytes,
        fields: &[u32],
        repair: bool,
    ) -> Result<v1::ChunkEntry, WalkError> {
        let bad = |e: canon::CanonError| WalkError::Answer {
            uri: m.uri.clone(),
            why: e.to_string(),
        };
        Ok(v1::ChunkEntry {
            key: Bytes::from(canon::key_of(tuple, fields).map_err(bad)?),
            hash: canon::hash(tuple).map_err(bad)?,
            tuple: if repair { tuple.clone() } else { Bytes::new() },
            absent: false,
        })
    }
}

/// The tuples of a SELECT answer, as slices of its body.
pub(crate) fn tuples(a: &tcf_iproto::Response) -> Result<Vec<Bytes>, String> {
    let data = a.data().map_err(|e| e.to_string())?;
    let mut r = Reader::new(data);
    let n = r.read_array_len().map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let t = r.skip().map_err(|e| e.to_string())?;
        out.push(a.body.slice_ref(t));
    }
    Ok(out)
}
