//! A request body that must arrive whole within a deadline.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::accept::count_timeout;

/// The body did not arrive whole within the body timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimeout(pub Duration);

/// [`Incoming`] with a deadline counted from the request head: a frame still
/// missing at the deadline ends the body with [`BodyTimeout`] (the handler
/// that reads it fails, and the connection is closed). A body nobody reads
/// costs nothing: the timer starts at the first poll that waits.
pub(crate) struct TimedBody {
    inner: Incoming,
    deadline: Instant,
    after: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    listener: &'static str,
    failed: bool,
}

impl TimedBody {
    pub(crate) fn new(inner: Incoming, after: Duration, listener: &'static str) -> Self {
        Self {
            inner,
            deadline: Instant::now() + after,
            after,
            timer: None,
            listener,
            failed: false,
        }
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.as_mut().poll(cx).is_ready() {
            this.failed = true;
            count_timeout(this.listener, "body");
            tracing::info!(
                listener = this.listener,
                "request body not complete within {:?}: closing the connection",
                this.after
            );
            return Poll::Ready(Some(Err(BodyTimeout(this.after).into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
