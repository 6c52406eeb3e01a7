//! Bearer-token roles for the HTTP APIs of the gateway, destination and
//! worker.
//!
//! Three roles, each including the one before: [`Role::Info`] (read state),
//! [`Role::Toggle`] (switch the active cluster, start/stop replication) and
//! [`Role::Admin`] (everything). A request carries `Authorization: Bearer
//! TOKEN`; the token's role must be at least the role the route needs.
//!
//! Configuration (`auth:` in each binary's section):
//!
//! ```yaml
//! auth:
//!   tokens:
//!     - {role: info, token: "..."}                  # inline
//!     - {role: toggle, token_file: /etc/tcf/toggle} # file, trimmed
//!     - {role: admin, token_env: TCF_ADMIN_TOKEN}   # environment variable
//! ```
//!
//! **Authentication is never off by default.** Without an `auth:` section
//! there are no tokens, so every protected route answers 401. Turning it off
//! takes an explicit `auth: {disabled: true}` (then every request has the
//! admin role). Which routes are protected is the binary's choice (the load
//! balancer's `GET /tcf/is_active` is not).
//!
//! Tokens are stored as SHA-256 digests and compared in constant time.

use std::{path::PathBuf, sync::Arc};

use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use ring::digest::{SHA256, digest};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::config::{ConfigError, Secret, resolve_secret};

/// An API role. Ordered: `Info < Toggle < Admin`, and a role may do what any
/// lower role may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read status and info.
    Info,
    /// Switch the active cluster; start and stop replication.
    Toggle,
    /// Everything, including resync and destructive operations.
    Admin,
}

impl Role {
    /// The role's config name: `info`, `toggle` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Info => "info",
            Role::Toggle => "toggle",
            Role::Admin => "admin",
        }
    }

    /// What the role allows, for messages ("role info cannot toggle").
    fn verb(self) -> &'static str {
        match self {
            Role::Info => "read info",
            Role::Toggle => "toggle",
            Role::Admin => "administer",
        }
    }

    /// Whether this role may do what `need` allows.
    pub fn allows(self, need: Role) -> bool {
        self >= need
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `auth:` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Turn authentication off (every request is admin). Must be explicit;
    /// not allowed together with `tokens`.
    #[serde(default)]
    pub disabled: bool,
    /// The accepted tokens.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
}

/// One accepted token: exactly one of `token` / `token_file`, or
/// `token_env` (which, when the variable is set, wins; see
/// [`resolve_secret`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The token's role.
    pub role: Role,
    /// The token itself.
    #[serde(default)]
    pub token: Option<Secret>,
    /// A file holding the token (surrounding whitespace is trimmed).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// An environment variable holding the token.
    #[serde(default)]
    pub token_env: Option<String>,
}

/// The loaded tokens (digests and roles), or "authentication disabled".
#[derive(Clone, Default)]
pub struct Tokens {
    disabled: bool,
    entries: Vec<(Role, [u8; 32])>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let roles: Vec<Role> = self.entries.iter().map(|(r, _)| *r).collect();
        f.debug_struct("Tokens")
            .field("disabled", &self.disabled)
            .field("roles", &roles)
            .finish()
    }
}

fn sha256(token: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, token).as_ref());
    out
}

