//! `tcf-destination`: not built yet; see the project's issues and `docs/`.
