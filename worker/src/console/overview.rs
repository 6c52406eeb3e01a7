//! `GET /tcf/api/v1/overview`: both clusters as this worker sees them, with
//! its peer's info and every worker's load-balancer answer.

use std::time::Duration;

use tcf_api::{
    operator::{LbAnswer, Overview},
    worker::{Info, Reported},
};
use tcf_common::http_client::request;

use crate::{Worker, store::now_ms};

/// Assembles the overview: this worker's info, the first peer worker's
/// info that answers, and the `GET /tcf/is_active` answer of this worker
/// and of each peer worker, all asked at once.
pub(crate) async fn overview(w: &Worker) -> Overview {
    let lb_peers = futures::future::join_all(w.cfg.peer_workers.iter().map(|p| lb_of(w, p)));
    let (worker, peer, peers_lb) = tokio::join!(crate::http::info_of(w), peer_info(w), lb_peers);
    let (code, answer) = crate::http::lb_answer(w);
    let mut lb = vec![LbAnswer {
        cluster: w.cfg.cluster.clone(),
        worker: w.id.clone(),
        code: Some(code.as_u16()),
        answer,
    }];
    lb.extend(peers_lb);
    Overview {
        at_ms: now_ms(),
        worker,
        peer,
        lb,
    }
}

fn timeout(w: &Worker) -> Duration {
    w.cfg.connect_timeout + Duration::from_secs(5)
}

/// The info of the first peer worker that answers with one.
async fn peer_info(w: &Worker) -> Option<Reported<Box<Info>>> {
    if w.cfg.peer_workers.is_empty() {
        return None;
    }
    let token = w.cfg.peer_token.as_ref().map(|t| t.expose());
    let mut errors = Vec::new();
    for p in &w.cfg.peer_workers {
        match request("GET", p, "/tcf/api/v1/info", token, None, timeout(w)).await {
            Ok(r) if r.status == 200 => match serde_json::from_str::<Info>(&r.body) {
                Ok(i) => return Some(Reported::Status(Box::new(i))),
                Err(e) => errors.push(format!("{p}: malformed info: {e}")),
            },
            Ok(r) => errors.push(format!("{p} answered {}: {}", r.status, r.body.trim())),
            Err(e) => errors.push(format!("{p}: {e}")),
        }
    }
    Some(Reported::Error {
        error: errors.join("; "),
    })
}

/// What peer worker `url` answers a load balancer.
async fn lb_of(w: &Worker, url: &str) -> LbAnswer {
    let (code, answer) = match request("GET", url, "/tcf/is_active", None, None, timeout(w)).await {
        Ok(r) => (Some(r.status), r.body.trim().to_owned()),
        Err(e) => (None, e.to_string()),
    };
    LbAnswer {
        cluster: w.cfg.peer.clone(),
        worker: url.to_owned(),
        code,
        answer,
    }
}