impl Tokens {
    /// Loads the `auth:` section found at `key` (e.g. `worker.auth`; used in
    /// errors). `None` (no section) gives no tokens: every check fails.
    ///
    /// Errors: `disabled: true` together with tokens; a section that is
    /// neither disabled nor has tokens; a token whose secret cannot be
    /// resolved; the same token configured twice.
    pub fn load(key: &str, cfg: Option<&AuthConfig>) -> Result<Tokens, ConfigError> {
        let Some(cfg) = cfg else {
            return Ok(Tokens::default());
        };
        if cfg.disabled {
            if !cfg.tokens.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{key}.disabled"),
                    "'disabled: true' cannot be combined with tokens",
                ));
            }
            return Ok(Tokens::disabled());
        }
        if cfg.tokens.is_empty() {
            return Err(ConfigError::invalid(
                format!("{key}.tokens"),
                "no tokens: configure at least one, or set 'disabled: true' to turn \
                 authentication off",
            ));
        }
        let mut entries: Vec<(Role, [u8; 32])> = Vec::new();
        for (i, t) in cfg.tokens.iter().enumerate() {
            let token_key = format!("{key}.tokens[{i}].token");
            let secret = resolve_secret(
                &token_key,
                t.token.clone(),
                t.token_file.as_deref(),
                t.token_env.as_deref().unwrap_or(""),
            )?;
            let hash = sha256(secret.expose().as_bytes());
            if entries.iter().any(|(_, h)| *h == hash) {
                return Err(ConfigError::invalid(
                    token_key,
                    "the same token is configured twice",
                ));
            }
            entries.push((t.role, hash));
        }
        Ok(Tokens {
            disabled: false,
            entries,
        })
    }

    /// Authentication off: every request is [`Role::Admin`].
    pub fn disabled() -> Tokens {
        Tokens {
            disabled: true,
            entries: Vec::new(),
        }
    }

    /// Tokens given directly (tests, tools).
    pub fn from_secrets<'a>(tokens: impl IntoIterator<Item = (Role, &'a Secret)>) -> Tokens {
        Tokens {
            disabled: false,
            entries: tokens
                .into_iter()
                .map(|(role, s)| (role, sha256(s.expose().as_bytes())))
                .collect(),
        }
    }

    /// Whether authentication is off.
    pub fn is_disabled(&self) -> bool {
        self.disabled
    }

    /// The number of configured tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no token is configured (then only a disabled config lets
    /// requests through).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The role of `token`, if it is configured. Compares against every
    /// configured digest in constant time.
    pub fn role_of(&self, token: &str) -> Option<Role> {
        let hash = sha256(token.as_bytes());
        let mut found = None;
        for (role, h) in &self.entries {
            if bool::from(h.ct_eq(&hash)) {
                found = found.max(Some(*role));
            }
        }
        found
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Authorization: Bearer` header (401).
    #[error("missing bearer token")]
    Missing,
    /// An `Authorization` header that is not `Bearer TOKEN` (401).
    #[error("malformed authorization header, expected 'Bearer TOKEN'")]
    Malformed,
    /// A token that is not configured (401).
    #[error("unknown token")]
    Unknown,
    /// A valid token whose role is too low (403).
    #[error("role {have} cannot {}", need.verb())]
    Forbidden {
        /// The token's role.
        have: Role,
        /// The role the route needs.
        need: Role,
    },
}

impl AuthError {
    /// 401 for authentication failures, 403 for a too-low role.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::Forbidden { .. } => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        }
    }
}

impl IntoResponse for AuthError {
    /// The status of [`AuthError::status`], JSON body `{"error": "..."}`,
    /// and `WWW-Authenticate: Bearer` on a 401.
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::json!({ "error": self.to_string() }).to_string();
        let mut response = (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Checks that the request's bearer token has at least role `need`.
/// Returns the token's role ([`Role::Admin`] when authentication is
/// disabled). The scheme `Bearer` is case-insensitive.
pub fn check(tokens: &Tokens, headers: &HeaderMap, need: Role) -> Result<Role, AuthError> {
    if tokens.disabled {
        return Ok(Role::Admin);
    }
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(AuthError::Missing)?;
    let value = value.to_str().map_err(|_| AuthError::Malformed)?.trim();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    let have = tokens.role_of(token).ok_or(AuthError::Unknown)?;
    if have.allows(need) {
        Ok(have)
    } else {
        Err(AuthError::Forbidden { have, need })
    }
}

/// State for [`require_role`]: the tokens and the role a group of routes
/// needs.
#[derive(Debug, Clone)]
pub struct RoleGuard {
    /// The tokens.
    pub tokens: Arc<Tokens>,
    /// The role needed.
    pub need: Role,
}

impl RoleGuard {
    /// A guard requiring `need`.
    pub fn new(tokens: Arc<Tokens>, need: Role) -> Self {
        Self { tokens, need }
    }
}

/// axum middleware running [`check`]; on success the granted [`Role`] is put
/// in the request's extensions. Use with
/// `axum::middleware::from_fn_with_state(RoleGuard::new(tokens, Role::Toggle), require_role)`
/// as a `route_layer`.
pub async fn require_role(
    State(guard): State<RoleGuard>,
    mut request: Request,
    next: Next,
) -> Response {
    match check(&guard.tokens, request.headers(), guard.need) {
        Ok(role) => {
            request.extensions_mut().insert(role);
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::{Router, body::Body, routing::get};
    use tower::ServiceExt;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    fn tokens() -> Tokens {
        let cfg: AuthConfig = serde_saphyr::from_str(
            "tokens:\n  - {role: info, token: i-token}\n  - {role: toggle, token: t-token}\n  \
             - {role: admin, token: a-token}\n",
        )
        .unwrap();
        Tokens::load("worker.auth", Some(&cfg)).unwrap()
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Admin.allows(Role::Toggle) && Role::Admin.allows(Role::Info));
        assert!(Role::Toggle.allows(Role::Info) && !Role::Toggle.allows(Role::Admin));
        assert!(!Role::Info.allows(Role::Toggle));
    }

    #[test]
    fn check_grants_by_role() {
        let t = tokens();
        assert_eq!(
            check(&t, &headers(Some("Bearer i-token")), Role::Info),
            Ok(Role::Info)
        );
        assert_eq!(
            check(&t, &headers(Some("bearer t-token")), Role::Info),
            Ok(Role::Toggle)
        );
        assert_eq!(
            check(&t, &headers(Some("Bearer a-token")), Role::Admin),
            Ok(Role::Admin)
        );
        assert_eq!(
            check(&t, &headers(Some("Bearer i-token")), Role::Toggle),
            Err(AuthError::Forbidden {
                have: Role::Info,
                need: Role::Toggle
            })
        );
        assert_eq!(
            check(&t, &headers(None), Role::Info),
            Err(AuthError::Missing)
        );
        assert_eq!(
            check(&t, &headers(Some("Bearer ")), Role::Info),
            Err(AuthError::Missing)
        );
        assert_eq!(
            check(&t, &headers(Some("Basic dTpw")), Role::Info),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            check(&t, &headers(Some("Bearer nope")), Role::Info),
            Err(AuthError::Unknown)
        );
        assert_eq!(
            AuthError::Forbidden {
                have: Role::Info,
                need: Role::Toggle
            }
            .to_string(),
            "role info cannot toggle"
        );
    }

    #[test]
    fn no_section_denies_everything_and_disabled_must_be_explicit() {
        let none = Tokens::load("worker.auth", None).unwrap();
        assert!(none.is_empty() && !none.is_disabled());
        assert_eq!(
            check(&none, &headers(None), Role::Info),
            Err(AuthError::Missing)
        );
        assert_eq!(
            check(&none, &headers(Some("Bearer x")), Role::Info),
            Err(AuthError::Unknown)
        );

        let off: AuthConfig = serde_saphyr::from_str("disabled: true\n").unwrap();
        let off = Tokens::load("worker.auth", Some(&off)).unwrap();
        assert_eq!(check(&off, &headers(None), Role::Admin), Ok(Role::Admin));

        let empty: AuthConfig = serde_saphyr::from_str("tokens: []\n").unwrap();
        let e = Tokens::load("worker.auth", Some(&empty)).unwrap_err();
        assert_eq!(e.key(), Some("worker.auth.tokens"));

        let both: AuthConfig =
            serde_saphyr::from_str("disabled: true\ntokens: [{role: info, token: x}]\n").unwrap();
        assert!(Tokens::load("worker.auth", Some(&both)).is_err());

        let dup: AuthConfig =
            serde_saphyr::from_str("tokens: [{role: info, token: x}, {role: admin, token: x}]\n")
                .unwrap();
        let e = Tokens::load("worker.auth", Some(&dup)).unwrap_err();
        assert_eq!(e.key(), Some("worker.auth.tokens[1].token"));

        let unknown = serde_saphyr::from_str::<AuthConfig>("tokens: [{role: root, token: x}]\n");
        assert!(unknown.is_err());
    }

    #[test]
    fn token_from_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tok");
        std::fs::write(&file, "file-token\n").unwrap();
        let cfg = AuthConfig {
            disabled: false,
            tokens: vec![TokenConfig {
                role: Role::Toggle,
                token: None,
                token_file: Some(file),
                token_env: None,
            }],
        };
        let t = Tokens::load("gateway.auth", Some(&cfg)).unwrap();
        assert_eq!(t.role_of("file-token"), Some(Role::Toggle));
        assert!(!format!("{t:?}").contains("file-token"));
    }

    async fn call(app: Router, auth: Option<&str>) -> (StatusCode, Option<String>, String) {
        let mut req = axum::http::Request::builder().uri("/tcf/toggle");
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let resp = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let status = resp.status();
        let www = resp
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, www, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn middleware_and_json_errors() {
        let guard = RoleGuard::new(Arc::new(tokens()), Role::Toggle);
        let app = Router::new()
            .route(
                "/tcf/toggle",
                get(|axum::Extension(role): axum::Extension<Role>| async move { role.to_string() }),
            )
            .route_layer(axum::middleware::from_fn_with_state(guard, require_role));

        let (status, www, body) = call(app.clone(), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(www.as_deref(), Some("Bearer"));
        assert_eq!(body, r#"{"error":"missing bearer token"}"#);

        let (status, _, body) = call(app.clone(), Some("Bearer wrong")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body, r#"{"error":"unknown token"}"#);

        let (status, www, body) = call(app.clone(), Some("Bearer i-token")).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(www, None);
        assert_eq!(body, r#"{"error":"role info cannot toggle"}"#);

        let (status, _, body) = call(app, Some("Bearer a-token")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "admin");
    }
}
