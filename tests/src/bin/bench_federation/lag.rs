//! Lag at a steady rate, and the highest rate sustained with a bounded lag.
//!
//! Each transaction writes `tx_rows` rows over a rotating key range (so a long
//! sweep does not grow the spaces) plus one mark row `{MARK_KEY, 'mark', seq}`
//! with its sequence number; B applies whole transactions in source order, so
//! the mark on B names the last transaction visible there.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, stream::FuturesUnordered};
use rmpv::Value;
use tcf_iproto::Connection;
use tcf_tests::{Tarantool, federation::RunningDestination};
use tokio::time::MissedTickBehavior;

use crate::{STALL_LIMIT, diagnostics, writer};

/// Poll period of the lag reader.
const LAG_POLL: Duration = Duration::from_millis(1);
/// The lag rows' keys: `LAG_KEY_BASE + i % LAG_KEYS` (apart from the
/// throughput runs' keys, which count up from 0).
const LAG_KEY_BASE: u64 = 1 << 40;
const LAG_KEYS: u64 = 1 << 20;
/// The mark row's key.
const MARK_KEY: u64 = 1 << 41;
/// CALLs the writer keeps in flight (each one transaction).
const WRITER_IN_FLIGHT: usize = 4;

/// Defines `bench_lag_tx(first, n, seq, kbase, keys, mark)` on the source:
/// one transaction of rows `first .. first + n - 1` (rotating keys) and the
/// mark (CALLed, so the source does not compile a chunk per transaction).
const TX_LUA: &str = "function bench_lag_tx(first, n, seq, kbase, keys, mark) local s = box.space.test \
    box.begin() \
    for i = first, first + n - 1 do local k = kbase + i % keys s:replace{k, 'payload-' .. k, i} end \
    s:replace{mark, 'mark', seq} \
    box.commit() end";

/// The mark's sequence number (-1 when absent).
const MARK_LUA: &str = "local t = box.space.test:get{...} return t and t[3] or -1";

/// What one steady-rate step needs.
pub(crate) struct Step {
    pub(crate) rows_per_s: u64,
    pub(crate) secs: u64,
    pub(crate) tx_rows: u64,
}

/// Result of one steady-rate step.
pub(crate) struct Lag {
    pub(crate) rows: u64,
    pub(crate) txs: usize,
    pub(crate) target_rows_per_s: u64,
    pub(crate) achieved_rows_per_s: f64,
    /// appearance - commit, milliseconds, sorted.
    pub(crate) lags_ms: Vec<f64>,
}

impl Lag {
    pub(crate) fn p(&self, q: usize) -> f64 {
        percentile(&self.lags_ms, q)
    }

    /// Whether the step ran at (nearly) its rate with p99 within `bound_ms`.
    pub(crate) fn sustained(&self, bound_ms: f64) -> bool {
        self.achieved_rows_per_s >= 0.95 * self.target_rows_per_s as f64 && self.p(99) <= bound_ms
    }
}

impl std::fmt::Display for Lag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let early = self.lags_ms.iter().filter(|l| **l < 0.0).count();
        write!(
            f,
            "lag_target_rows_per_s={} achieved_rows_per_s={:.0} txs={} rows={} \
             lag_ms_p50={:.1} lag_ms_p99={:.1} lag_ms_max={:.1} lag_ms_min={:.1} seen_before_commit_reply={early}",
            self.target_rows_per_s,
            self.achieved_rows_per_s,
            self.txs,
            self.rows,
            self.p(50),
            self.p(99),
            self.p(100),
            self.lags_ms.first().copied().unwrap_or(f64::NAN),
        )
    }
}

/// Runs steady-rate steps on one writer; sequence numbers continue across
/// steps.
pub(crate) struct Lagger<'a> {
    pub(crate) w: &'a Connection,
    pub(crate) target: &'a Tarantool,
    pub(crate) dest: &'a RunningDestination,
    /// Rows written so far (the next row index).
    pub(crate) next_row: u64,
    /// The next transaction's sequence number.
    pub(crate) next_seq: u64,
}

