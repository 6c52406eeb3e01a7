//! The web console (`GET /tcf/console`): one page, its script and its style
//! sheet, compiled into the binary (no CDN, works offline). The page asks
//! for a token and reads the routes every tool reads
//! (`/tcf/api/v1/overview`, `/tcf/api/v1/lag`); its switchover button runs
//! the dry run first, then the switch (`POST /tcf/switchover`), its failover
//! button `POST /tcf/failover`. Serving the assets needs no token; every
//! call the page makes carries the one typed in.
//!
//! Also here: what the console and `tcfctl status` show, assembled by the
//! worker ([`overview`]), and the lag samples behind the graph ([`lag`]).

pub(crate) mod lag;
mod overview;

use axum::{
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};

pub(crate) use overview::overview;

const INDEX: &str = include_str!("static/index.html");
const SCRIPT: &str = include_str!("static/console.js");
const STYLE: &str = include_str!("static/console.css");

/// Only this origin's own script and style; no frames, no inline code.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// `GET /tcf/console`: the page.
pub(crate) async fn index() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

/// `GET /tcf/console/console.js`.
pub(crate) async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

/// `GET /tcf/console/console.css`.
pub(crate) async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}
