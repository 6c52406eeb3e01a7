//! The apply loop of one replicaset.
//!
//! A session: find the target's single writable instance, read the stored
//! position there, connect to a gateway, open the replicaset's stream from
//! that position, apply what arrives and acknowledge what committed. Any
//! error ends the session; the next one re-reads the position from the
//! target, so nothing is applied twice or skipped (the apply function's
//! compare-and-set refuses a batch whose expected position is not stored).

use std::{sync::Arc, time::Duration};

use rmpv::Value;
use tcf_api::verify::{REPORT_KEYS_CAP, WalkMode, WalkReason, WalkRequest, WalkState};
use tcf_iproto::Vclock;
use tcf_proto::{FEATURE_VERIFY, PROTOCOL_VERSION, v1};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{
    apply::{MapError, Pending, engine_of, map_rows, map_snapshot},
    config::{Config, InitialPosition},
    failpoint,
    gateways::Pool,
    heartbeat::Memo,
    metrics as m,
    status::{State, StatusCell},
    target::{Engine, Meta, Position, ProgressRow, Target, TargetError, find_master},
    verify::{
        self, Mailboxes, Order, Reports,
        compare::{Outcome, compare, key_id},
        walk::{Advance, Walk, to_hex},
    },
};

/// What every replicaset loop shares.
pub(crate) struct Ctx {
    pub(crate) cfg: Arc<Config>,
    pub(crate) pool: Pool,
    /// This process's id in the progress rows (two writers are detected).
    pub(crate) writer: String,
    /// Each replicaset's last verification walk (`GET /api/v1/verify`).
    pub(crate) reports: Reports,
    /// Requests to start a walk, per replicaset.
    pub(crate) mailboxes: Mailboxes,
}

/// How a session ended.
#[derive(Debug)]
enum End {
    /// Try again (a new session re-reads the position).
    Retry(String),
    /// Stop this replicaset until an operator acts.
    Fatal(State, String),
}

impl From<TargetError> for End {
    fn from(e: TargetError) -> Self {
        match e {
            TargetError::Source(m) => End::Fatal(State::Failed, format!("source mismatch: {m}")),
            TargetError::NonEmpty(m) => End::Fatal(State::Failed, m),
            TargetError::Schema(m) => End::Fatal(State::Failed, format!("target schema: {m}")),
            other => End::Retry(other.to_string()),
        }
    }
}

fn kind_of(e: &End) -> &'static str {
    match e {
        End::Retry(_) => "retry",
        End::Fatal(State::Gapped, _) => "wal_gap",
        End::Fatal(State::Diverged, _) => "diverged",
        End::Fatal(..) => "fatal",
    }
}

