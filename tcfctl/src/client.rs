//! Talking to the workers: several URLs, the first that answers; a bearer
//! token; `https://` trusting only the CA given. Every answer is parsed as
//! its `tcf_api` type, every failure becomes a [`CtlError`] with its exit
//! status.

use std::time::Duration;

use serde::de::DeserializeOwned;
use tcf_api::operator::ErrorBody;
use tcf_common::{
    http_client::{HttpClientError, HttpResponse, request_with},
    https::HttpsRoots,
};

/// Exit statuses (`tcfctl --help` lists them).
pub(crate) mod exit {
    /// Done (a dry run: every precheck passed).
    pub(crate) const OK: i32 = 0;
    /// It failed: rolled back, a replicator or instance failed, an
    /// unexpected answer.
    pub(crate) const FAILED: i32 = 1;
    /// Bad arguments, unreadable token or CA file.
    pub(crate) const USAGE: i32 = 2;
    /// Refused: a precheck failed, or the state does not allow it (409).
    pub(crate) const REFUSED: i32 = 3;
    /// No worker answered, or etcd is unavailable (503).
    pub(crate) const UNAVAILABLE: i32 = 4;
    /// No outcome within the timeout; the switch may still finish.
    pub(crate) const TIMEOUT: i32 = 5;
    /// The token is missing, unknown (401) or its role too low (403).
    pub(crate) const UNAUTHORIZED: i32 = 6;
}

/// Why a command did not succeed; each kind has its exit status.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CtlError {
    /// Bad arguments or local files.
    #[error("{0}")]
    Usage(String),
    /// No worker answered, or the worker could not reach etcd.
    #[error("{0}")]
    Unavailable(String),
    /// The token was refused.
    #[error("{url}: {status}: {error}")]
    Unauthorized {
        /// The worker.
        url: String,
        /// 401 or 403.
        status: u16,
        /// What it said.
        error: String,
    },
    /// The worker refused (precheck, state).
    #[error("refused: {0}")]
    Refused(String),
    /// It failed.
    #[error("failed: {0}")]
    Failed(String),
    /// No outcome in time.
    #[error("no outcome: {0}")]
    Timeout(String),
}

impl CtlError {
    /// The process exit status for this error.
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            Self::Usage(_) => exit::USAGE,
            Self::Unavailable(_) => exit::UNAVAILABLE,
            Self::Unauthorized { .. } => exit::UNAUTHORIZED,
            Self::Refused(_) => exit::REFUSED,
            Self::Failed(_) => exit::FAILED,
            Self::Timeout(_) => exit::TIMEOUT,
        }
    }
}

/// The workers and how to reach them.
#[derive(Debug)]
pub(crate) struct Client {
    urls: Vec<String>,
    token: Option<String>,
    roots: Option<HttpsRoots>,
    timeout: Duration,
}

/// One worker's answer.
#[derive(Debug)]
pub(crate) struct Answer {
    /// The worker that answered.
    pub(crate) url: String,
    /// Its answer.
    pub(crate) response: HttpResponse,
}

impl Answer {
    /// The body as `T`, or a [`CtlError::Failed`] naming the worker.
    pub(crate) fn parse<T: DeserializeOwned>(&self) -> Result<T, CtlError> {
        serde_json::from_str(&self.response.body).map_err(|e| {
            CtlError::Failed(format!(
                "{} answered {} with an unexpected body ({e}): {}",
                self.url,
                self.response.status,
                self.response.body.trim()
            ))
        })
    }

    /// The `error` of an error body, or the raw body.
    pub(crate) fn error_text(&self) -> String {
        serde_json::from_str::<ErrorBody>(&self.response.body)
            .map(|e| e.error)
            .unwrap_or_else(|_| self.response.body.trim().to_owned())
    }

    /// The error every command maps these statuses to: 401/403
    /// unauthorized, 503 unavailable; `None` for any other status.
    pub(crate) fn common_error(&self) -> Option<CtlError> {
        match self.response.status {
            401 | 403 => Some(CtlError::Unauthorized {
                url: self.url.clone(),
                status: self.response.status,
                error: self.error_text(),
            }),
            503 => Some(CtlError::Unavailable(format!(
                "{}: {}",
                self.url,
                self.error_text()
            ))),
            _ => None,
        }
    }
}

impl Answer {
    /// This answer when it is a 200; otherwise the error it means: the
    /// common ones ([`Answer::common_error`]), a 409 as a refusal, anything
    /// else as a failure naming the worker and the status.
    pub(crate) fn accepted(self) -> Result<Self, CtlError> {
        if let Some(e) = self.common_error() {
            return Err(e);
        }
        match self.response.status {
            200 => Ok(self),
            409 => Err(CtlError::Refused(format!(
                "{}: {}",
                self.url,
                self.error_text()
            ))),
            s => Err(CtlError::Failed(format!(
                "{} answered {s}: {}",
                self.url,
                self.error_text()
            ))),
        }
    }
}

