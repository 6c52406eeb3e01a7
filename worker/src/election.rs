//! Every worker's etcd lease, kept alive by the worker itself: it carries
//! the worker's presence key (`PREFIX/FED/alive/<cluster>/<worker id>`, the
//! coordinator's proof that a cluster still has a live worker) and, with
//! `coordinator.enabled`, its campaign through etcd's election API.
//!
//! Leadership is believed only while the lease was renewed less than
//! `lease_ttl` ago (measured from before the renewal was sent), so a leader
//! cut off from etcd stops acting no later than etcd lets another take over.
//! Writes that need leadership also compare the leader key's revision in
//! the same etcd transaction (see [`Leadership`]).

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use etcd_client::{Client, ConnectOptions};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Proof of leadership: the election key this worker created and its
/// revision. Compare it in the transactions only a leader may commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Leadership {
    /// The election key (`<election name>/<lease id>`).
    pub(crate) key: Vec<u8>,
    /// Its create revision.
    pub(crate) create_rev: i64,
}

#[derive(Debug, Default)]
struct Inner {
    leader: Option<Leadership>,
    /// Send time of the newest request etcd acknowledged as keeping the
    /// lease alive (the grant, then each renewal).
    acked: Option<Instant>,
    /// The TTL etcd granted.
    granted: Duration,
}

/// The campaign's shared view.
#[derive(Debug, Default)]
pub(crate) struct Campaign {
    inner: Mutex<Inner>,
}

impl Campaign {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Leadership while the lease is known to be alive: its last
    /// acknowledged renewal was sent less than the granted TTL ago (and less
    /// than `ttl`), so etcd cannot have let another candidate lead yet.
    pub(crate) fn leading(&self, ttl: Duration) -> Option<Leadership> {
        let g = self.lock();
        let alive = g.acked.is_some_and(|t| t.elapsed() < g.granted.min(ttl));
        g.leader.clone().filter(|_| alive)
    }

    fn set_leader(&self, l: Option<Leadership>) {
        self.lock().leader = l;
    }

    fn acked(&self, sent: Instant, granted: Duration) {
        let mut g = self.lock();
        g.acked = Some(sent);
        g.granted = granted;
    }

    fn reset(&self) {
        *self.lock() = Inner::default();
    }
}

/// What a worker's lease carries.
#[derive(Debug, Clone)]
pub(crate) struct LeaseUse {
    /// The presence key, put with the lease.
    pub(crate) presence_key: String,
    /// The election's name, when this worker campaigns.
    pub(crate) election: Option<String>,
    /// The worker id: the presence key's and the campaign's value.
    pub(crate) value: String,
}

/// Until `stop`: grants a lease, puts the presence key with it, keeps it
/// alive every third of `ttl`, campaigns (when `uses.election` is set) and
/// leads until the lease is lost, then starts over with a new lease. The
/// lease is revoked on stop, so the next candidate leads at once and the
/// presence key goes away.
pub(crate) async fn run(
    endpoints: Vec<String>,
    uses: LeaseUse,
    ttl: Duration,
    campaign: Arc<Campaign>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    while !stop.is_cancelled() {
        let result = Box::pin(term_of_office(&endpoints, &uses, ttl, &campaign, &stop)).await;
        if !stop.is_cancelled() && campaign.leading(Duration::MAX).is_some() {
            warn!("coordinator leadership lost");
        }
        campaign.reset();
        if let Err(e) = result {
            warn!("coordinator election: {e}; campaigning again");
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = stop.cancelled() => {}
            }
            backoff = (backoff * 2).min(ttl);
        } else {
            backoff = Duration::from_millis(200);
        }
    }
}

async fn term_of_office(
    endpoints: &[String],
    uses: &LeaseUse,
    ttl: Duration,
    campaign: &Campaign,
    stop: &CancellationToken,
) -> Result<(), etcd_client::Error> {
    // No request timeout: a campaign blocks until this worker leads.
    let opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_keep_alive(Duration::from_secs(1), Duration::from_secs(2));
    let ttl_s = ttl.as_secs().max(2);
    let granted = Duration::from_secs(ttl_s);
    let start = async {
        let mut client = Client::connect(endpoints, Some(opts)).await?;
        let sent = Instant::now();
        let lease = client.lease_grant(ttl_s as i64, None).await?.id();
        campaign.acked(sent, granted);
        let (keeper, acks) = client.lease_keep_alive(lease).await?;
        let with_lease = etcd_client::PutOptions::new().with_lease(lease);
        client
            .put(
                uses.presence_key.as_str(),
                uses.value.as_str(),
                Some(with_lease),
            )
            .await?;
        Ok::<_, etcd_client::Error>((client, lease, keeper, acks))
    };
    let (mut client, lease, mut keeper, mut acks) = tokio::select! {
        r = start => r?,
        () = stop.cancelled() => return Ok(()),
    };
    let keepalive = async {
        let mut tick = tokio::time::interval(ttl / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Send times of renewals not yet answered, oldest first: an answer
        // is credited to the request it answers, never to a newer one.
        let mut pending = std::collections::VecDeque::new();
        let mut last = Instant::now();
        loop {
            tick.tick().await;
            pending.push_back(Instant::now());
            keeper.keep_alive().await?;
            match tokio::time::timeout(ttl / 3, acks.message()).await {
                Ok(Ok(Some(r))) if r.ttl() > 0 => {
                    if let Some(sent) = pending.pop_front() {
                        last = sent;
                        campaign.acked(sent, granted);
                    }
                }
                Ok(Ok(Some(_))) => return Ok::<_, etcd_client::Error>("the lease expired"),
                Ok(Ok(None)) => return Ok("the keep-alive stream ended"),
                Ok(Err(e)) => return Err(e),
                Err(_) if last.elapsed() >= granted.min(ttl) => {
                    return Ok("no keep-alive answer within the TTL");
                }
                Err(_) => {}
            }
        }
    };
    let mut elect = client.clone();
    let lead = async {
        let Some(name) = &uses.election else {
            return std::future::pending().await;
        };
        let resp = elect
            .campaign(name.as_str(), uses.value.as_str(), lease)
            .await?;
        let key = resp.leader().map(|k| k.key().to_vec()).unwrap_or_default();
        let create_rev = resp.leader().map_or(0, |k| k.rev());
        info!(lease, "leading as coordinator");
        campaign.set_leader(Some(Leadership { key, create_rev }));
        std::future::pending::<Result<(), etcd_client::Error>>().await
    };
    let outcome = tokio::select! {
        r = keepalive => r.map(|why| warn!(lease, "coordinator lease lost: {why}")),
        r = lead => r,
        () = stop.cancelled() => {
            campaign.reset();
            let revoke = client.lease_revoke(lease);
            let _ = tokio::time::timeout(Duration::from_secs(2), revoke).await;
            Ok(())
        }
    };
    outcome
}

/// The current leader's value (worker id), if any.
pub(crate) async fn leader(
    client: &Client,
    name: &str,
) -> Result<Option<String>, etcd_client::Error> {
    let mut c = client.clone();
    match c.leader(name).await {
        Ok(r) => Ok(r
            .kv()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())),
        // etcd answers "election: no leader" as an error.
        Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains("no leader") => Ok(None),
        Err(e) => Err(e),
    }
}
