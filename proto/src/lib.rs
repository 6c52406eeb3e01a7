//! The gRPC contract between `tcf-gateway` and `tcf-destination`.
//!
//! Not built yet: the stream's `.proto` and its generated code arrive with the
//! gateway issue. This crate exists so that the workspace layout is final.
