//! Failpoints for crash tests: `TCF_FAILPOINTS="name=exit@N,..."` makes the
//! process exit at once (status 86, no cleanup, like a kill) the N-th time
//! (default 1st) it reaches the named point. Unset in production: a hit is
//! one relaxed load of a lazily parsed, empty table.
//!
//! | point | where |
//! | --- | --- |
//! | `before_apply` | a batch is about to be sent to the target |
//! | `after_commit` | the target committed a batch, the gateway was not acked |
//! | `after_ack` | the gateway was acked |
//! | `after_load_begin` | an initial load marked the target `loading` |
//! | `after_chunk` | a verification chunk was recorded, the gateway was not acked |

use std::{
    collections::HashMap,
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

/// Exit status of a failpoint exit.
pub const EXIT_FAILPOINT: i32 = 86;

struct Point {
    at: u64,
    hits: AtomicU64,
}

fn table() -> &'static HashMap<String, Point> {
    static TABLE: OnceLock<HashMap<String, Point>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let spec = std::env::var("TCF_FAILPOINTS").unwrap_or_default();
        spec.split(',')
            .filter_map(|item| {
                let (name, action) = item.trim().split_once('=')?;
                let at = match action.split_once('@') {
                    Some(("exit", n)) => n.parse().ok()?,
                    None if action == "exit" => 1,
                    _ => return None,
                };
                Some((
                    name.to_owned(),
                    Point {
                        at,
                        hits: AtomicU64::new(0),
                    },
                ))
            })
            .collect()
    })
}

/// Passes the point `name`; exits the process if it is armed and due.
pub(crate) fn hit(name: &str) {
    if let Some(p) = table().get(name)
        && p.hits.fetch_add(1, Ordering::Relaxed) + 1 == p.at
    {
        eprintln!("tcf-destination: failpoint {name} hit: exiting");
        std::process::exit(EXIT_FAILPOINT);
    }
}
