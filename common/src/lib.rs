//! Code shared by the tcf binaries (`tcf-gateway`, `tcf-destination`,
//! `tcf-worker`); kept small on purpose.
//!
//! | module | what |
//! | --- | --- |
//! | [`config`] | load one section of the YAML config; errors naming file, line and key; durations, secrets, addresses ([`config::EXIT_CONFIG`]) |
//! | [`tls`] | mutual-TLS config structs, loading and checking PEM files into tonic configs, client identities |
//! | [`auth`] | bearer-token roles (`info` ⊂ `toggle` ⊂ `admin`) for the HTTP APIs |
//! | [`metrics`] | Prometheus recorder and `/metrics` rendering |
//! | [`telemetry`] | `tracing` setup (`RUST_LOG`, `TCF_LOG_FORMAT=json`) |
//! | [`http`] | serving an axum router with graceful shutdown |
//! | [`https`] | serving it over TLS; the CA trusted by `https://` requests |
//! | [`listen`] | bounded listeners: connection caps, timeouts, bounded shutdown, the open-file limit |
//! | [`http_client`] | minimal HTTP/1.1 client for the control APIs, `http://` and `https://` |
//! | `devcerts` | (feature `devcerts`) development CA and certificates; the `tcf-certs` binary |
//!
//! Conventions for config files are in `docs/config.md`.

pub mod auth;
pub mod cli;
pub mod config;
pub mod control;
#[cfg(any(feature = "devcerts", test))]
pub mod devcerts;
pub mod http;
pub mod http_client;
pub mod https;
pub mod listen;
pub mod metrics;
pub mod status;
pub mod telemetry;
pub mod tls;
