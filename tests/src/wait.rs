//! Condition polling: the only way tests (and the harness itself) wait.
//!
//! A test never sleeps for a fixed time hoping that something has happened; it
//! polls a condition until it holds or a deadline passes. [`wait_until`] does
//! that and, on timeout, fails with an error naming what it waited for and the
//! last state it observed, so a failing test says *why* it failed.
//!
//! The polled closure may return any [`Condition`]:
//! * `bool`: `true` means done (the result is `()`);
//! * `Option<T>`: `Some(t)` means done with `t`;
//! * [`Outcome<T>`]: `Ready(t)`, `Pending(description of the current state)`
//!   or `Failed(why)` to give up at once;
//! * `Result<C, E>` of any of these: an `Err` counts as "not yet" (it is
//!   retried and reported as the last state), which is what polling a server
//!   that is still starting needs.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use anyhow::bail;
use tokio::time::Instant;

/// The default poll interval of [`wait_until`].
pub const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// A generous default deadline for conditions that involve starting or
/// synchronising servers (60 s). The machine running the suite may be slow and
/// busy; a deadline only bounds how long a *failing* test takes.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);

/// The result of one poll of a condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<T> {
    /// The condition holds; polling stops and returns the value.
    Ready(T),
    /// The condition does not hold yet; the string describes the observed
    /// state and is reported if the deadline passes.
    Pending(String),
    /// The condition can never hold (e.g. the server process exited): polling
    /// stops at once with an error carrying this description.
    Failed(String),
}

/// Something a polled closure can return: tells whether the condition holds.
pub trait Condition {
    /// What [`wait_until`] returns once the condition holds.
    type Output;
    /// Classifies this poll result as ready or pending (with a description).
    fn into_outcome(self) -> Outcome<Self::Output>;
}

impl<T> Condition for Outcome<T> {
    type Output = T;
    fn into_outcome(self) -> Outcome<T> {
        self
    }
}

impl Condition for bool {
    type Output = ();
    fn into_outcome(self) -> Outcome<()> {
        if self {
            Outcome::Ready(())
        } else {
            Outcome::Pending("condition was false".to_owned())
        }
    }
}

impl<T> Condition for Option<T> {
    type Output = T;
    fn into_outcome(self) -> Outcome<T> {
        match self {
            Some(v) => Outcome::Ready(v),
            None => Outcome::Pending("condition returned None".to_owned()),
        }
    }
}

impl<C: Condition, E: Display> Condition for Result<C, E> {
    type Output = C::Output;
    fn into_outcome(self) -> Outcome<C::Output> {
        match self {
            Ok(c) => c.into_outcome(),
            Err(e) => Outcome::Pending(format!("error: {e:#}")),
        }
    }
}

/// Polls `f` every [`POLL_INTERVAL`] until it reports ready or `deadline`
/// (measured from the call) passes, or fails at once on [`Outcome::Failed`].
///
/// `f` is always called at least once, and once more at the deadline if the
/// previous poll was earlier. On timeout the error reads
/// `timed out after {deadline:?} waiting for {what}; last state: {state}`.
pub async fn wait_until<F, Fut, C>(
    what: &str,
    deadline: Duration,
    f: F,
) -> anyhow::Result<C::Output>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = C>,
    C: Condition,
{
    wait_until_every(what, deadline, POLL_INTERVAL, f).await
}

/// Like [`wait_until`] with an explicit poll `interval`.
pub async fn wait_until_every<F, Fut, C>(
    what: &str,
    deadline: Duration,
    interval: Duration,
    mut f: F,
) -> anyhow::Result<C::Output>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = C>,
    C: Condition,
{
    let start = Instant::now();
    let end = start + deadline;
    let mut polls: u64 = 0;
    loop {
        polls += 1;
        let state = match f().await.into_outcome() {
            Outcome::Ready(v) => {
                tracing::trace!(what, polls, elapsed = ?start.elapsed(), "condition reached");
                return Ok(v);
            }
            Outcome::Pending(state) => state,
            Outcome::Failed(why) => bail!("gave up waiting for {what}: {why}"),
        };
        let now = Instant::now();
        if now >= end {
            bail!(
                "timed out after {deadline:?} waiting for {what} ({polls} polls); last state: {state}"
            );
        }
        tokio::time::sleep_until((now + interval).min(end)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_returns_value() {
        let mut n = 0;
        let v = wait_until("n to reach 3", DEFAULT_DEADLINE, || {
            n += 1;
            let cur = n;
            async move { (cur >= 3).then_some(cur) }
        })
        .await
        .expect("condition reached");
        assert_eq!(v, 3);
    }

    #[tokio::test]
    async fn timeout_names_what_and_last_state() {
        let err = wait_until("the impossible", Duration::from_millis(60), || async {
            Outcome::<()>::Pending("still impossible".to_owned())
        })
        .await
        .expect_err("must time out");
        let msg = err.to_string();
        assert!(msg.contains("the impossible"), "{msg}");
        assert!(msg.contains("still impossible"), "{msg}");
    }

    #[tokio::test]
    async fn errors_are_retried_and_reported() {
        let err = wait_until("an Ok", Duration::from_millis(60), || async {
            Err::<bool, _>(anyhow::anyhow!("boom"))
        })
        .await
        .expect_err("must time out");
        assert!(err.to_string().contains("boom"), "{err}");
    }
}
