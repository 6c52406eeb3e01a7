//! The gRPC service: one `Stream` call per source replicaset.
//!
//! Contract (see `docs/stream.md`): transactions of a replicaset are sent in
//! source commit order, each whole (possibly in `partial` pieces), never
//! twice within a stream; after a reconnect the destination says where it is
//! and the stream resumes after that position. A newer stream for the same
//! replicaset replaces the older one.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
};

use tcf_common::control::{Control, TermError};
use tcf_iproto::Vclock;
use tcf_proto::{FEATURE_VERIFY, PROTOCOL_VERSION, v1};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};
use uuid::Uuid;

use crate::{
    config::Config,
    pipeline::{self, Lag},
    queue::queue,
    status::{self, Registry, State},
    upstream::{Expect, Reader, Source, Start},
    walk::{Chunks, walker::Walker},
};

/// Shared state of the gateway: config, status, running streams, and the
/// operator's start/stop switch with the newest term seen.
pub struct Gateway {
    pub(crate) config: Arc<Config>,
    pub(crate) status: Registry,
    active: Mutex<HashMap<String, CancellationToken>>,
    control: Control,
}

impl Gateway {
    /// A gateway serving `config`'s replicasets; streams start on demand.
    pub fn new(config: Arc<Config>) -> Self {
        let status = Registry::new(config.replicasets.keys().map(String::as_str));
        for (rs, cell) in status.cells() {
            let uuid = crate::subscriber_uuid(&config.alias, &config.cluster, rs);
            cell.lock().subscriber_uuid = Some(uuid.to_string());
        }
        Self {
            config,
            status,
            active: Mutex::new(HashMap::new()),
            control: Control::new(),
        }
    }

    /// `(running, newest term seen)`.
    pub fn control_state(&self) -> (bool, u64) {
        self.control.state()
    }

    /// Starts (`run = true`) or stops the gateway. A command with a term older
    /// than the newest seen is refused; stopping ends every stream.
    pub fn set_running(&self, run: bool, term: Option<u64>, reset: bool) -> Result<(), TermError> {
        let changed = self.control.set(run, term, reset)?;
        if !run {
            let active: Vec<CancellationToken> = self
                .active
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .drain()
                .map(|(_, t)| t)
                .collect();
            for t in active {
                t.cancel();
            }
        }
        for (rs, cell) in self.status.cells() {
            let state = cell.lock().state;
            match (run, state) {
                (false, _) => status::set_state(cell, rs, State::Stopped, None),
                (true, State::Stopped) => status::set_state(cell, rs, State::Idle, None),
                (true, _) => {}
            }
        }
        if changed {
            info!(
                running = run,
                ?term,
                "gateway {}",
                if run { "started" } else { "stopped" }
            );
        }
        Ok(())
    }

    fn check_client<T>(&self, req: &Request<T>) -> Result<(), Status> {
        if self.config.tls.is_none() {
            return Ok(());
        }
        let certs = req
            .peer_certs()
            .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        let leaf = certs
            .first()
            .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        let ids = tcf_common::tls::peer_identities(leaf.as_ref());
        if ids
            .iter()
            .any(|id| self.config.allowed_clients.iter().any(|a| a == id))
        {
            Ok(())
        } else {
            warn!(identities = ?ids, "client certificate not in grpc_server.allowed_clients");
            Err(Status::permission_denied(format!(
                "client certificate {ids:?} is not in grpc_server.allowed_clients"
            )))
        }
    }
}

/// The tonic service over a shared [`Gateway`].
#[derive(Clone)]
pub struct Service(pub Arc<Gateway>);

type MessageStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<v1::GatewayMessage, Status>> + Send>>;

fn parse_uuid(field: &str, s: &str) -> Result<Option<Uuid>, Status> {
    if s.is_empty() {
        return Ok(None);
    }
    Uuid::parse_str(s)
        .map(Some)
        .map_err(|_| Status::invalid_argument(format!("{field} is not a UUID: {s}")))
}

#[tonic::async_trait]
impl v1::replication_server::Replication for Service {
    type StreamStream = MessageStream;

