//! The operator's start/stop switch of a replicator (gateway or
//! destination), with the newest term seen: a command carrying an older term
//! than one already seen is refused, so a deposed coordinator cannot undo
//! what a newer one decided.

use std::sync::{Mutex, PoisonError};

use serde::Deserialize;

/// A start/stop command's body: `{"term": N}` (optional).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// The coordinator's term, if it sends one.
    pub term: Option<u64>,
}

impl Command {
    /// Parses a body; an empty or blank body is a command without a term.
    pub fn parse(body: &[u8]) -> Result<Self, serde_json::Error> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        serde_json::from_slice(body)
    }
}

/// A command older than the newest term seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("term {got} is older than the newest term seen, {seen}")]
pub struct StaleTerm {
    /// The term in the command.
    pub got: u64,
    /// The newest term seen.
    pub seen: u64,
}

/// Whether the replicator runs, and the newest term seen.
#[derive(Debug, Default)]
pub struct Control {
    inner: Mutex<(bool, u64)>,
}

impl Control {
    /// Running, term 0.
    pub fn new() -> Self {
        Self {
            inner: Mutex::new((true, 0)),
        }
    }

    /// `(running, newest term)`.
    pub fn state(&self) -> (bool, u64) {
        *self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets running/stopped; refuses a term older than the newest seen and
    /// records a newer one. Returns whether the state changed.
    pub fn set(&self, run: bool, term: Option<u64>) -> Result<bool, StaleTerm> {
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = term {
            if t < g.1 {
                return Err(StaleTerm { got: t, seen: g.1 });
            }
            g.1 = t;
        }
        let changed = g.0 != run;
        g.0 = run;
        Ok(changed)
    }
}

/// The largest start/stop body accepted: `{"term": N}` needs under 40
/// bytes; a larger body is refused with 413 after reading at most this.
pub const MAX_BODY: usize = 4096;

/// Applies a start (`true`) or stop with an optional term; returns
/// `(running, newest term)`.
pub trait Apply: Fn(bool, Option<u64>) -> Result<(bool, u64), StaleTerm> {}
impl<F: Fn(bool, Option<u64>) -> Result<(bool, u64), StaleTerm>> Apply for F {}

/// The routes `POST /api/v1/start` and `POST /api/v1/stop` of a replicator
/// (gateway or destination), to merge into its router.
///
/// The bearer token (role `toggle`) is checked by a route layer **before
/// any byte of the body is read**: a request without a valid token is
/// answered 401/403 from its headers alone. The body is then capped at
/// [`MAX_BODY`] (413 beyond), parsed as a [`Command`] (400 when bad), and
/// `apply(run, term)` answers `{"running", "term"}`, or 409 for a stale
/// term.
pub fn router<S>(
    tokens: std::sync::Arc<crate::auth::Tokens>,
    apply: impl Apply + Clone + Send + Sync + 'static,
) -> axum::Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    use axum::{extract::DefaultBodyLimit, middleware, routing::post};
    let guard = crate::auth::RoleGuard::new(tokens, crate::auth::Role::Toggle);
    let (start, stop) = (apply.clone(), apply);
    axum::Router::new()
        .route(
            "/api/v1/start",
            post(move |body: axum::body::Bytes| async move { respond(&body, true, &start) }),
        )
        .route(
            "/api/v1/stop",
            post(move |body: axum::body::Bytes| async move { respond(&body, false, &stop) }),
        )
        .route_layer(middleware::from_fn_with_state(
            guard,
            crate::auth::require_role,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

fn respond(body: &[u8], run: bool, apply: &impl Apply) -> axum::response::Response {
    use axum::{Json, http::StatusCode, response::IntoResponse};
    use serde_json::json;
    let cmd = match Command::parse(body) {
        Ok(c) => c,
        Err(e) => {
            let error = json!({ "error": format!("bad body: {e}") });
            return (StatusCode::BAD_REQUEST, Json(error)).into_response();
        }
    };
    match apply(run, cmd.term) {
        Ok((running, term)) => Json(json!({ "running": running, "term": term })).into_response(),
        Err(e) => (
            StatusCode::CONFLICT,
            Json(json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_terms_are_refused() {
        let c = Control::new();
        assert_eq!(c.set(false, Some(5)), Ok(true));
        assert_eq!(c.set(true, Some(4)), Err(StaleTerm { got: 4, seen: 5 }));
        assert_eq!(c.state(), (false, 5));
        assert_eq!(c.set(true, None), Ok(true));
        assert_eq!(c.state(), (true, 5));
        assert!(Command::parse(b" ").unwrap().term.is_none());
        assert_eq!(Command::parse(br#"{"term": 7}"#).unwrap().term, Some(7));
        assert!(Command::parse(br#"{"tern": 7}"#).is_err());
    }
}