impl Client {
    /// A client for `urls` (tried in order) sending `token`, trusting
    /// `roots` for `https://`, each request bounded by `timeout`.
    pub(crate) fn new(
        urls: Vec<String>,
        token: Option<String>,
        roots: Option<HttpsRoots>,
        timeout: Duration,
    ) -> Self {
        Self {
            urls,
            token,
            roots,
            timeout,
        }
    }

    /// The limit of each read request.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The worker URLs, in the order tried.
    pub(crate) fn urls(&self) -> &[String] {
        &self.urls
    }

    async fn send(
        &self,
        url: &str,
        method: &str,
        path: &str,
        body: Option<&str>,
        timeout: Duration,
    ) -> Result<HttpResponse, HttpClientError> {
        request_with(
            self.roots.as_ref(),
            method,
            url,
            path,
            self.token.as_deref(),
            body,
            timeout,
        )
        .await
    }

    /// `GET path` of the first worker that answers (any HTTP status).
    pub(crate) async fn get(&self, path: &str) -> Result<Answer, CtlError> {
        let mut errors = Vec::new();
        for url in &self.urls {
            match self.send(url, "GET", path, None, self.timeout).await {
                Ok(response) => {
                    return Ok(Answer {
                        url: url.clone(),
                        response,
                    });
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        Err(no_worker(&errors))
    }

    /// `GET path` of `url` only.
    pub(crate) async fn get_from(&self, url: &str, path: &str) -> Result<Answer, CtlError> {
        let response = self
            .send(url, "GET", path, None, self.timeout)
            .await
            .map_err(|e| CtlError::Unavailable(e.to_string()))?;
        Ok(Answer {
            url: url.to_owned(),
            response,
        })
    }

    /// The first worker that answers `GET /tcf/is_active` (no token), so
    /// that a request which changes something is sent exactly once.
    pub(crate) async fn pick(&self) -> Result<String, CtlError> {
        let mut errors = Vec::new();
        for url in &self.urls {
            match self
                .send(url, "GET", "/tcf/is_active", None, self.timeout)
                .await
            {
                Ok(_) => return Ok(url.clone()),
                Err(e) => errors.push(e.to_string()),
            }
        }
        Err(no_worker(&errors))
    }

    /// `POST path` with a JSON `body` to `url`, waiting up to `wait`. Not
    /// retried anywhere: the worker may have acted.
    pub(crate) async fn post(
        &self,
        url: &str,
        path: &str,
        body: Option<&str>,
        wait: Duration,
    ) -> Result<Answer, CtlError> {
        match self.send(url, "POST", path, body, wait).await {
            Ok(response) => Ok(Answer {
                url: url.to_owned(),
                response,
            }),
            Err(e @ HttpClientError::Timeout { .. }) => Err(CtlError::Timeout(format!(
                "{e}; the operation may still complete: see `tcfctl status`"
            ))),
            Err(e) => Err(CtlError::Failed(format!(
                "{e}; the worker may have acted: see `tcfctl status`"
            ))),
        }
    }
}

fn no_worker(errors: &[String]) -> CtlError {
    CtlError::Unavailable(format!("no worker answers: {}", errors.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            url: "http://w:1".into(),
            response: HttpResponse {
                status,
                body: body.into(),
            },
        }
    }

    #[test]
    fn statuses_map_to_exit_codes() {
        let e = answer(401, r#"{"error":"missing token"}"#).common_error();
        assert!(
            matches!(&e, Some(CtlError::Unauthorized { status: 401, error, .. }) if error == "missing token")
        );
        assert_eq!(e.map(|e| e.exit_code()), Some(exit::UNAUTHORIZED));
        let e = answer(503, r#"{"error":"etcd: down"}"#).common_error();
        assert_eq!(e.map(|e| e.exit_code()), Some(exit::UNAVAILABLE));
        assert!(answer(409, "{}").common_error().is_none());
        assert_eq!(answer(500, "plain text ").error_text(), "plain text");
    }

    #[test]
    fn a_body_of_the_wrong_shape_is_a_failure_naming_the_worker() {
        let e = answer(200, "[]")
            .parse::<tcf_api::operator::ErrorBody>()
            .expect_err("not an error body");
        assert_eq!(e.exit_code(), exit::FAILED);
        assert!(e.to_string().contains("http://w:1"), "{e}");
    }
}