/// Runs the replicaset's sessions until `cancel` fires or a fatal error.
pub(crate) async fn run(ctx: Arc<Ctx>, rs: String, st: StatusCell, cancel: CancellationToken) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(200);
    let mut backoff = FIRST_BACKOFF;
    // Exported at 0 from the start, so that `rate()` and alerts see the
    // first retry.
    metrics::counter!(m::ERRORS, m::REPLICASET => rs.clone(), m::KIND => "retry").increment(0);
    let Some(mailbox) = ctx.mailboxes.receiver(&rs) else {
        return;
    };
    let mut orders = tokio::select! {
        g = mailbox.lock() => g,
        () = cancel.cancelled() => return,
    };
    loop {
        let started = std::time::Instant::now();
        let end = tokio::select! {
            e = session(&ctx, &rs, &st, &mut orders) => e,
            () = cancel.cancelled() => break,
        };
        // A session that ran a while was healthy: retry fast again.
        if started.elapsed() > Duration::from_secs(10) {
            backoff = FIRST_BACKOFF;
        }
        metrics::counter!(m::ERRORS, m::REPLICASET => rs.clone(), m::KIND => kind_of(&end))
            .increment(1);
        match end {
            End::Fatal(state, msg) => {
                error!(replicaset = %rs, "replicaset stopped: {msg}");
                set_state(&st, &rs, state, Some(msg));
                return;
            }
            End::Retry(msg) => {
                warn!(replicaset = %rs, "session ended: {msg}; retrying in {backoff:?}");
                set_state(&st, &rs, State::Connecting, Some(msg));
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = cancel.cancelled() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    set_state(&st, &rs, State::Stopped, None);
}

fn set_state(st: &StatusCell, rs: &str, state: State, error: Option<String>) {
    tcf_common::status::set_state(st, m::STATE, rs, state, error);
}

async fn session(ctx: &Ctx, rs: &str, st: &StatusCell, orders: &mut mpsc::Receiver<Order>) -> End {
    match Session::open(ctx, rs, st).await {
        Ok((mut s, rx)) => s.run(rx, orders).await,
        Err(e) => e,
    }
}

struct Session<'a> {
    ctx: &'a Ctx,
    rs: &'a str,
    st: &'a StatusCell,
    target: Target,
    source_cluster: String,
    source_uuid: String,
    pos: Position,
    acks: mpsc::Sender<v1::DestinationMessage>,
    pending: Pending,
    partial: Option<v1::Transaction>,
    start_current: bool,
    loading: bool,
    gateway: String,
    /// The gateway handles verification (Describe lists "verify").
    gw_verify: bool,
    /// The replicated spaces, from `Started`.
    spaces: Option<Vec<String>>,
    /// The replicaset's walk, as stored on the target.
    walk: Option<Walk>,
    /// What the last gateway heartbeat said (lag, a deferred advance).
    heard: Memo,
}

type Inbound = mpsc::Receiver<Result<v1::GatewayMessage, tonic::Status>>;

impl<'a> Session<'a> {
    async fn open(ctx: &'a Ctx, rs: &'a str, st: &'a StatusCell) -> Result<(Self, Inbound), End> {
        let cfg = &ctx.cfg;
        let opts = cfg.connect_options();
        let instances = cfg.replicasets.get(rs).cloned().unwrap_or_default();
        let master = find_master(&instances, &opts).await?;
        let target = Target::connect(&master, &opts).await?;
        st.lock().target_instance = Some(master.clone());
        let (mut gw, skipped) = ctx
            .pool
            .connect()
            .await
            .map_err(|e| End::Retry(format!("no gateway: {e}")))?;
        if !skipped.is_empty() {
            st.lock().last_error = Some(format!("gateway skipped: {}", skipped.join("; ")));
        }
        let source_cluster = gw.describe.source_cluster.clone();
        if source_cluster == cfg.cluster {
            return Err(End::Fatal(
                State::Failed,
                format!(
                    "gateway {} reads cluster {source_cluster}: the target itself",
                    gw.address
                ),
            ));
        }
        if !gw.describe.replicasets.iter().any(|r| r == rs) {
            return Err(End::Fatal(
                State::Failed,
                format!("gateway {} does not serve replicaset '{rs}'", gw.address),
            ));
        }
        let pos = target.position(&source_cluster, rs).await?;
        let gw_verify = gw.describe.features.iter().any(|f| f == FEATURE_VERIFY);
        let walk = match verify::from_rows(
            &target.verify_load(&source_cluster, rs).await?,
            &source_cluster,
        ) {
            Some((walk, report)) => {
                st.lock().walk = Some(verify::summary(&report));
                ctx.reports.set(rs, Some(report));
                Some(walk)
            }
            None => {
                ctx.reports.set(rs, None);
                None
            }
        };
        let others = pos.other_writers(&ctx.writer);
        let start = if pos.loading() {
            info!(replicaset = %rs, "an initial load was interrupted: starting it over");
            v1::open::Start::InitialLoad(v1::InitialLoad { truncate: true })
        } else if pos.exists() {
            v1::open::Start::After((&pos.current()).into())
        } else {
            match cfg.initial_position {
                InitialPosition::Snapshot => v1::open::Start::InitialLoad(v1::InitialLoad {
                    truncate: cfg.truncate_on_load,
                }),
                InitialPosition::Current => v1::open::Start::Current(v1::CurrentPosition {}),
            }
        };
        let ti = target.instance();
        info!(replicaset = %rs, target = %master, target_replicaset = %ti.replicaset_uuid, target_replicaset_name = ?ti.replicaset_name, election_term = ?ti.election_term, gateway = %gw.address, position = %pos.current(), previous_writers = ?others, "session starting");
        let source_uuid = pos.source_uuid().unwrap_or_default().to_owned();
        let start_current = matches!(start, v1::open::Start::Current(_));
        let open = v1::Open {
            replicaset: rs.to_owned(),
            destination: cfg.alias.clone(),
            target_cluster: cfg.cluster.clone(),
            target_uuid: target.uuid().to_string(),
            source_uuid: source_uuid.clone(),
            start: Some(start),
            protocol_version: PROTOCOL_VERSION,
            features: vec![FEATURE_VERIFY.to_owned()],
        };
        let (acks, out_rx) = mpsc::channel(64);
        let first = v1::DestinationMessage {
            kind: Some(v1::destination_message::Kind::Open(open)),
        };
        let _ = acks.send(first).await;
        let address = gw.address.clone();
        let mut inbound = match gw.client.stream(ReceiverStream::new(out_rx)).await {
            Ok(r) => r.into_inner(),
            Err(s) => {
                ctx.pool.failed(&address);
                let msg = format!("gateway {address} refused the stream: {}", s.message());
                return Err(match s.code() {
                    // The gateway will refuse again: an operator must act.
                    tonic::Code::FailedPrecondition
                    | tonic::Code::PermissionDenied
                    | tonic::Code::Unauthenticated
                    | tonic::Code::InvalidArgument
                    | tonic::Code::NotFound => End::Fatal(State::Failed, msg),
                    _ => End::Retry(msg),
                });
            }
        };
        let (tx, rx) = mpsc::channel(32);
        tokio::spawn(async move {
            loop {
                let msg = inbound.message().await;
                let stop = !matches!(msg, Ok(Some(_)));
                let item = match msg {
                    Ok(Some(m)) => Ok(m),
                    Ok(None) => Err(tonic::Status::unavailable("the gateway ended the stream")),
                    Err(s) => Err(s),
                };
                if tx.send(item).await.is_err() || stop {
                    break;
                }
            }
        });
        {
            let mut s = st.lock();
            s.gateway = Some(address.clone());
            s.applied_vclock = pos.current();
        }
        Ok((
            Self {
                ctx,
                rs,
                st,
                target,
                source_cluster,
                source_uuid,
                pos,
                acks,
                pending: Pending::default(),
                partial: None,
                start_current,
                loading: false,
                gateway: address,
                gw_verify,
                spaces: None,
                walk,
                heard: Memo::default(),
            },
            rx,
        ))
    }

    async fn run(&mut self, mut rx: Inbound, orders: &mut mpsc::Receiver<Order>) -> End {
        loop {
            let next = if self.pending.is_empty() {
                tokio::select! {
                    m = rx.recv() => m,
                    Some(o) = orders.recv() => {
                        let r = self.start_walk(&o).await;
                        let _ = o.reply.send(r);
                        continue;
                    }
                }
            } else {
                match rx.try_recv() {
                    Ok(m) => Some(m),
                    Err(mpsc::error::TryRecvError::Empty) => {
                        if let Err(e) = self.flush().await {
                            return e;
                        }
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                }
            };
            let msg = match next {
                Some(Ok(msg)) => msg,
                Some(Err(status)) => {
                    self.ctx.pool.failed(&self.gateway);
                    // What arrived before the stream broke is applied first;
                    // a failure of that apply (fatal or not) is the outcome.
                    if let Err(e) = self.flush().await {
                        return e;
                    }
                    return End::Retry(format!("gateway {}: {}", self.gateway, status.message()));
                }
                None => return End::Retry("the gateway stream ended".into()),
            };
            if let Err(e) = self.handle(msg).await {
                return e;
            }
        }
    }

    async fn handle(&mut self, msg: v1::GatewayMessage) -> Result<(), End> {
        use v1::gateway_message::Kind;
        match msg.kind {
            Some(Kind::Started(s)) => self.started(s).await,
            Some(Kind::Batch(b)) => {
                for piece in b.transactions {
                    self.piece(piece).await?;
                }
                Ok(())
            }
            Some(Kind::Heartbeat(hb)) => self.heartbeat(hb).await,
            Some(Kind::SnapshotBegin(b)) => self.snapshot_begin(b).await,
            Some(Kind::SnapshotRows(r)) => self.snapshot_rows(r).await,
            Some(Kind::SnapshotEnd(e)) => self.snapshot_end(e).await,
            Some(Kind::Error(e)) => Err(gateway_error(e)),
            Some(Kind::Chunk(c)) => self.chunk(c).await,
            Some(Kind::GapRestart(g)) => self.gap(g).await,
            None => Ok(()),
        }
    }

    async fn started(&mut self, s: v1::Started) -> Result<(), End> {
        if !self.source_uuid.is_empty() && self.source_uuid != s.source_uuid {
            return Err(End::Fatal(
                State::Failed,
                format!(
                    "source replicaset uuid {} differs from the stored {}",
                    s.source_uuid, self.source_uuid
                ),
            ));
        }
        self.source_uuid = s.source_uuid.clone();
        self.st.lock().source_uuid = Some(s.source_uuid.clone());
        self.check_spaces(&s.spaces).await?;
        self.spaces = Some(s.spaces.iter().map(|x| x.name.clone()).collect());
        self.send_step().await;
        if self.start_current {
            // Resolved once by the gateway: persisted at once.
            let after = Vclock::from(s.after.unwrap_or_default());
            self.set_position(&after).await?;
            self.ack(&after).await;
            info!(replicaset = %self.rs, position = %after, "initial position: the source's current position");
        }
        set_state(self.st, self.rs, State::Streaming, None);
        Ok(())
    }

    async fn check_spaces(&mut self, spaces: &[v1::SpaceInfo]) -> Result<(), End> {
        if spaces
            .iter()
            .any(|s| self.target.catalog().by_name(&s.name).is_none())
        {
            self.target.reload_catalog().await?;
        }
        for s in spaces {
            let Some(t) = self.target.catalog().by_name(&s.name) else {
                return Err(End::Fatal(
                    State::Failed,
                    format!("replicated space '{}' is missing on the target", s.name),
                ));
            };
            let source_pk: Vec<(u32, String)> = s
                .primary_key
                .iter()
                .map(|p| (p.field, p.r#type.clone()))
                .collect();
            let mut problems = Vec::new();
            if t.engine != s.engine {
                problems.push(format!(
                    "engine {} on the source, {} on the target",
                    s.engine, t.engine
                ));
            }
            if t.primary_key != source_pk {
                problems.push(format!(
                    "primary key {source_pk:?} on the source, {:?} on the target",
                    t.primary_key
                ));
            }
            if t.is_sync != s.is_sync {
                problems.push(format!(
                    "is_sync {} on the source, {} on the target",
                    s.is_sync, t.is_sync
                ));
            }
            if !problems.is_empty() {
                return Err(End::Fatal(
                    State::Failed,
                    format!("space '{}' differs: {}", s.name, problems.join("; ")),
                ));
            }
        }
        self.require_claimed_queue(spaces.iter().filter(|s| s.is_sync).map(|s| s.name.as_str()))
    }

    /// Since Tarantool 2.10 a transaction on an `is_sync` space fails
    /// (`ER_SYNC_QUEUE_UNCLAIMED`) until some instance of the replicaset
    /// claimed the synchronous queue (`box.ctl.promote()`, or an election
    /// win). tcf never claims it (that is the replicaset's topology): the
    /// session ends with a retry naming what to do, and resumes once it is.
    fn require_claimed_queue<'s>(&self, sync: impl Iterator<Item = &'s str>) -> Result<(), End> {
        let sync: Vec<&str> = sync.collect();
        if sync.is_empty() || self.target.instance().queue_owner != Some(0) {
            return Ok(());
        }
        Err(End::Retry(format!(
            "the target replicaset {} has synchronous spaces {sync:?} but nobody claimed its synchronous queue (box.info.synchro.queue.owner is 0): run box.ctl.promote() on its master, or enable elections",
            self.target.uuid()
        )))
    }

    fn meta<'m>(
        &'m self,
        engine: Engine,
        expected: &'m Vclock,
        new: &'m Vclock,
        loading: bool,
    ) -> Meta<'m> {
        Meta {
            cluster: &self.source_cluster,
            replicaset: self.rs,
            engine,
            expected,
            new,
            source_uuid: &self.source_uuid,
            loading,
            destination: &self.ctx.cfg.alias,
            writer: &self.ctx.writer,
        }
    }

    fn row(&self, vclock: &Vclock, loading: bool) -> ProgressRow {
        ProgressRow {
            vclock: vclock.clone(),
            source_uuid: self.source_uuid.clone(),
            state: tcf_api::progress::ProgressState::of_loading(loading),
            writer: self.ctx.writer.clone(),
        }
    }

    async fn piece(&mut self, piece: v1::Transaction) -> Result<(), End> {
        let tx = match self.partial.take() {
            Some(mut whole) => {
                if (whole.origin, whole.tsn) != (piece.origin, piece.tsn) {
                    return Err(End::Retry(
                        "a partial transaction was interrupted by another".into(),
                    ));
                }
                whole.rows.extend(piece.rows);
                whole.partial = piece.partial;
                whole.vclock = piece.vclock;
                whole
            }
            None => piece,
        };
        if tx.partial {
            self.partial = Some(tx);
            return Ok(());
        }
        let vclock = Vclock::from(tx.vclock.clone().unwrap_or_default());
        let current = self.applied_or_pending();
        if vclock.le(&current) {
            warn!(replicaset = %self.rs, %vclock, %current, "transaction at or below the position: not applied again");
            metrics::counter!(m::DUPLICATES_SKIPPED, m::REPLICASET => self.rs.to_owned())
                .increment(1);
            return Ok(());
        }
        let (engine, rows, bytes) = match map_rows(tx.rows, self.target.catalog()) {
            Ok(r) => r,
            Err(MapError::Missing(e)) => {
                self.target.reload_catalog().await?;
                return Err(End::Fatal(
                    State::Failed,
                    format!(
                        "{e} (replicaset {}, transaction lsn {}): nothing of the batch was applied",
                        self.rs, tx.tsn
                    ),
                ));
            }
            Err(e @ (MapError::CrossEngine(_) | MapError::BadRow(_))) => {
                return Err(End::Fatal(State::Failed, e.to_string()));
            }
        };
        let limits = self.ctx.cfg.batching;
        if self
            .pending
            .must_flush_before(engine, rows.len(), bytes, limits)
        {
            self.flush().await?;
        }
        self.pending.push(engine, rows, bytes, Some(vclock));
        if self.pending.full(limits) {
            self.flush().await?;
        }
        Ok(())
    }

    /// The position including what is pending.
    fn applied_or_pending(&self) -> Vclock {
        let mut v = self.pos.current();
        if let Some(p) = self.pending.vclock() {
            v.merge(p);
        }
        v
    }

    /// Applies the pending batch, then acks it.
    async fn flush(&mut self) -> Result<(), End> {
        let Some(batch) = self.pending.take() else {
            return Ok(());
        };
        let loading = batch.vclock.is_none();
        let (expected, new) = if loading {
            (Vclock::new(), Vclock::new())
        } else {
            (
                self.pos.of(batch.engine),
                batch.vclock.clone().unwrap_or_default(),
            )
        };
        failpoint::hit("before_apply");
        let started = std::time::Instant::now();
        let result = self
            .target
            .apply(
                &self.meta(batch.engine, &expected, &new, loading),
                &batch.rows,
            )
            .await;
        if let Err(e) = result {
            return Err(self.apply_failed(e, Some(batch.engine)).await);
        }
        metrics::histogram!(m::APPLY_SECONDS, m::REPLICASET => self.rs.to_owned())
            .record(started.elapsed().as_secs_f64());
        failpoint::hit("after_commit");
        let rs = self.rs.to_owned();
        let rows = batch.rows.len() as u64;
        metrics::counter!(m::BATCHES_APPLIED, m::REPLICASET => rs.clone(), m::ENGINE => batch.engine.name()).increment(1);
        metrics::counter!(m::ROWS_APPLIED, m::REPLICASET => rs.clone()).increment(rows);
        metrics::counter!(m::BYTES_APPLIED, m::REPLICASET => rs.clone())
            .increment(batch.bytes as u64);
        if loading {
            metrics::counter!(m::SNAPSHOT_ROWS, m::REPLICASET => rs).increment(rows);
            self.st.lock().rows_applied += rows;
            return Ok(());
        }
        metrics::counter!(m::TRANSACTIONS_APPLIED, m::REPLICASET => rs)
            .increment(batch.transactions);
        let row = Some(self.row(&new, false));
        match batch.engine {
            Engine::Memtx => self.pos.memtx = row,
            Engine::Vinyl => self.pos.vinyl = row,
        }
        {
            let mut s = self.st.lock();
            s.rows_applied += rows;
            s.transactions_applied += batch.transactions;
        }
        self.ack(&new).await;
        failpoint::hit("after_ack");
        if let Some(processed) = self.heard.take_deferred() {
            self.advance_skipped(processed).await?;
        }
        Ok(())
    }

    /// An apply failed. A position mismatch whose row another writer
    /// changed since this session read it means another destination applies
    /// to this target: this one stops. A mismatch left by this process (a
    /// commit whose answer was lost) and any other error end the session;
    /// the next one re-reads the position from the target.
    async fn apply_failed(&mut self, e: TargetError, engine: Option<Engine>) -> End {
        if let TargetError::Position(msg) = &e
            && let Ok(now) = self.target.position(&self.source_cluster, self.rs).await
        {
            let row = match engine {
                Some(Engine::Memtx) => &now.memtx,
                Some(Engine::Vinyl) => &now.vinyl,
                None => &now.local,
            };
            if let Some(row) = row
                && !row.writer.is_empty()
                && row.writer != self.ctx.writer
            {
                return End::Fatal(
                    State::Failed,
                    format!(
                        "another destination (writer {}) is applying to this target replicaset; stopping this one: {msg}",
                        row.writer
                    ),
                );
            }
        }
        End::from(e)
    }

    async fn set_position(&mut self, v: &Vclock) -> Result<(), End> {
        let empty = Vclock::new();
        if let Err(e) = self
            .target
            .set_position(&self.meta(Engine::Memtx, &empty, v, false))
            .await
        {
            return Err(self.apply_failed(e, Some(Engine::Memtx)).await);
        }
        self.pos.memtx = Some(self.row(v, false));
        self.pos.vinyl = Some(self.row(v, false));
        self.st.lock().applied_vclock = self.pos.current();
        Ok(())
    }

    async fn ack(&mut self, committed: &Vclock) {
        let rs = self.rs.to_owned();
        {
            let mut s = self.st.lock();
            s.applied_vclock = self.pos.current();
            s.lag_lsn = s
                .source_vclock
                .signature()
                .saturating_sub(s.applied_vclock.signature());
            if s.lag_seconds != 0.0 && self.heard.clears_lag(&s.applied_vclock) {
                s.lag_seconds = 0.0;
                metrics::gauge!(m::LAG_SECONDS, m::REPLICASET => rs.clone()).set(0.0);
            }
            metrics::gauge!(m::POSITION_SIGNATURE, m::REPLICASET => rs.clone())
                .set(s.applied_vclock.signature() as f64);
            metrics::gauge!(m::LAG_LSN, m::REPLICASET => rs).set(s.lag_lsn as f64);
        }
        let msg = v1::DestinationMessage {
            kind: Some(v1::destination_message::Kind::Ack(v1::Ack {
                committed: Some(committed.into()),
            })),
        };
        let _ = self.acks.send(msg).await;
    }

    /// Records the lag; with nothing in flight, persists a skip-only advance
    /// of the processed watermark in the local progress space.
    async fn heartbeat(&mut self, hb: v1::Heartbeat) -> Result<(), End> {
        let source = Vclock::from(hb.source_vclock.unwrap_or_default());
        let processed = Vclock::from(hb.processed.unwrap_or_default());
        self.heard.heard(&processed, &source);
        {
            let mut s = self.st.lock();
            if !source.is_empty() {
                s.source_vclock = source;
            }
            // The source moved (or not) since the last ack: the lag in rows
            // is as of this heartbeat, not of the last commit.
            s.lag_lsn = s
                .source_vclock
                .signature()
                .saturating_sub(s.applied_vclock.signature());
            // What it counted may be committed already (its ack in flight).
            s.lag_seconds = if self.heard.clears_lag(&s.applied_vclock) {
                0.0
            } else {
                hb.lag_seconds
            };
            metrics::gauge!(m::LAG_SECONDS, m::REPLICASET => self.rs.to_owned()).set(s.lag_seconds);
            metrics::gauge!(m::LAG_LSN, m::REPLICASET => self.rs.to_owned()).set(s.lag_lsn as f64);
        }
        if !self.loading && (self.partial.is_some() || !self.pending.is_empty()) {
            // Persisted once the pending batch commits (`flush`).
            self.heard.defer(processed);
            return Ok(());
        }
        self.advance_skipped(processed).await
    }

    /// Persists `processed` (everything up to it shipped or skipped) in the
    /// local progress row when it is ahead of the position and nothing is
    /// pending, partial or loading, and acks it.
    async fn advance_skipped(&mut self, processed: Vclock) -> Result<(), End> {
        let current = self.pos.current();
        if self.loading
            || self.partial.is_some()
            || !self.pending.is_empty()
            || processed.le(&current)
        {
            return Ok(());
        }
        if !current.le(&processed) {
            warn!(replicaset = %self.rs, %processed, %current, "processed watermark is not ahead of the position");
            return Ok(());
        }
        let expected = self
            .pos
            .local
            .as_ref()
            .map(|r| r.vclock.clone())
            .unwrap_or_default();
        if let Err(e) = self
            .target
            .advance_local(&self.meta(Engine::Memtx, &expected, &processed, false))
            .await
        {
            return Err(self.apply_failed(e, None).await);
        }
        self.pos.local = Some(self.row(&processed, false));
        metrics::counter!(m::SKIP_ADVANCES, m::REPLICASET => self.rs.to_owned()).increment(1);
        self.ack(&processed).await;
        Ok(())
    }

    async fn snapshot_begin(&mut self, b: v1::SnapshotBegin) -> Result<(), End> {
        self.flush().await?;
        self.source_uuid = b.source_uuid.clone();
        if b.spaces
            .iter()
            .any(|s| self.target.catalog().by_name(s).is_none())
        {
            self.target.reload_catalog().await?;
        }
        let mut ids = Vec::new();
        for name in &b.spaces {
            match self.target.catalog().by_name(name) {
                Some(s) => ids.push(s.id),
                None => {
                    return Err(End::Fatal(
                        State::Failed,
                        format!("initial load: space '{name}' is missing on the target"),
                    ));
                }
            }
        }
        self.require_claimed_queue(
            b.spaces
                .iter()
                .filter(|s| self.target.catalog().by_name(s).is_some_and(|t| t.is_sync))
                .map(String::as_str),
        )?;
        let empty = Vclock::new();
        self.target
            .load_begin(
                &self.meta(Engine::Memtx, &empty, &empty, true),
                &ids,
                b.truncate,
            )
            .await?;
        self.pos.memtx = Some(self.row(&empty, true));
        self.pos.vinyl = Some(self.row(&empty, true));
        self.pos.local = None;
        self.loading = true;
        failpoint::hit("after_load_begin");
        info!(replicaset = %self.rs, spaces = ?b.spaces, truncate = b.truncate, "initial load started");
        set_state(self.st, self.rs, State::Loading, None);
        Ok(())
    }

    async fn snapshot_rows(&mut self, r: v1::SnapshotRows) -> Result<(), End> {
        let rows = map_snapshot(r.rows, self.target.catalog())
            .map_err(|e| End::Fatal(State::Failed, format!("initial load: {e}")))?;
        let limits = self.ctx.cfg.batching;
        for (engine, row) in rows {
            let bytes = row.tuple.len();
            if self.pending.must_flush_before(engine, 1, bytes, limits) {
                self.flush().await?;
            }
            self.pending.push(engine, vec![row], bytes, None);
        }
        Ok(())
    }

    async fn snapshot_end(&mut self, e: v1::SnapshotEnd) -> Result<(), End> {
        self.flush().await?;
        let v = Vclock::from(e.vclock.unwrap_or_default());
        self.set_position(&v).await?;
        self.loading = false;
        info!(replicaset = %self.rs, rows = e.rows, position = %v, "initial load committed");
        self.ack(&v).await;
        set_state(self.st, self.rs, State::Streaming, None);
        Ok(())
    }
}

impl Session<'_> {
    /// Asks the gateway for the walk's next chunk, if any.
    async fn send_step(&self) {
        if !self.gw_verify {
            return;
        }
        if let Some(step) = self.walk.as_ref().and_then(Walk::step) {
            let msg = v1::DestinationMessage {
                kind: Some(v1::destination_message::Kind::Walk(step)),
            };
            let _ = self.acks.send(msg).await;
        }
    }

    fn publish_walk(&self) {
        let report = self.ctx.reports.snapshot([&self.rs.to_owned()]);
        self.st.lock().walk = report
            .get(self.rs)
            .and_then(Option::as_ref)
            .map(verify::summary);
    }

    /// Starts the walk an operator asked for.
    async fn start_walk(&mut self, o: &Order) -> Result<(), String> {
        let Some(spaces) = &self.spaces else {
            return Err(format!("replicaset {} is not streaming yet", self.rs));
        };
        if !self.gw_verify {
            return Err(format!(
                "gateway {} does not handle verification (no feature \"{FEATURE_VERIFY}\")",
                self.gateway
            ));
        }
        let names = if o.request.spaces.is_empty() {
            spaces.clone()
        } else {
            if let Some(n) = o.request.spaces.iter().find(|n| !spaces.contains(n)) {
                return Err(format!("space {n} is not replicated from {}", self.rs));
            }
            o.request.spaces.clone()
        };
        let walk = Walk::new(
            o.id.clone(),
            o.request.mode,
            WalkReason::Requested,
            names,
            o.request
                .chunk_rows
                .unwrap_or(WalkRequest::DEFAULT_CHUNK_ROWS),
            o.request
                .rows_per_second
                .unwrap_or(WalkRequest::DEFAULT_ROWS_PER_SECOND),
        );
        self.target
            .verify_start(&self.source_cluster, self.rs, &walk.to_value())
            .await
            .map_err(|e| e.to_string())?;
        info!(replicaset = %self.rs, walk = %walk.id, mode = walk.mode.as_str(), spaces = ?walk.spaces, "verification walk started");
        self.ctx.reports.set(
            self.rs,
            Some(verify::report_of(&walk, &self.source_cluster)),
        );
        self.walk = Some(walk);
        self.publish_walk();
        self.send_step().await;
        Ok(())
    }

    /// A chunk of the walk, in stream order: compared with the target and
    /// recorded (repaired) with the position, exactly once.
    async fn chunk(&mut self, c: v1::Chunk) -> Result<(), End> {
        self.flush().await?;
        let vclock = Vclock::from(c.vclock.clone().unwrap_or_default());
        if vclock.le(&self.pos.current()) {
            return Ok(());
        }
        let Some(walk) = self
            .walk
            .clone()
            .filter(|w| w.id == c.walk && w.seq == c.seq && w.state == WalkState::Running)
        else {
            tracing::debug!(replicaset = %self.rs, walk = %c.walk, seq = c.seq, "a chunk of no current step: ignored");
            return Ok(());
        };
        let meta = self.target.catalog().by_name(&c.space).cloned();
        let outcome = match &meta {
            None => Outcome {
                chunks: 1,
                skipped: Some(format!("space {} does not exist on the target", c.space)),
                advance: Some(Advance::Skipped),
                ..Outcome::default()
            },
            Some(s) => {
                let pk: Vec<u32> = s.primary_key.iter().map(|(f, _)| *f).collect();
                compare(
                    self.target.conn(),
                    &walk,
                    &c,
                    s.id,
                    &pk,
                    engine_of(&s.engine),
                )
                .await
                .map_err(|e| {
                    End::Retry(format!(
                        "verification chunk {} of walk {}: {e}",
                        c.seq, c.walk
                    ))
                })?
            }
        };
        let mut next = walk.clone();
        let unverified = next.advance(outcome.advance.as_ref().unwrap_or(&Advance::Void));
        let n = |k: &str, v: u64| (Value::from(k), Value::from(v));
        let mut delta = vec![
            n("chunks", outcome.chunks),
            n("compared", outcome.compared),
            n("missing", outcome.missing),
            n("extra", outcome.extra),
            n("different", outcome.different),
            n("repaired", outcome.ops.len() as u64),
            n("unverified", unverified),
            n("voided", outcome.voided),
        ];
        if let Some(why) = &outcome.skipped {
            delta.push((Value::from("skipped"), Value::from(why.as_str())));
        }
        let repaired = walk.mode == WalkMode::Repair;
        let keys = Value::Array(
            outcome
                .keys
                .iter()
                .map(|(raw, kind)| {
                    Value::Array(vec![
                        Value::from(key_id(raw)),
                        Value::Map(vec![
                            (Value::from("key"), Value::from(to_hex(raw))),
                            (Value::from("kind"), Value::from(verify::kind_name(*kind))),
                            (Value::from("repaired"), Value::from(repaired)),
                        ]),
                    ])
                })
                .collect(),
        );
        let engine = outcome.engine;
        let expected = self.pos.of(engine);
        let result = self
            .target
            .verify_chunk(
                &self.meta(engine, &expected, &vclock, false),
                &next.to_value(),
                &c.space,
                &Value::Map(delta),
                &keys,
                REPORT_KEYS_CAP,
                &outcome.ops,
            )
            .await;
        if let Err(e) = result {
            return Err(self.apply_failed(e, Some(engine)).await);
        }
        failpoint::hit("after_chunk");
        let row = Some(self.row(&vclock, false));
        match engine {
            Engine::Memtx => self.pos.memtx = row,
            Engine::Vinyl => self.pos.vinyl = row,
        }
        let rs = self.rs.to_owned();
        metrics::counter!(m::WALK_CHUNKS, m::REPLICASET => rs.clone()).increment(1);
        metrics::counter!(m::WALK_ROWS_COMPARED, m::REPLICASET => rs.clone())
            .increment(outcome.compared);
        metrics::counter!(m::WALK_MISMATCHES, m::REPLICASET => rs.clone())
            .increment(outcome.missing + outcome.extra + outcome.different);
        metrics::counter!(m::WALK_REPAIRED, m::REPLICASET => rs.clone())
            .increment(outcome.ops.len() as u64);
        if outcome.missing + outcome.extra + outcome.different > 0 {
            warn!(replicaset = %rs, walk = %walk.id, space = %c.space, missing = outcome.missing, extra = outcome.extra, different = outcome.different, repaired = outcome.ops.len(), "verification found differences");
        }
        self.ctx.reports.update(self.rs, |r| {
            verify::add(r, &next, &c.space, &outcome, unverified)
        });
        if next.state == WalkState::Done {
            info!(replicaset = %rs, walk = %next.id, mode = next.mode.as_str(), "verification walk done");
        }
        self.walk = Some(next);
        self.publish_walk();
        self.ack(&vclock).await;
        self.send_step().await;
        Ok(())
    }

    /// The gateway continues after a WAL gap: the position jumps to the
    /// source's current one together with the start of a repair walk of
    /// every replicated space (one transaction); until that walk ends the
    /// target is not promotable.
    async fn gap(&mut self, g: v1::GapRestart) -> Result<(), End> {
        self.flush().await?;
        let after = Vclock::from(g.after.unwrap_or_default());
        let lost_from = Vclock::from(g.lost_from.unwrap_or_default());
        let spaces = self.spaces.clone().unwrap_or_default();
        let walk = Walk::new(
            uuid::Uuid::new_v4().to_string(),
            WalkMode::Repair,
            WalkReason::WalGap,
            spaces,
            WalkRequest::DEFAULT_CHUNK_ROWS,
            self.ctx.cfg.repair_rows_per_second,
        );
        let expected = self.pos.of(Engine::Memtx);
        if let Err(e) = self
            .target
            .verify_gap(
                &self.meta(Engine::Memtx, &expected, &after, false),
                &walk.to_value(),
            )
            .await
        {
            return Err(self.apply_failed(e, Some(Engine::Memtx)).await);
        }
        self.pos.memtx = Some(self.row(&after, false));
        error!(replicaset = %self.rs, %lost_from, %after, walk = %walk.id, "WAL gap on the source ({}): the position moved to the source's current one and a repair walk started; this target is not promotable until it ends", g.message);
        metrics::counter!(m::WALK_GAPS, m::REPLICASET => self.rs.to_owned()).increment(1);
        self.ctx.reports.set(
            self.rs,
            Some(verify::report_of(&walk, &self.source_cluster)),
        );
        self.walk = Some(walk);
        self.publish_walk();
        self.ack(&after).await;
        self.send_step().await;
        Ok(())
    }
}

fn gateway_error(e: v1::StreamError) -> End {
    use v1::ErrorKind;
    let kind = ErrorKind::try_from(e.kind).unwrap_or(ErrorKind::Unspecified);
    let msg = format!("gateway: {}", e.message);
    match kind {
        ErrorKind::WalGap => End::Fatal(State::Gapped, msg),
        ErrorKind::Diverged => End::Fatal(State::Diverged, msg),
        ErrorKind::SourceMismatch | ErrorKind::UnknownSpace => End::Fatal(State::Failed, msg),
        ErrorKind::Stopped
        | ErrorKind::Unavailable
        | ErrorKind::Internal
        | ErrorKind::Unspecified => End::Retry(msg),
    }
}
