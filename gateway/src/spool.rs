//! Initial load: the source snapshot spooled to disk at source speed.
//!
//! Tarantool 2.6 keeps no xlogs for an anonymous replica between
//! FETCH_SNAPSHOT and SUBSCRIBE, so the snapshot is read as fast as the
//! source sends it into a spool file, and SUBSCRIBE follows at once on the same
//! connection; the destination then consumes the spool at its own pace.
//! Only replicated user spaces are spooled (never tcf's own spaces).

use std::{
    collections::BTreeSet,
    fs::File,
    io::{self, BufReader, Read, Seek, SeekFrom, Write},
    path::Path,
};

use bytes::Bytes;
use tcf_iproto::{FetchRequest, ReplicationClient, Vclock};
use tcf_proto::v1;
use uuid::Uuid;

use tcf_iproto::schema::{Catalog, INDEX_SPACE, SPACE_SPACE, decode};

use crate::bgfile::BgWriter;

/// A spooled snapshot.
#[derive(Debug)]
pub(crate) struct Spool {
    file: File,
    /// Rows spooled.
    pub(crate) rows: u64,
    /// Names of the spaces loaded.
    pub(crate) spaces: BTreeSet<String>,
    /// The snapshot's start vclock, without component 0 (the source
    /// instance's local rows, never replicated: a position that held it
    /// would never be advanced by the stream): the stream continues after
    /// it.
    pub(crate) start: Vclock,
}

/// Why spooling failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpoolError {
    #[error("reading the snapshot from the source: {0}")]
    Source(#[from] tcf_iproto::Error),
    #[error("writing the spool file in {dir}: {source}")]
    Io {
        dir: String,
        #[source]
        source: io::Error,
    },
    #[error("snapshot row for unknown space id {0}")]
    UnknownSpace(u32),
    #[error(transparent)]
    Catalog(#[from] tcf_iproto::schema::CatalogError),
}

/// Reads the whole snapshot into a spool file in `dir`; returns the spool,
/// the connection (ready for SUBSCRIBE) and the catalog as of the snapshot.
/// `subscriber` is the UUID SUBSCRIBE will use: 3.3+ register the WAL GC
/// consumer under it from the fetch on, so the xlogs after the read view
/// stay until the subscription starts.
///
/// A failure at any point voids the whole fetch: the spool file is
/// unlinked (a temporary file) and the caller starts over, since rows
/// received so far say nothing about the ones that did not arrive.
pub(crate) async fn fetch(
    client: ReplicationClient,
    dir: &Path,
    subscriber: Uuid,
) -> Result<(Spool, ReplicationClient, Catalog), SpoolError> {
    let req = FetchRequest {
        instance_uuid: Some(subscriber),
    };
    let mut snap = client.fetch_snapshot_with(&req).await?;
    if let Some(meta) = snap.meta() {
        tracing::debug!(?meta, "snapshot meta section");
    }
    let start = snap.start_vclock().without_local();
    let mut catalog = Catalog::default();
    let io = |source: io::Error| SpoolError::Io {
        dir: dir.display().to_string(),
        source,
    };
    let mut out = BgWriter::create_in(dir).map_err(io)?;
    let mut rows = 0u64;
    let mut spaces = BTreeSet::new();
    while let Some(row) = snap.next_row().await? {
        let f = row.fields().map_err(tcf_iproto::Error::from)?;
        let Some(tuple) = f.tuple else { continue };
        match f.space_id {
            SPACE_SPACE => {
                if let Some(t) = decode(&tuple) {
                    catalog.apply_space_tuple(&t)?;
                }
            }
            INDEX_SPACE => {
                if let Some(t) = decode(&tuple) {
                    catalog.apply_index_tuple(&t)?;
                }
            }
            id if id >= tcf_iproto::consts::USER_SPACE_MIN => {
                let meta = catalog.get(id).ok_or(SpoolError::UnknownSpace(id))?;
                if !meta.is_replicated() {
                    continue;
                }
                write_record(&mut out, &meta.name, &tuple).map_err(io)?;
                if !spaces.contains(&meta.name) {
                    spaces.insert(meta.name.clone());
                }
                rows += 1;
            }
            _ => {}
        }
    }
    // Replicated spaces that are empty are loaded (and truncated) too.
    spaces.extend(catalog.replicated().into_iter().map(|s| s.name.clone()));
    let file = out.finish().map_err(io)?;
    let client = snap.into_client()?;
    Ok((
        Spool {
            file,
            rows,
            spaces,
            start,
        },
        client,
        catalog,
    ))
}

fn write_record(out: &mut impl Write, space: &str, tuple: &[u8]) -> io::Result<()> {
    out.write_all(&(space.len() as u32).to_le_bytes())?;
    out.write_all(space.as_bytes())?;
    out.write_all(&(tuple.len() as u32).to_le_bytes())?;
    out.write_all(tuple)
}

impl Spool {
    /// Reads the spool back in chunks of about `max_bytes`.
    pub(crate) fn reader(self, max_bytes: usize) -> io::Result<SpoolReader> {
        let mut file = self.file;
        file.seek(SeekFrom::Start(0))?;
        Ok(SpoolReader {
            input: BufReader::with_capacity(1 << 20, file),
            max_bytes,
        })
    }
}

/// Iterates over the spooled rows in chunks.
#[derive(Debug)]
pub(crate) struct SpoolReader {
    input: BufReader<File>,
    max_bytes: usize,
}

impl SpoolReader {
    /// The next chunk, or `None` at the end.
    pub(crate) fn next_chunk(&mut self) -> io::Result<Option<Vec<v1::SnapshotRow>>> {
        let mut rows = Vec::new();
        let mut size = 0;
        while size < self.max_bytes {
            let mut len = [0u8; 4];
            match self.input.read_exact(&mut len) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e),
            }
            let mut name = vec![0u8; u32::from_le_bytes(len) as usize];
            self.input.read_exact(&mut name)?;
            self.input.read_exact(&mut len)?;
            let mut tuple = vec![0u8; u32::from_le_bytes(len) as usize];
            self.input.read_exact(&mut tuple)?;
            size += name.len() + tuple.len() + 16;
            let space = String::from_utf8(name).map_err(io::Error::other)?;
            rows.push(v1::SnapshotRow {
                space,
                tuple: Bytes::from(tuple),
            });
        }
        Ok((!rows.is_empty()).then_some(rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_in_chunks() {
        let mut file = tempfile::tempfile().unwrap();
        for i in 0..100u8 {
            write_record(&mut file, "test", &[0x91, i]).unwrap();
        }
        let spool = Spool {
            file,
            rows: 100,
            spaces: BTreeSet::new(),
            start: Vclock::new(),
        };
        let mut r = spool.reader(200).unwrap();
        let mut all = Vec::new();
        while let Some(chunk) = r.next_chunk().unwrap() {
            assert!(chunk.len() < 100);
            all.extend(chunk);
        }
        assert_eq!(all.len(), 100);
        assert_eq!(all[42].tuple, Bytes::from(vec![0x91, 42]));
    }
}
