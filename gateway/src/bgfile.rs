//! Spool and spill files written on a thread of their own, so the async
//! tasks that receive rows never wait on the disk: they hand over 1 MiB
//! buffers and block only when the disk falls [`QUEUED`] buffers behind the
//! source. Reading back is done by the caller on a blocking thread
//! (`tokio::task::spawn_blocking`, see `crate::pipeline`).

use std::{
    fs::File,
    io::{self, Write},
    path::{Path, PathBuf},
    sync::mpsc::{SyncSender, sync_channel},
    thread::JoinHandle,
};

/// Bytes gathered before a buffer is handed to the writing thread.
const CHUNK: usize = 1 << 20;
/// Buffers in flight to the writing thread.
const QUEUED: usize = 4;

/// An unnamed temporary file (gone when dropped, also after a crash),
/// written by a dedicated thread.
pub(crate) struct BgWriter {
    buf: Vec<u8>,
    tx: Option<SyncSender<Vec<u8>>>,
    thread: Option<JoinHandle<io::Result<File>>>,
    dir: PathBuf,
}

impl std::fmt::Debug for BgWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BgWriter")
            .field("dir", &self.dir)
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

impl BgWriter {
    /// Creates the file in `dir` and its writing thread. Errors name the
    /// directory.
    pub(crate) fn create_in(dir: &Path) -> io::Result<Self> {
        let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", dir.display()));
        let mut file = tempfile::tempfile_in(dir).map_err(named)?;
        let (tx, rx) = sync_channel::<Vec<u8>>(QUEUED);
        let thread = std::thread::Builder::new()
            .name("tcf-gateway-spool".into())
            .spawn(move || {
                for chunk in rx {
                    file.write_all(&chunk)?;
                }
                Ok(file)
            })
            .map_err(named)?;
        Ok(Self {
            buf: Vec::with_capacity(CHUNK),
            tx: Some(tx),
            thread: Some(thread),
            dir: dir.to_path_buf(),
        })
    }

    fn hand_over(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(chunk).is_ok());
        if sent {
            Ok(())
        } else {
            // The thread stopped: its error says why.
            Err(self.join().err().unwrap_or_else(|| {
                io::Error::other(format!("{}: the spool writer stopped", self.dir.display()))
            }))
        }
    }

    fn join(&mut self) -> io::Result<File> {
        self.tx = None;
        let dir = self.dir.display().to_string();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Ok(file))) => Ok(file),
            Some(Ok(Err(e))) => Err(io::Error::new(
                e.kind(),
                format!("writing a spool file in {dir}: {e}"),
            )),
            Some(Err(_)) => Err(io::Error::other(format!(
                "the spool writer in {dir} panicked"
            ))),
            None => Err(io::Error::other(format!(
                "the spool writer in {dir} already ended"
            ))),
        }
    }

    /// Writes what is buffered, waits for the thread and returns the file
    /// (positioned at its end).
    pub(crate) fn finish(mut self) -> io::Result<File> {
        self.hand_over()?;
        self.join()
    }
}

impl Write for BgWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK {
            self.hand_over()?;
        }
        Ok(bytes.len())
    }

    /// Hands what is buffered to the thread (it is on disk once
    /// [`BgWriter::finish`] returns).
    fn flush(&mut self) -> io::Result<()> {
        self.hand_over()
    }
}

impl Drop for BgWriter {
    fn drop(&mut self) {
        // Ends the thread: the unnamed file is closed and gone.
        self.tx = None;
    }
}

/// Runs `f` on `value` on a blocking thread (file reads stay off the async
/// threads) and gives `value` back with the result. A panic in `f` is
/// resumed here; if the runtime is shutting down (the blocking task was
/// cancelled), this never completes: the caller is being dropped too.
pub(crate) async fn off_thread<T, R>(
    mut value: T,
    f: impl FnOnce(&mut T) -> R + Send + 'static,
) -> (T, R)
where
    T: Send + 'static,
    R: Send + 'static,
{
    match tokio::task::spawn_blocking(move || {
        let r = f(&mut value);
        (value, r)
    })
    .await
    {
        Ok(done) => done,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek, SeekFrom};

    use super::*;

    #[test]
    fn what_is_written_is_in_the_file_in_order() {
        let dir = std::env::temp_dir();
        let mut w = BgWriter::create_in(&dir).unwrap();
        let mut expected = Vec::new();
        for i in 0..3000u32 {
            let piece = vec![(i % 251) as u8; 1000];
            w.write_all(&piece).unwrap();
            expected.extend(piece);
        }
        let mut file = w.finish().unwrap();
        file.seek(SeekFrom::Start(0)).unwrap();
        let mut back = Vec::new();
        file.read_to_end(&mut back).unwrap();
        assert_eq!(back, expected);
    }

    #[test]
    fn a_missing_directory_is_named() {
        let e = BgWriter::create_in(Path::new("/nonexistent/spool")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/spool"), "{e}");
    }
}
