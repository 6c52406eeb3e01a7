//! Confirming the state through the peer's workers while etcd is out of
//! reach (`GET /tcf/api/v1/view`).
//!
//! A peer confirms this worker's view when it holds the same term and the
//! same statuses. A peer holding a newer term read it from etcd: its state is
//! adopted (not as a confirmation), so a deposed active learns it lost at
//! once. Cut off from etcd and every peer for `fencing_timeout`, a worker
//! stops answering 200 and fences its cluster (see `crate::Worker::tick`).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tcf_common::http_client::request;
use tracing::{info, warn};

use crate::{Worker, store::FedState};

/// A worker's view, as served to its peers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerView {
    /// The serving worker's cluster.
    pub cluster: String,
    /// Its last state (from etcd, or adopted from a peer).
    pub state: Option<FedState>,
    /// Whether that state was read from etcd within `fencing_timeout`.
    pub etcd_fresh: bool,
}

/// Asks the peer workers; records a confirmation or adopts a newer state.
pub(crate) async fn confirm(w: &Worker) {
    let token = w.cfg.peer_token.as_ref().map(|t| t.expose());
    let timeout = (w.cfg.poll_interval * 2).max(Duration::from_millis(500));
    for peer in &w.cfg.peer_workers {
        let r = match request("GET", peer, "/tcf/api/v1/view", token, None, timeout).await {
            Ok(r) if r.status == 200 => r,
            Ok(r) => {
                warn!(%peer, status = r.status, "peer view refused: {}", r.body);
                continue;
            }
            Err(e) => {
                tracing::debug!(%peer, "peer view: {e}");
                continue;
            }
        };
        let Ok(pv) = serde_json::from_str::<PeerView>(&r.body) else {
            warn!(%peer, "malformed peer view");
            continue;
        };
        let Some(theirs) = pv.state else { continue };
        let mut v = w.view();
        match &v.state {
            Some(mine) if *mine == theirs => {
                v.peer_confirmed_at = Some(Instant::now());
                return;
            }
            Some(mine) if theirs.term > mine.term => {
                info!(%peer, term = theirs.term, "adopting a newer state from a peer worker");
                v.state = Some(theirs);
                return;
            }
            None => {
                v.state = Some(theirs);
                return;
            }
            Some(_) => {}
        }
    }
}
