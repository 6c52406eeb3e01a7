//! Reading one source replicaset as an anonymous replica.
//!
//! The reader resolves the start (a position, an initial load or the current
//! position), picks an instance (see `choose`), subscribes, turns rows into
//! transactions, classifies them, holds synchronous ones until CONFIRM, and
//! queues what ships. After any failure it picks an instance again (another
//! one first) and resumes from the processed watermark: vclocks are portable
//! between the instances of a replicaset, and the pending buffer is dropped.
//! Acks to the source carry only what the destination reported durably
//! committed (`committed`), never what was merely received.

use std::{path::PathBuf, time::Duration};

use tcf_iproto::{
    ConnectOptions, Connection, Error as IprotoError, Event, ReplicationClient, Row,
    SubscribeRequest, Subscription, Timing, Vclock, schema::Catalog,
};
use tcf_proto::v1::{self, ErrorKind};
use tokio::sync::watch;
use tracing::{error, info, warn};
use uuid::Uuid;

use crate::{
    choose::{Choice, ballots, choose},
    classify::{ClassifyError, RowOutcome, SkipKind, classify},
    config::OnWalGap,
    flow::Flow,
    metrics as m,
    queue::{Closed, Item, QueueTx},
    spool,
    status::{self, State, StatusCell},
    syncgate::SyncGate,
    walk::Chunks,
};

/// Where a stream starts.
#[derive(Debug, Clone)]
pub(crate) enum Start {
    /// After this position.
    After(Vclock),
    /// Initial load (truncating the target's spaces first when asked).
    InitialLoad { truncate: bool },
    /// After the source's current position.
    Current,
}

/// How to read one replicaset.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub(crate) cluster: String,
    pub(crate) replicaset: String,
    pub(crate) instances: Vec<String>,
    pub(crate) connect: ConnectOptions,
    pub(crate) timing: Timing,
    pub(crate) diverged_timeout: Duration,
    pub(crate) max_tx_memory: usize,
    pub(crate) spool_dir: PathBuf,
    pub(crate) on_wal_gap: OnWalGap,
    /// The stable instance UUID to fetch and subscribe with.
    pub(crate) subscriber: Uuid,
}

/// What the destination told about itself in `Open`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Expect {
    /// The source replicaset UUID stored with the position.
    pub(crate) source_uuid: Option<Uuid>,
    /// The target replicaset's UUID (must differ from the source's).
    pub(crate) target_uuid: Option<Uuid>,
    /// The destination handles verification (`WalkStep`, `Chunk`,
    /// `GapRestart`).
    pub(crate) verify: bool,
}

/// An error that ends the stream.
#[derive(Debug)]
pub(crate) struct Fatal {
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
}

impl Fatal {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// Why one connection to an instance ended.
enum Stop {
    /// Try again (another instance first), from the processed watermark.
    Retry(String),
    /// The position is ahead of every instance that still has the rows:
    /// retried for `diverged_timeout`, then the stream ends `diverged`.
    Ahead(String),
    /// The source has no rows for the position.
    Gap(String),
    /// End the stream.
    Fatal(Fatal),
    /// The destination is gone.
    Closed,
}

impl From<Closed> for Stop {
    fn from(_: Closed) -> Self {
        Stop::Closed
    }
}

/// The reader of one stream.
pub(crate) struct Reader {
    src: Source,
    out: QueueTx,
    committed: watch::Receiver<Vclock>,
    status: StatusCell,
    expect: Expect,
    /// The source replicaset UUID once seen.
    uuid: Option<Uuid>,
    started: bool,
    gate: SyncGate,
    catalog: Catalog,
    /// The registry shared with this stream's verification walker.
    chunks: Option<Chunks>,
}

impl Reader {
    pub(crate) fn new(
        src: Source,
        out: QueueTx,
        committed: watch::Receiver<Vclock>,
        status: StatusCell,
        expect: Expect,
        chunks: Option<Chunks>,
    ) -> Self {
        Self {
            chunks,
            src,
            out,
            committed,
            status,
            uuid: expect.source_uuid,
            expect,
            started: false,
            gate: SyncGate::new(Vclock::new()),
            catalog: Catalog::default(),
        }
    }

