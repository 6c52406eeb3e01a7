//! Confirming the state through the peer's workers while etcd is out of
//! reach (`GET /tcf/api/v1/view`).
//!
//! A peer confirms this worker's view when it holds the same term and the
//! same statuses. A peer holding a newer term read it from etcd: its state is
//! adopted (not as a confirmation), so a deposed active learns it lost at
//! once. Cut off from etcd and every peer for `fencing_timeout`, a worker
//! stops answering 200 and fences its cluster (see `crate::Worker::tick`).

use std::time::{Duration, Instant};

use tcf_common::http_client::request;
use tracing::{info, warn};

use crate::Worker;

pub use tcf_api::worker::PeerView;

/// Asks every peer worker at once. The newest state any of them holds wins:
/// a newer term than this worker's is adopted (not as a confirmation); the
/// same state confirms this worker's view, unless some peer holds a newer one.
pub(crate) async fn confirm(w: &Worker) {
    let token = w.cfg.peer_token.as_ref().map(|t| t.expose());
    let timeout = (w.cfg.poll_interval * 2).max(Duration::from_millis(500));
    let answers = futures::future::join_all(w.cfg.peer_workers.iter().map(|peer| async move {
        match request("GET", peer, "/tcf/api/v1/view", token, None, timeout).await {
            Ok(r) if r.status == 200 => match serde_json::from_str::<PeerView>(&r.body) {
                Ok(pv) => pv.state,
                Err(_) => {
                    warn!(%peer, "malformed peer view");
                    None
                }
            },
            Ok(r) => {
                warn!(%peer, status = r.status, "peer view refused: {}", r.body);
                None
            }
            Err(e) => {
                tracing::debug!(%peer, "peer view: {e}");
                None
            }
        }
    }))
    .await;
    let Some(newest) = answers.into_iter().flatten().max_by_key(|s| s.term) else {
        return;
    };
    let mut v = w.view();
    match &v.state {
        Some(mine) if *mine == newest => v.peer_confirmed_at = Some(Instant::now()),
        Some(mine) if newest.term <= mine.term => {}
        _ => {
            info!(
                term = newest.term,
                "adopting a newer state from a peer worker"
            );
            v.state = Some(newest);
        }
    }
}
