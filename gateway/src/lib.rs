//! `tcf-gateway`: not built yet; see the project's issues and `docs/`.