    /// Runs until the destination goes away or a fatal error; a fatal error
    /// is queued for the destination before returning it.
    pub(crate) async fn run(mut self, start: Start) -> Result<(), Fatal> {
        match self.run_inner(start).await {
            Ok(()) | Err(Stop::Closed) => Ok(()),
            Err(Stop::Fatal(f)) => {
                let state = match f.kind {
                    ErrorKind::WalGap => State::Gapped,
                    ErrorKind::Diverged => State::Diverged,
                    ErrorKind::Stopped => State::Stopped,
                    _ => State::Failed,
                };
                error!(replicaset = %self.src.replicaset, kind = ?f.kind, "{}", f.message);
                self.set_state(state, Some(f.message.clone()));
                metrics::counter!(m::ERRORS, m::REPLICASET => self.src.replicaset.clone(), m::KIND => kind_label(f.kind)).increment(1);
                let err = v1::StreamError {
                    kind: f.kind as i32,
                    message: f.message.clone(),
                };
                let _ = self.out.send(Item::Error(err)).await;
                Err(f)
            }
            Err(Stop::Retry(msg) | Stop::Ahead(msg) | Stop::Gap(msg)) => {
                Err(Fatal::new(ErrorKind::Internal, msg))
            }
        }
    }

    async fn run_inner(&mut self, start: Start) -> Result<(), Stop> {
        let mut position = match start {
            Start::After(v) => v.without_local(),
            Start::Current => self.resolve_current().await?,
            Start::InitialLoad { truncate } => return self.initial_load(truncate).await,
        };
        self.stream_from(&mut position, None).await
    }

