//! The operator's start/stop switch of a replicator (gateway or
//! destination), with the newest term seen: a command carrying an older term
//! than one already seen is refused, so a deposed coordinator cannot undo
//! what a newer one decided.
//!
//! A term can only grow by [`MAX_TERM_JUMP`] per command once one was seen
//! (the federation's term grows by one per switch), so one mistaken or
//! hostile command cannot push it out of the coordinator's reach; an
//! `admin` command with `"reset": true` sets it back (`docs/gateway.md`).

use std::sync::{Mutex, PoisonError};

/// How far past the newest term seen a command's term may be.
pub const MAX_TERM_JUMP: u64 = 1000;

pub use tcf_api::replicator::Command;

/// Why a command's term was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TermError {
    /// Older than the newest term seen.
    #[error("term {got} is older than the newest term seen, {seen}")]
    Stale {
        /// The term in the command.
        got: u64,
        /// The newest term seen.
        seen: u64,
    },
    /// Further past the newest term seen than [`MAX_TERM_JUMP`].
    #[error(
        "term {got} is more than {MAX_TERM_JUMP} past the newest term seen, {seen} (an admin may send \"reset\": true)"
    )]
    TooFar {
        /// The term in the command.
        got: u64,
        /// The newest term seen.
        seen: u64,
    },
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

    /// Sets running/stopped; refuses a term older than the newest seen, or
    /// more than [`MAX_TERM_JUMP`] past it once one was seen, and records a
    /// newer one. `reset` records `term` whatever the newest seen was.
    /// Returns whether running/stopped changed.
    pub fn set(&self, run: bool, term: Option<u64>, reset: bool) -> Result<bool, TermError> {
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = term {
            let seen = g.1;
            if !reset && t < seen {
                return Err(TermError::Stale { got: t, seen });
            }
            if !reset && seen > 0 && t - seen > MAX_TERM_JUMP {
                return Err(TermError::TooFar { got: t, seen });
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

/// Applies a start (`true`) or stop with an optional term and the reset
/// flag; returns `(running, newest term)`.
pub trait Apply: Fn(bool, Option<u64>, bool) -> Result<(bool, u64), TermError> {}
impl<F: Fn(bool, Option<u64>, bool) -> Result<(bool, u64), TermError>> Apply for F {}

/// The routes `POST /api/v1/start` and `POST /api/v1/stop` of a replicator
/// (gateway or destination), to merge into its router.
///
/// The bearer token (role `toggle`) is checked by a route layer **before
/// any byte of the body is read**: a request without a valid token is
/// answered 401/403 from its headers alone. The body is then capped at
/// [`MAX_BODY`] (413 beyond), parsed as a [`Command`] (400 when bad; a
/// `reset` needs the `admin` role, 403 otherwise), and `apply(run, term,
/// reset)` answers `{"running", "term"}`, or 409 for a refused term.
pub fn router<S>(
    tokens: std::sync::Arc<crate::auth::Tokens>,
    apply: impl Apply + Clone + Send + Sync + 'static,
) -> axum::Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    use crate::auth::Role;
    use axum::{Extension, extract::DefaultBodyLimit, middleware, routing::post};
    let guard = crate::auth::RoleGuard::new(tokens, Role::Toggle);
    let (start, stop) = (apply.clone(), apply);
    axum::Router::new()
        .route(
            "/api/v1/start",
            post(
                move |Extension(role): Extension<Role>, body: axum::body::Bytes| async move {
                    respond(&body, true, role, &start)
                },
            ),
        )
        .route(
            "/api/v1/stop",
            post(
                move |Extension(role): Extension<Role>, body: axum::body::Bytes| async move {
                    respond(&body, false, role, &stop)
                },
            ),
        )
        .route_layer(middleware::from_fn_with_state(
            guard,
            crate::auth::require_role,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

fn respond(
    body: &[u8],
    run: bool,
    role: crate::auth::Role,
    apply: &impl Apply,
) -> axum::response::Response {
    use axum::{Json, http::StatusCode, response::IntoResponse};
    use serde_json::json;
    let cmd = match Command::parse(body) {
        Ok(c) => c,
        Err(e) => {
            let error = json!({ "error": format!("bad body: {e}") });
            return (StatusCode::BAD_REQUEST, Json(error)).into_response();
        }
    };
    if cmd.reset && !role.allows(crate::auth::Role::Admin) {
        let error = json!({ "error": format!("role {role} cannot reset the term (needs admin)") });
        return (StatusCode::FORBIDDEN, Json(error)).into_response();
    }
    match apply(run, cmd.term, cmd.reset) {
        Ok((running, term)) => {
            Json(tcf_api::replicator::CommandAnswer { running, term }).into_response()
        }
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
        assert_eq!(c.set(false, Some(5), false), Ok(true));
        assert_eq!(
            c.set(true, Some(4), false),
            Err(TermError::Stale { got: 4, seen: 5 })
        );
        assert_eq!(c.state(), (false, 5));
        assert_eq!(c.set(true, None, false), Ok(true));
        assert_eq!(c.state(), (true, 5));
        assert!(Command::parse(b" ").unwrap().term.is_none());
        assert_eq!(Command::parse(br#"{"term": 7}"#).unwrap().term, Some(7));
        assert!(Command::parse(br#"{"tern": 7}"#).is_err());
    }

    #[test]
    fn a_huge_term_cannot_lock_the_coordinator_out() {
        let c = Control::new();
        assert_eq!(c.set(true, Some(3), false), Ok(false));
        let far = Some(u64::MAX);
        assert_eq!(
            c.set(false, far, false),
            Err(TermError::TooFar {
                got: u64::MAX,
                seen: 3
            })
        );
        assert_eq!(c.state(), (true, 3));
        assert!(c.set(false, Some(3 + MAX_TERM_JUMP), false).is_ok());
        // A reset (admin) sets it back, even downwards.
        assert_eq!(c.set(true, Some(2), true), Ok(true));
        assert_eq!(c.state(), (true, 2));
        assert!(
            Command::parse(br#"{"term": 1, "reset": true}"#)
                .unwrap()
                .reset
        );
    }
}
