//! Test harness for tcf: starts **real** servers for integration tests.
//!
//! * [`Replicaset`] / [`Tarantool`]: `tarantool` processes (a master and
//!   read-only replicas) built from a typed description ([`TarantoolOptions`],
//!   [`SpaceSpec`], [`UserSpec`], [`Grant`]) turned into a generated `init.lua`.
//! * [`Etcd`]: a single-member `etcd`.
//! * [`wait_until`]: condition polling. Tests wait on conditions, never on
//!   fixed sleeps.
//! * [`binary`]: which `tarantool` runs (`TCF_TARANTOOL`, and per side of a
//!   federation `TCF_TARANTOOL_SOURCE` / `TCF_TARANTOOL_TARGET`).
//! * [`skip()`]: a test that cannot run on the Tarantool under test says why;
//!   the skip is recorded and counted by `scripts/test.sh`.
//!
//! # Usage
//!
//! ```no_run
//! use tcf_tests::{Etcd, SpaceSpec, TarantoolOptions, DEFAULT_DEADLINE};
//!
//! #[tokio::test]
//! async fn copies_a_row() {
//!     tcf_tests::init_tracing();
//!     let rs = TarantoolOptions::new("a1")
//!         .replicas(1)
//!         .space(SpaceSpec::new("test"))
//!         .start_replicaset()
//!         .await
//!         .expect("replicaset");
//!     rs.master().eval("box.space.test:insert{1, 'x'}", &[]).await.expect("insert");
//!     rs.replicas()[0]
//!         .wait_lua("row 1 replicated", "return box.space.test:get{1} ~= nil", DEFAULT_DEADLINE)
//!         .await
//!         .expect("replicated");
//!     let etcd = Etcd::start().await.expect("etcd");
//!     println!("etcd at {}", etcd.endpoint());
//! }
//! # fn main() {}
//! ```
//!
//! # Guarantees
//!
//! * Every server listens on `127.0.0.1` on a port reserved through
//!   [`PortLease`], which is exclusive across concurrently running test
//!   processes; a server whose port is nevertheless taken is restarted on a
//!   fresh one.
//! * Every server runs as a child process in its own temporary directory with
//!   its log there. Dropping the handle stops the process (`SIGTERM`, then
//!   `SIGKILL`) and deletes the directory; if the test is panicking the
//!   directory is kept and the log tail is printed to stderr (set
//!   `TCF_KEEP_TEST_DIRS=1` to keep it always). Prefer `expect`/`assert!` over
//!   returning `Err` from a test: only a panic is seen as a failure here.
//! * A killed test process leaves nothing behind: every child gets
//!   `PR_SET_PDEATHSIG(SIGKILL)`, and Tarantool also runs a watchdog fiber that
//!   exits when its parent process is gone.
//! * The harness administrator [`ADMIN_USER`] (role `super`) exists on every
//!   instance; [`Tarantool::eval`] runs Lua as that user.
//!
//! # Parallelism
//!
//! Each test starts its own servers, so tests are independent, but a
//! replicaset costs a few processes and up to `memtx_memory` each. The suite
//! runs under nextest with bounded parallelism (`test-threads = 2`, see
//! `.config/nextest.toml`); heavy tests opt into the `serial` test group by
//! having a name starting with `serial_`.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

pub mod binary;
pub mod etcd;
pub mod federation;
pub mod gateway;
pub mod haproxy;
pub mod http;
pub mod lua;
pub mod options;
pub mod ports;
pub(crate) mod process;
pub mod replicaset;
pub mod schema;
pub mod skip;
mod spawn;
pub mod tarantool;
pub mod tcf;
pub mod tools;
pub mod users;
pub mod value;
pub mod vclock;
pub mod verify;
pub mod wait;
pub mod worker;

pub use binary::{
    SOURCE_ENV, Side, TARANTOOL_ENV, TARGET_ENV, tarantool_binary, tarantool_binary_for,
};
pub use etcd::Etcd;
pub use nix::sys::signal::Signal;
pub use options::{Declarative, TarantoolOptions};
pub use ports::PortLease;
pub use process::{KEEP_DIRS_ENV, STOP_GRACE};
pub use replicaset::Replicaset;
pub use schema::{Engine, IndexSpec, SpaceSpec};
pub use skip::skip;
pub use tarantool::Tarantool;
pub use tcf::TcfProcess;
pub use users::{Grant, Privileges, UserSpec};
pub use value::{expect_array, first};
pub use vclock::Vclock;
pub use wait::{Condition, DEFAULT_DEADLINE, Outcome, wait_until, wait_until_every};

/// Re-export of the iproto client the harness connects with.
pub use tcf_iproto;

/// The harness's own admin user, created with role `super` on every instance.
pub const ADMIN_USER: &str = "tcf-test-admin";

/// Password of [`ADMIN_USER`].
pub const ADMIN_PASSWORD: &str = "tcf-test-admin-password";

/// Installs a `tracing` subscriber writing to the test's captured output,
/// filtered by `RUST_LOG` (default `info`). Safe to call from every test.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
pub mod proxy;