    /// Streams after `position` forever, failing over between instances;
    /// `first` is a client already subscribed-ready (after an initial load).
    async fn stream_from(
        &mut self,
        position: &mut Vclock,
        mut first: Option<(String, ReplicationClient)>,
    ) -> Result<(), Stop> {
        let mut avoid: Option<String> = None;
        let mut backoff = Duration::from_millis(100);
        let mut ahead_since: Option<tokio::time::Instant> = None;
        // Exported at 0 from the first connection on, so that `rate()` and
        // alerts see the first reconnect.
        metrics::counter!(m::RECONNECTS, m::REPLICASET => self.src.replicaset.clone()).increment(0);
        loop {
            if self.out.is_closed() {
                return Err(Stop::Closed);
            }
            self.gate = SyncGate::new(position.clone());
            let result = match first.take() {
                Some((uri, client)) => self.subscribe_and_read(&uri, client, position).await,
                None => match self.pick(Some(position), avoid.as_deref()).await {
                    Ok(uri) => {
                        ahead_since = None;
                        match ReplicationClient::connect(&uri, &self.src.connect).await {
                            Ok(client) => self.subscribe_and_read(&uri, client, position).await,
                            Err(e) => Err((uri, Stop::Retry(format!("connect: {e}")))),
                        }
                    }
                    Err(Stop::Ahead(msg)) => {
                        let since = *ahead_since.get_or_insert_with(tokio::time::Instant::now);
                        if since.elapsed() >= self.src.diverged_timeout {
                            return Err(Stop::Fatal(Fatal::new(
                                ErrorKind::Diverged,
                                format!(
                                    "replicaset {}: position {position} is ahead of every source instance for {:?} ({msg}); rows may have been lost in a source master switch",
                                    self.src.replicaset, self.src.diverged_timeout
                                ),
                            )));
                        }
                        Err((String::new(), Stop::Retry(msg)))
                    }
                    Err(stop) => Err((String::new(), stop)),
                },
            };
            // Whatever ended this connection: resume from the watermark.
            *position = self.gate.processed().clone();
            self.gate.clear();
            let (uri, stop) = match result {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            match stop {
                Stop::Closed => return Err(Stop::Closed),
                Stop::Fatal(f) => return Err(Stop::Fatal(f)),
                Stop::Gap(msg) => match self.src.on_wal_gap {
                    OnWalGap::Stop => {
                        return Err(Stop::Fatal(Fatal::new(
                            ErrorKind::WalGap,
                            format!(
                                "replicaset {}: WAL gap: {msg}; no listed instance still has the rows after {position} (on_wal_gap: stop; re-sync with an initial load that truncates the target)",
                                self.src.replicaset
                            ),
                        )));
                    }
                    OnWalGap::Resync => {
                        error!(replicaset = %self.src.replicaset, %position, "WAL gap: {msg}; re-syncing by initial load (on_wal_gap: resync)");
                        metrics::counter!(m::ERRORS, m::REPLICASET => self.src.replicaset.clone(), m::KIND => "wal_gap").increment(1);
                        return self.initial_load(true).await;
                    }
                    OnWalGap::Repair if self.expect.verify => {
                        error!(replicaset = %self.src.replicaset, %position, "WAL gap: {msg}; continuing from the source's current position, the destination repairs (on_wal_gap: repair)");
                        metrics::counter!(m::ERRORS, m::REPLICASET => self.src.replicaset.clone(), m::KIND => "wal_gap").increment(1);
                        let current = self.resolve_current().await?.without_local();
                        let uri = self.load_catalog().await?;
                        self.send_started(&uri, &current).await?;
                        self.out
                            .send(Item::GapRestart {
                                after: current.clone(),
                                lost_from: position.clone(),
                                message: msg,
                            })
                            .await?;
                        *position = current;
                        backoff = Duration::from_millis(100);
                    }
                    OnWalGap::Repair => {
                        return Err(Stop::Fatal(Fatal::new(
                            ErrorKind::WalGap,
                            format!(
                                "replicaset {}: WAL gap: {msg}; no listed instance still has the rows after {position}, and the destination cannot repair (it does not list the feature \"verify\"; on_wal_gap: repair)",
                                self.src.replicaset
                            ),
                        )));
                    }
                },
                Stop::Retry(msg) | Stop::Ahead(msg) => {
                    warn!(replicaset = %self.src.replicaset, instance = %uri, %position, "source connection ended: {msg}; retrying");
                    self.status.lock().last_error = Some(msg.clone());
                    self.set_state(State::Connecting, None);
                    metrics::counter!(m::RECONNECTS, m::REPLICASET => self.src.replicaset.clone())
                        .increment(1);
                    if !uri.is_empty() {
                        avoid = Some(uri);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Chooses an instance for `position`.
    async fn pick(
        &mut self,
        position: Option<&Vclock>,
        avoid: Option<&str>,
    ) -> Result<String, Stop> {
        self.set_state(State::Connecting, None);
        let ballots = ballots(
            &self.src.instances,
            &self.src.connect,
            vote_limit(&self.src),
        )
        .await;
        match choose(&ballots, position, avoid) {
            Choice::Use { uri, ballot } => {
                if let Some(p) = position {
                    let headroom =
                        p.signature() as i64 - ballot.gc_vclock.without_local().signature() as i64;
                    self.status.lock().xlog_headroom_rows = Some(headroom);
                }
                Ok(uri)
            }
            Choice::Unreachable(msg) => Err(Stop::Retry(msg)),
            Choice::Gap { oldest_kept } => Err(Stop::Gap(format!(
                "the oldest rows kept start after {oldest_kept}"
            ))),
            Choice::Ahead { newest } => Err(Stop::Ahead(format!(
                "position ahead of the instances (newest source vclock {newest})"
            ))),
        }
    }

    /// Resolves the source's current position once.
    async fn resolve_current(&mut self) -> Result<Vclock, Stop> {
        loop {
            let ballots = ballots(
                &self.src.instances,
                &self.src.connect,
                vote_limit(&self.src),
            )
            .await;
            if ballots.iter().any(|(_, b)| b.is_ok()) {
                let v = crate::choose::newest(&ballots);
                info!(replicaset = %self.src.replicaset, position = %v, "resolved the source's current position");
                return Ok(v);
            }
            if self.out.is_closed() {
                return Err(Stop::Closed);
            }
            warn!(
                replicaset = %self.src.replicaset,
                "no source instance answers ({}); retrying",
                crate::choose::unreachable(&ballots)
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Reads the source's schema from the first instance that answers;
    /// returns that instance.
    async fn load_catalog(&mut self) -> Result<String, Stop> {
        let mut errors = Vec::new();
        for uri in &self.src.instances {
            match Connection::connect(uri, &self.src.connect).await {
                Ok(c) => match Catalog::load(&c).await {
                    Ok(cat) => {
                        self.catalog = cat;
                        return Ok(uri.clone());
                    }
                    Err(e) => errors.push(format!("{uri}: {e}")),
                },
                Err(e) => errors.push(format!("{uri}: {e}")),
            }
        }
        Err(Stop::Retry(format!(
            "no source instance gives its schema: {}",
            errors.join("; ")
        )))
    }

    /// FETCH_SNAPSHOT into a spool, queue it, then stream after its start.
    async fn initial_load(&mut self, truncate: bool) -> Result<(), Stop> {
        let mut avoid = None;
        loop {
            let uri = match self.pick(None, avoid.as_deref()).await {
                Ok(uri) => uri,
                Err(Stop::Retry(msg)) => {
                    warn!(replicaset = %self.src.replicaset, "initial load: {msg}; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                Err(other) => return Err(other),
            };
            self.set_state(State::Loading, None);
            match self.load_from(&uri, truncate).await {
                Ok((mut position, client)) => {
                    return Box::pin(self.stream_from(&mut position, Some((uri, client)))).await;
                }
                Err(Stop::Retry(msg)) => {
                    warn!(replicaset = %self.src.replicaset, instance = %uri, "initial load failed: {msg}; starting over");
                    self.status.lock().last_error = Some(msg);
                    avoid = Some(uri);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(other) => return Err(other),
            }
        }
    }

    async fn load_from(
        &mut self,
        uri: &str,
        truncate: bool,
    ) -> Result<(Vclock, ReplicationClient), Stop> {
        let retry =
            |what: &str, e: &dyn std::error::Error| Stop::Retry(format!("{what}: {}", causes(e)));
        let mut client = ReplicationClient::connect(uri, &self.src.connect)
            .await
            .map_err(|e| retry("connect", &e))?;
        let uuid = client
            .replicaset_uuid()
            .await
            .map_err(|e| retry("replicaset uuid", &e))?;
        self.check_uuid(uuid)?;
        self.status.lock().source_version = Some(client.server().version().to_string());
        info!(replicaset = %self.src.replicaset, instance = %uri, "initial load: fetching the snapshot");
        let (spool, client, catalog) =
            spool::fetch(client, &self.src.spool_dir, self.src.subscriber)
                .await
                .map_err(|e| retry("snapshot", &e))?;
        metrics::counter!(m::SNAPSHOT_ROWS, m::REPLICASET => self.src.replicaset.clone())
            .increment(spool.rows);
        info!(replicaset = %self.src.replicaset, rows = spool.rows, start = %spool.start, "initial load spooled");
        self.catalog = catalog;
        let start = spool.start.clone();
        self.send_started(uri, &start).await?;
        self.out
            .send(Item::Snapshot {
                spool,
                truncate,
                source_uuid: uuid.to_string(),
            })
            .await?;
        Ok((start, client))
    }

    fn check_uuid(&mut self, uuid: Uuid) -> Result<(), Stop> {
        if self.expect.target_uuid == Some(uuid) {
            return Err(Stop::Fatal(Fatal::new(
                ErrorKind::SourceMismatch,
                format!(
                    "replicaset {}: the target replicaset {uuid} is the source itself",
                    self.src.replicaset
                ),
            )));
        }
        match self.uuid {
            Some(known) if known != uuid => Err(Stop::Fatal(Fatal::new(
                ErrorKind::SourceMismatch,
                format!(
                    "replicaset {}: source replicaset uuid is {uuid}, expected {known} (a swapped label, a rebuilt source or an instance of another replicaset)",
                    self.src.replicaset
                ),
            ))),
            _ => {
                self.uuid = Some(uuid);
                self.status.lock().source_uuid = Some(uuid.to_string());
                Ok(())
            }
        }
    }

    async fn send_started(&mut self, uri: &str, after: &Vclock) -> Result<(), Stop> {
        if self.started {
            return Ok(());
        }
        self.started = true;
        let started = v1::Started {
            source_cluster: self.src.cluster.clone(),
            source_uuid: self.uuid.map(|u| u.to_string()).unwrap_or_default(),
            instance: uri.to_owned(),
            after: Some(after.into()),
            spaces: self
                .catalog
                .replicated()
                .into_iter()
                .map(space_info)
                .collect(),
        };
        self.out.send(Item::Started(started)).await?;
        Ok(())
    }

    async fn subscribe_and_read(
        &mut self,
        uri: &str,
        client: ReplicationClient,
        position: &Vclock,
    ) -> Result<(), (String, Stop)> {
        let fail = |stop: Stop| (uri.to_owned(), stop);
        let schema = Connection::connect(uri, &self.src.connect)
            .await
            .map_err(|e| fail(Stop::Retry(format!("connect for the schema: {e}"))))?;
        self.catalog = Catalog::load(&schema)
            .await
            .map_err(|e| fail(Stop::Retry(e.to_string())))?;
        let req = SubscribeRequest {
            replicaset_uuid: self.uuid,
            instance_uuid: self.src.subscriber,
            timing: self.src.timing,
            ..SubscribeRequest::new(position.clone())
        };
        self.status.lock().source_version = Some(client.server().version().to_string());
        let sub = match client.subscribe(&req, self.committed.clone()).await {
            Ok(sub) => sub,
            Err(e) => return Err(fail(self.stop_for(e))),
        };
        self.check_uuid(sub.replicaset_uuid()).map_err(fail)?;
        self.send_started(uri, position).await.map_err(fail)?;
        {
            let mut s = self.status.lock();
            s.instance = Some(uri.to_owned());
            s.processed_vclock = position.clone();
        }
        self.set_state(State::Streaming, None);
        info!(replicaset = %self.src.replicaset, instance = %uri, %position, "streaming");
        self.read(sub, schema, position.clone()).await.map_err(fail)
    }

    fn stop_for(&self, e: IprotoError) -> Stop {
        stop_for(&self.src.replicaset, e)
    }

    async fn read(
        &mut self,
        mut sub: Subscription,
        schema: Connection,
        from: Vclock,
    ) -> Result<(), Stop> {
        let mut flow = Flow::new(
            from,
            sub.server().sends_synchro_flags(),
            self.src.max_tx_memory,
            self.src.spool_dir.clone(),
        )
        .with_chunks(self.chunks.clone());
        let rs = self.src.replicaset.clone();
        // Handles registered once: a per-row macro call would hash labels.
        let mut read = ReadCounts::new(&rs);
        let txs_read = metrics::counter!(m::TRANSACTIONS_READ, m::REPLICASET => rs.clone());
        let sync_held = metrics::gauge!(m::SYNC_HELD, m::REPLICASET => rs.clone());
        let sync_held_bytes = metrics::gauge!(m::SYNC_HELD_BYTES, m::REPLICASET => rs.clone());
        loop {
            let row = match sub.next().await {
                Ok(Event::Row(row)) => row,
                Ok(Event::Heartbeat { timestamp }) => {
                    read.flush();
                    // The gate's watermark never covers an open or held
                    // transaction: forwarded whatever the stream is in.
                    let processed = self.gate.processed().clone();
                    self.status.lock().processed_vclock = processed.clone();
                    self.out.try_send(Item::Heartbeat {
                        processed,
                        source_time: timestamp.unwrap_or(0.0),
                    })?;
                    continue;
                }
                Err(e) => return Err(self.stop_for(e)),
            };
            read.row(row.body.len());
            let b = flow
                .track(&row)
                .map_err(|e| Stop::Retry(format!("broken row stream: {e}")))?;
            let outcome = match classify(&row, &mut self.catalog) {
                Ok(o) => o,
                Err(e) => self.classify_again(e, &row, &schema).await?,
            };
            if let RowOutcome::Skip(kind) = &outcome {
                if *kind == SkipKind::Ddl {
                    info!(replicaset = %rs, lsn = row.lsn(), "schema change not replicated: apply migrations to both clusters (the passive one first)");
                }
                metrics::counter!(m::ROWS_SKIPPED, m::REPLICASET => rs.clone(), m::KIND => kind.label()).increment(1);
            }
            let step = flow.apply(b, &row, outcome, &mut self.gate).map_err(|e| {
                Stop::Fatal(Fatal::new(
                    ErrorKind::Internal,
                    format!("spilling a large transaction: {e}"),
                ))
            })?;
            if step.rolled_back > 0 {
                warn!(replicaset = %rs, lsn = row.lsn(), dropped = step.rolled_back, "synchronous transaction rolled back on the source: dropped with those queued behind it");
                metrics::counter!(m::SYNC_ROLLED_BACK, m::REPLICASET => rs.clone())
                    .increment(step.rolled_back as u64);
            }
            if step.marked {
                metrics::counter!(m::TRANSACTIONS_MARKED, m::REPLICASET => rs.clone()).increment(1);
            }
            if step.finished || !step.release.is_empty() {
                read.flush();
            }
            for tx in step.release {
                self.out.send(Item::Tx(tx)).await?;
            }
            if !step.finished {
                continue;
            }
            txs_read.increment(1);
            // After queueing what it releases (the sender's idle heartbeats).
            self.out.processed(self.gate.processed());
            self.status.lock().processed_vclock = self.gate.processed().clone();
            sync_held.set(self.gate.held() as f64);
            sync_held_bytes.set(self.gate.held_bytes() as f64);
        }
    }

    /// Classifies `row` after `first` failed: reloads the catalog when the
    /// row names a space it does not know (or a changed one) and tries again.
    async fn classify_again(
        &mut self,
        first: ClassifyError,
        row: &Row,
        schema: &Connection,
    ) -> Result<RowOutcome, Stop> {
        match first {
            ClassifyError::Malformed(msg) => {
                return Err(Stop::Retry(format!("malformed row: {msg}")));
            }
            ClassifyError::UnknownSpace(_) | ClassifyError::Reload => {}
        }
        self.catalog = Catalog::load(schema)
            .await
            .map_err(|e| Stop::Retry(e.to_string()))?;
        match classify(row, &mut self.catalog) {
            Ok(o) => Ok(o),
            Err(ClassifyError::Reload) => Ok(RowOutcome::Skip(SkipKind::Ddl)),
            Err(ClassifyError::UnknownSpace(id)) => Err(Stop::Fatal(Fatal::new(
                ErrorKind::UnknownSpace,
                format!(
                    "replicaset {}: row lsn {} names space id {id}, which the source's schema does not have",
                    self.src.replicaset,
                    row.lsn()
                ),
            ))),
            Err(ClassifyError::Malformed(msg)) => Err(Stop::Retry(format!("malformed row: {msg}"))),
        }
    }

    fn set_state(&self, state: State, error: Option<String>) {
        status::set_state(&self.status, &self.src.replicaset, state, error);
    }
}

/// Rows and bytes read, counted locally and added to the metrics per
/// transaction (or every [`ReadCounts::FLUSH_ROWS`] rows of a long one):
/// an increment per row costs more than the rest of the row's bookkeeping.
struct ReadCounts {
    rows: u64,
    bytes: u64,
    rows_read: metrics::Counter,
    bytes_read: metrics::Counter,
}

impl ReadCounts {
    const FLUSH_ROWS: u64 = 1024;

    fn new(replicaset: &str) -> Self {
        Self {
            rows: 0,
            bytes: 0,
            rows_read: metrics::counter!(m::ROWS_READ, m::REPLICASET => replicaset.to_owned()),
            bytes_read: metrics::counter!(m::BYTES_READ, m::REPLICASET => replicaset.to_owned()),
        }
    }

    fn row(&mut self, body_len: usize) {
        self.rows += 1;
        self.bytes += body_len as u64;
        if self.rows >= Self::FLUSH_ROWS {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.rows > 0 {
            self.rows_read.increment(self.rows);
            self.bytes_read.increment(self.bytes);
            self.rows = 0;
            self.bytes = 0;
        }
    }
}

impl Drop for ReadCounts {
    fn drop(&mut self) {
        self.flush();
    }
}

/// An error with its whole cause chain ("reading the snapshot" alone hides
/// why).
fn causes(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        msg.push_str(": ");
        msg.push_str(&c.to_string());
        cause = c.source();
    }
    msg
}

/// What an error of the source connection means for the stream of
/// `replicaset`: decided on the error's kind, never its text.
fn stop_for(replicaset: &str, e: IprotoError) -> Stop {
    match e {
        IprotoError::XlogGap(e) => Stop::Gap(e.message),
        IprotoError::AheadOfUpstream { .. } => {
            Stop::Ahead(format!("position ahead of the instance: {e}"))
        }
        IprotoError::ReplicasetMismatch { expected, actual } => Stop::Fatal(Fatal::new(
            ErrorKind::SourceMismatch,
            format!(
                "replicaset {replicaset}: source replicaset uuid is {actual}, expected {expected}"
            ),
        )),
        other => Stop::Retry(causes(&other)),
    }
}

/// A source space as the handshake describes it.
fn space_info(s: &tcf_iproto::schema::SpaceMeta) -> v1::SpaceInfo {
    v1::SpaceInfo {
        name: s.name.clone(),
        engine: s.engine.clone(),
        is_sync: s.is_sync,
        primary_key: s
            .primary_key
            .iter()
            .map(|(field, ty)| v1::KeyPart {
                field: *field,
                r#type: ty.clone(),
            })
            .collect(),
    }
}

fn vote_limit(src: &Source) -> Duration {
    src.timing.heartbeat_interval.max(Duration::from_secs(2))
}

/// Metric label of an error kind.
pub(crate) fn kind_label(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::WalGap => "wal_gap",
        ErrorKind::Diverged => "diverged",
        ErrorKind::SourceMismatch => "source_mismatch",
        ErrorKind::UnknownSpace => "unknown_space",
        ErrorKind::Stopped => "stopped",
        ErrorKind::Unavailable => "unavailable",
        ErrorKind::Internal | ErrorKind::Unspecified => "internal",
    }
}

#[cfg(test)]
mod stop_tests {
    use super::*;

    #[test]
    fn the_stream_decides_on_error_kinds() {
        let ahead = IprotoError::AheadOfUpstream {
            requested: [(1, 5)].into_iter().collect(),
            upstream: [(1, 3)].into_iter().collect(),
            component: 1,
        };
        assert!(matches!(stop_for("rs1", ahead), Stop::Ahead(_)));
        let gap = IprotoError::XlogGap(tcf_iproto::ServerError {
            code: 0,
            message: "gone".into(),
            stack: Vec::new(),
        });
        assert!(matches!(stop_for("rs1", gap), Stop::Gap(m) if m == "gone"));
        let mismatch = IprotoError::ReplicasetMismatch {
            expected: Uuid::nil(),
            actual: Uuid::max(),
        };
        assert!(matches!(
            stop_for("rs1", mismatch),
            Stop::Fatal(Fatal {
                kind: ErrorKind::SourceMismatch,
                ..
            })
        ));
        assert!(matches!(
            stop_for("rs1", IprotoError::Closed),
            Stop::Retry(_)
        ));
    }
}