    async fn stream(
        &self,
        request: Request<Streaming<v1::DestinationMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let gw = &self.0;
        gw.check_client(&request)?;
        if !gw.control.state().0 {
            return Err(Status::unavailable("gateway stopped by an operator"));
        }
        let mut inbound = request.into_inner();
        let Some(v1::DestinationMessage {
            kind: Some(v1::destination_message::Kind::Open(open)),
        }) = inbound.message().await?
        else {
            return Err(Status::invalid_argument("the first message must be Open"));
        };
        if open.protocol_version != PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "protocol version {} is not supported (gateway speaks {PROTOCOL_VERSION})",
                open.protocol_version
            )));
        }
        let cfg = &gw.config;
        let instances = cfg
            .replicasets
            .get(&open.replicaset)
            .cloned()
            .ok_or_else(|| {
                Status::not_found(format!(
                    "replicaset '{}' is not in stream_instances",
                    open.replicaset
                ))
            })?;
        let status = gw
            .status
            .get(&open.replicaset)
            .cloned()
            .ok_or_else(|| Status::internal("no status cell"))?;
        if open.target_cluster == cfg.cluster {
            return Err(Status::failed_precondition(format!(
                "the target cluster '{}' is the source cluster itself",
                open.target_cluster
            )));
        }
        let verify = open.features.iter().any(|f| f == FEATURE_VERIFY);
        let expect = Expect {
            source_uuid: parse_uuid("source_uuid", &open.source_uuid)?,
            target_uuid: parse_uuid("target_uuid", &open.target_uuid)?,
            verify,
        };
        let (start, acked) = match open.start {
            Some(v1::open::Start::After(v)) => {
                let v = Vclock::from(v);
                (Start::After(v.clone()), v)
            }
            Some(v1::open::Start::InitialLoad(l)) => (
                Start::InitialLoad {
                    truncate: l.truncate,
                },
                Vclock::new(),
            ),
            Some(v1::open::Start::Current(_)) => (Start::Current, Vclock::new()),
            None => return Err(Status::invalid_argument("Open needs a start")),
        };
        info!(replicaset = %open.replicaset, destination = %open.destination, start = ?start, "stream opened");

        let cancel = CancellationToken::new();
        if let Some(old) = gw
            .active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(open.replicaset.clone(), cancel.clone())
        {
            warn!(replicaset = %open.replicaset, "a newer stream replaces the running one");
            old.cancel();
        }
        {
            let mut s = status.lock();
            s.destination = Some(open.destination.clone());
            s.acked_vclock = acked.clone();
            s.last_error = None;
        }
        let (committed_tx, committed_rx) = watch::channel(acked);
        let lag = Arc::new(Mutex::new(Lag::default()));
        let (qtx, qrx) = queue(cfg.queue_max_items, cfg.queue_max_bytes);
        let (out_tx, out_rx) = mpsc::channel(4);
        let source = Source {
            cluster: cfg.cluster.clone(),
            replicaset: open.replicaset.clone(),
            instances: instances.clone(),
            connect: cfg.connect_options(),
            timing: cfg.timing(),
            diverged_timeout: cfg.diverged_timeout,
            max_tx_memory: cfg.max_transaction_memory,
            spool_dir: cfg.spool_dir.clone(),
            on_wal_gap: cfg.on_wal_gap,
            subscriber: crate::subscriber_uuid(&cfg.alias, &cfg.cluster, &open.replicaset),
        };
        let chunks = verify.then(Chunks::default);
        let (steps_tx, steps_rx) = watch::channel(None);
        if let Some(chunks) = &chunks {
            let walker = Walker {
                alias: cfg.alias.clone(),
                replicaset: open.replicaset.clone(),
                instances: instances.clone(),
                connect: cfg.connect_options(),
                chunks: chunks.clone(),
                steps: steps_rx,
                status: status.clone(),
            };
            tokio::spawn(walker.run(cancel.clone()));
        }
        let reader = Reader::new(source, qtx, committed_rx, status.clone(), expect, chunks);
        let rs = open.replicaset.clone();
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = reader.run(start) => {}
                () = c.cancelled() => {}
            }
        });
        tokio::spawn(pipeline::send_loop(
            qrx,
            out_tx,
            Arc::clone(&lag),
            status.clone(),
            rs.clone(),
            cfg.chunk_bytes,
            cancel.clone(),
        ));
        tokio::spawn(pipeline::ack_loop(
            inbound,
            committed_tx,
            verify.then_some(steps_tx),
            Arc::clone(&lag),
            status.clone(),
            rs.clone(),
            cancel.clone(),
        ));
        tokio::spawn(pipeline::poll_loop(
            instances,
            cfg.connect_options(),
            cfg.poll_interval,
            lag,
            status.clone(),
            rs.clone(),
            cancel.clone(),
        ));
        let gw2 = Arc::clone(gw);
        tokio::spawn(async move {
            cancel.cancelled().await;
            let ours = {
                let mut active = gw2.active.lock().unwrap_or_else(PoisonError::into_inner);
                let ours = active.get(&rs).is_some_and(CancellationToken::is_cancelled);
                if ours {
                    active.remove(&rs);
                }
                ours
            };
            if ours {
                let state = {
                    let mut s = status.lock();
                    s.destination = None;
                    s.state
                };
                if matches!(state, State::Connecting | State::Loading | State::Streaming) {
                    status::set_state(&status, &rs, State::Idle, None);
                }
            }
            info!(replicaset = %rs, "stream closed");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }

    async fn describe(
        &self,
        request: Request<v1::DescribeRequest>,
    ) -> Result<Response<v1::DescribeResponse>, Status> {
        self.0.check_client(&request)?;
        let cfg = &self.0.config;
        Ok(Response::new(v1::DescribeResponse {
            source_cluster: cfg.cluster.clone(),
            gateway: cfg.alias.clone(),
            protocol_version: PROTOCOL_VERSION,
            replicasets: cfg.replicasets.keys().cloned().collect(),
            features: vec![FEATURE_VERIFY.to_owned()],
        }))
    }
}