impl Lagger<'_> {
    /// One step: transactions of `s.tx_rows` rows at `s.rows_per_s` for
    /// `s.secs`; the lag of each on this process's clock.
    pub(crate) async fn step(&mut self, s: &Step) -> anyhow::Result<Lag> {
        let tx_rows = s.tx_rows.max(1);
        let tx_per_s = (s.rows_per_s as f64 / tx_rows as f64).max(1.0);
        let txs = (tx_per_s * s.secs as f64).round().max(1.0) as u64;
        let period = Duration::from_secs_f64(1.0 / tx_per_s);
        let seq_base = self.next_seq;
        let row_base = self.next_row;
        let reader_conn = writer(self.target).await?;
        self.w
            .eval(TX_LUA, &[][..] as &[Value])
            .await
            .context("defining the lag writer's function on A")?;
        // The reader: every ~1 ms, the mark on B; transaction k is visible
        // once the mark is at least `seq_base + k`.
        let reader = tokio::spawn(async move {
            let mut seen: Vec<Instant> = Vec::with_capacity(txs as usize);
            let mut progress = Instant::now();
            while (seen.len() as u64) < txs {
                let mark = reader_conn
                    .eval(MARK_LUA, &[Value::from(MARK_KEY)][..])
                    .await
                    .context("polling B's mark row")?;
                let now = Instant::now();
                let mark = tcf_tests::first(mark).as_i64().context("mark seq")?;
                let visible = if mark < seq_base as i64 {
                    0
                } else {
                    (mark as u64 - seq_base + 1).min(txs)
                };
                if visible > seen.len() as u64 {
                    seen.resize(visible as usize, now);
                    progress = now;
                } else if progress.elapsed() > STALL_LIMIT {
                    bail!(
                        "no progress for {STALL_LIMIT:?}: {} of {txs} transactions visible on B",
                        seen.len()
                    );
                }
                tokio::time::sleep(LAG_POLL).await;
            }
            anyhow::Ok(seen)
        });
        let mut committed = vec![None; txs as usize];
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let mut in_flight = FuturesUnordered::new();
        let mut issued = 0u64;
        let w = self.w;
        let t0 = Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick(), if issued < txs && in_flight.len() < WRITER_IN_FLIGHT => {
                    let k = issued;
                    issued += 1;
                    let args = [
                        Value::from(row_base + k * tx_rows),
                        tx_rows.into(),
                        (seq_base + k).into(),
                        LAG_KEY_BASE.into(),
                        LAG_KEYS.into(),
                        MARK_KEY.into(),
                    ];
                    in_flight.push(async move {
                        let r = w.call("bench_lag_tx", &args[..]).await;
                        (k, r, Instant::now())
                    });
                }
                Some((k, r, at)) = in_flight.next(), if !in_flight.is_empty() => {
                    r.with_context(|| format!("transaction {k} of the lag run"))?;
                    if let Some(c) = committed.get_mut(k as usize) {
                        *c = Some(at);
                    }
                }
                else => break,
            }
        }
        let write = t0.elapsed();
        self.next_row += txs * tx_rows;
        self.next_seq += txs;
        let seen = match reader.await.context("the lag reader panicked")? {
            Ok(seen) => seen,
            Err(e) => bail!("{e:#}{}", diagnostics(Some(self.dest)).await),
        };
        let mut lags_ms: Vec<f64> = committed
            .iter()
            .zip(&seen)
            .filter_map(|(c, s)| {
                let c = (*c)?;
                Some(if *s >= c {
                    s.duration_since(c).as_secs_f64() * 1e3
                } else {
                    -(c.duration_since(*s).as_secs_f64() * 1e3)
                })
            })
            .collect();
        lags_ms.sort_by(f64::total_cmp);
        Ok(Lag {
            rows: txs * tx_rows,
            txs: txs as usize,
            target_rows_per_s: s.rows_per_s,
            achieved_rows_per_s: (txs * tx_rows) as f64 / write.as_secs_f64(),
            lags_ms,
        })
    }
}

/// The `p`-th percentile (nearest rank) of sorted `v`; NaN when empty.
fn percentile(v: &[f64], p: usize) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = (p * v.len()).div_ceil(100).clamp(1, v.len());
    v.get(rank - 1).copied().unwrap_or(f64::NAN)
}

/// The sweep after the first step: upwards by 1.25x while sustained (or
/// downwards by 0.8x until one is), up to `max` rows/s; prints each step,
/// the highest rate sustained with p99 within `bound_ms` and what stopped
/// the sweep, then the lag at 80 % of that rate.
pub(crate) async fn sweep(
    l: &mut Lagger<'_>,
    first: &Lag,
    bound_ms: f64,
    max: u64,
    step: impl Fn(u64) -> Step,
) -> anyhow::Result<()> {
    let up = first.sustained(bound_ms);
    let mut best = up.then_some(first.achieved_rows_per_s);
    let mut rate = first.target_rows_per_s;
    // The lowest step that was not sustained (what stopped the sweep).
    let mut stopped: Option<Lag> = None;
    let mut first_stopped = !up;
    loop {
        rate = if up { rate * 5 / 4 } else { rate * 4 / 5 };
        if rate > max || rate < 1_000 {
            break;
        }
        let r = l
            .step(&step(rate))
            .await
            .with_context(|| format!("lag sweep at {rate} rows/s"))?;
        let ok = r.sustained(bound_ms);
        println!("lag_sweep sustained={ok} {r}");
        if ok {
            best = Some(best.map_or(r.achieved_rows_per_s, |b| b.max(r.achieved_rows_per_s)));
            if !up {
                break;
            }
        } else if up {
            stopped = Some(r);
            break;
        } else {
            first_stopped = false;
            stopped = Some(r);
        }
    }
    let why = match &stopped {
        Some(r) if r.achieved_rows_per_s < 0.95 * r.target_rows_per_s as f64 => format!(
            "the writer reached {:.0} of {} rows/s (the source's commits)",
            r.achieved_rows_per_s, r.target_rows_per_s
        ),
        Some(r) => format!(
            "lag p99 {:.1} ms > {bound_ms} ms at {} rows/s",
            r.p(99),
            r.target_rows_per_s
        ),
        None if up => format!("the sweep's limit {max} rows/s"),
        None => String::new(),
    };
    // Going down, the first step itself may be what stopped it.
    let why = match first_stopped {
        true if first.achieved_rows_per_s < 0.95 * first.target_rows_per_s as f64 => format!(
            "the writer reached {:.0} of {} rows/s (the source's commits)",
            first.achieved_rows_per_s, first.target_rows_per_s
        ),
        true => format!(
            "lag p99 {:.1} ms > {bound_ms} ms at {} rows/s",
            first.p(99),
            first.target_rows_per_s
        ),
        false => why,
    };
    let Some(best) = best else {
        println!("lag_highest_sustained_rows_per_s=none bound_ms={bound_ms} stopped_by=\"{why}\"");
        return Ok(());
    };
    println!(
        "lag_highest_sustained_rows_per_s={best:.0} bound_ms={bound_ms} secs={} stopped_by=\"{why}\"",
        step(0).secs
    );
    let at80 = (best * 0.8).round() as u64;
    let r = l
        .step(&step(at80))
        .await
        .context("lag at 80 % of the highest sustained rate")?;
    println!("lag_at_80pct_of_highest {r}");
    Ok(())
}
