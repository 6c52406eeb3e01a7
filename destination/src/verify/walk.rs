//! A replicaset's walk: its request and its next step, as stored on the
//! target (the walk row of `_tcf_verify_*`, `destination/lua/tcf_verify_v1.lua`)
//! and advanced by each chunk in the same transaction as the position.

use rmpv::Value;
use tcf_api::verify::{WalkMode, WalkReason, WalkState};
use tcf_proto::v1;

/// Key retries of a verify walk before the keys are reported unverified
/// (a repair walk retries until they can be checked).
pub(crate) const MAX_VERIFY_ATTEMPTS: u32 = 10;

/// What a handled chunk means for the walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Advance {
    /// Nothing could be said: the same step again.
    Void,
    /// The space cannot be walked: the next space.
    Skipped,
    /// A range: continue after `last_key` (or, at the end, with the next
    /// space), once the `partial` keys are checked again.
    Range {
        end: bool,
        last_key: Vec<u8>,
        partial: Vec<Vec<u8>>,
    },
    /// Keys checked again; `partial` still need another look.
    Keys { partial: Vec<Vec<u8>> },
}

/// A walk of one replicaset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Walk {
    pub(crate) id: String,
    pub(crate) mode: WalkMode,
    pub(crate) reason: WalkReason,
    pub(crate) spaces: Vec<String>,
    /// Index of the space being walked.
    pub(crate) idx: usize,
    /// The range continues after this key (raw MessagePack; empty: start).
    pub(crate) after: Vec<u8>,
    /// Keys to check again before the range goes on.
    pub(crate) pending: Vec<Vec<u8>>,
    pub(crate) attempt: u32,
    /// The space's range reached its end; `pending` are its last keys.
    pub(crate) range_done: bool,
    /// The next chunk's sequence number.
    pub(crate) seq: u64,
    pub(crate) state: WalkState,
    pub(crate) limit: u32,
    pub(crate) rate: u64,
    pub(crate) started_ms: u64,
    pub(crate) finished_ms: Option<u64>,
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Bytes of a hex string (`None` when it is not one).
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

/// Hex of bytes (keys in the verification spaces).
pub(crate) fn to_hex(b: &[u8]) -> String {
    hex(b)
}

impl Walk {
    /// A new walk, at its first step.
    pub(crate) fn new(
        id: String,
        mode: WalkMode,
        reason: WalkReason,
        spaces: Vec<String>,
        limit: u32,
        rate: u64,
    ) -> Self {
        let state = if spaces.is_empty() {
            WalkState::Done
        } else {
            WalkState::Running
        };
        Self {
            id,
            mode,
            reason,
            spaces,
            idx: 0,
            after: Vec::new(),
            pending: Vec::new(),
            attempt: 0,
            range_done: false,
            seq: 0,
            state,
            limit,
            rate,
            started_ms: now_ms(),
            finished_ms: (state == WalkState::Done).then(now_ms),
        }
    }

    /// The space being walked.
    pub(crate) fn space(&self) -> Option<&str> {
        (self.state == WalkState::Running)
            .then(|| self.spaces.get(self.idx).map(String::as_str))
            .flatten()
    }

    /// The chunk to ask the gateway for; `None` when done.
    pub(crate) fn step(&self) -> Option<v1::WalkStep> {
        let space = self.space()?.to_owned();
        let select = if self.pending.is_empty() {
            v1::walk_step::Select::Range(v1::RangeSelect {
                after: self.after.clone().into(),
                limit: self.limit,
            })
        } else {
            v1::walk_step::Select::Keys(v1::KeysSelect {
                keys: self.pending.iter().map(|k| k.clone().into()).collect(),
            })
        };
        Some(v1::WalkStep {
            walk: self.id.clone(),
            seq: self.seq,
            repair: self.mode == WalkMode::Repair,
            space,
            select: Some(select),
            attempt: self.attempt,
            rows_per_second: self.rate,
        })
    }

    /// Whether the current step is a list of keys.
    pub(crate) fn keys_step(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Moves to the next step after a chunk; returns the keys given up as
    /// unverified (a verify walk's keys that changed at every attempt).
    pub(crate) fn advance(&mut self, a: &Advance) -> u64 {
        self.seq += 1;
        let mut unverified = 0;
        match a {
            Advance::Void => self.attempt += 1,
            Advance::Skipped => self.next_space(),
            Advance::Range {
                end,
                last_key,
                partial,
            } => {
                if *end {
                    self.range_done = true;
                } else {
                    self.after.clone_from(last_key);
                }
                self.pending.clone_from(partial);
                self.attempt = 0;
                if self.pending.is_empty() && self.range_done {
                    self.next_space();
                }
            }
            Advance::Keys { partial } => {
                self.attempt += 1;
                self.pending.clone_from(partial);
                if self.mode == WalkMode::Verify && self.attempt >= MAX_VERIFY_ATTEMPTS {
                    unverified = self.pending.len() as u64;
                    self.pending.clear();
                }
                if self.pending.is_empty() {
                    self.attempt = 0;
                    if self.range_done {
                        self.next_space();
                    }
                }
            }
        }
        unverified
    }

    fn next_space(&mut self) {
        self.idx += 1;
        self.after.clear();
        self.pending.clear();
        self.attempt = 0;
        self.range_done = false;
        if self.idx >= self.spaces.len() {
            self.state = WalkState::Done;
            self.finished_ms = Some(now_ms());
        }
    }

    /// The walk row's `data` map.
    pub(crate) fn to_value(&self) -> Value {
        let s = |v: &str| Value::from(v);
        Value::Map(vec![
            (s("id"), s(&self.id)),
            (s("mode"), s(self.mode.as_str())),
            (
                s("reason"),
                s(match self.reason {
                    WalkReason::Requested => "requested",
                    WalkReason::WalGap => "wal_gap",
                }),
            ),
            (
                s("spaces"),
                Value::Array(self.spaces.iter().map(|x| s(x)).collect()),
            ),
            (s("idx"), Value::from(self.idx as u64)),
            (s("after"), s(&hex(&self.after))),
            (
                s("pending"),
                Value::Array(self.pending.iter().map(|k| s(&hex(k))).collect()),
            ),
            (s("attempt"), Value::from(self.attempt)),
            (s("range_done"), Value::from(self.range_done)),
            (s("seq"), Value::from(self.seq)),
            (
                s("state"),
                s(match self.state {
                    WalkState::Running => "running",
                    WalkState::Done => "done",
                }),
            ),
            (s("limit"), Value::from(self.limit)),
            (s("rate"), Value::from(self.rate)),
            (s("started_ms"), Value::from(self.started_ms)),
            (
                s("finished_ms"),
                self.finished_ms.map_or(Value::Nil, Value::from),
            ),
        ])
    }

    /// A walk row's `data` map; `None` when it is not a walk this version
    /// can read.
    pub(crate) fn from_value(v: &Value) -> Option<Self> {
        let m = v.as_map()?;
        let get = |k: &str| {
            m.iter()
                .find(|(key, _)| key.as_str() == Some(k))
                .map(|(_, v)| v)
        };
        let str_ = |k: &str| get(k).and_then(Value::as_str).map(str::to_owned);
        let u = |k: &str| get(k).and_then(Value::as_u64).unwrap_or_default();
        Some(Self {
            id: str_("id")?,
            mode: match get("mode")?.as_str()? {
                "verify" => WalkMode::Verify,
                "repair" => WalkMode::Repair,
                _ => return None,
            },
            reason: match get("reason")?.as_str()? {
                "wal_gap" => WalkReason::WalGap,
                _ => WalkReason::Requested,
            },
            spaces: get("spaces")?
                .as_array()?
                .iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect(),
            idx: u("idx") as usize,
            after: unhex(&str_("after").unwrap_or_default())?,
            pending: get("pending")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().and_then(unhex))
                        .collect()
                })
                .unwrap_or_default(),
            attempt: u32::try_from(u("attempt")).unwrap_or(u32::MAX),
            range_done: get("range_done").and_then(Value::as_bool).unwrap_or(false),
            seq: u("seq"),
            state: match get("state")?.as_str()? {
                "done" => WalkState::Done,
                _ => WalkState::Running,
            },
            limit: u32::try_from(u("limit")).unwrap_or(1000).max(1),
            rate: u("rate"),
            started_ms: u("started_ms"),
            finished_ms: get("finished_ms").and_then(Value::as_u64),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(mode: WalkMode) -> Walk {
        Walk::new(
            "w".into(),
            mode,
            WalkReason::Requested,
            vec!["a".into(), "b".into()],
            100,
            0,
        )
    }

    #[test]
    fn the_walk_round_trips_through_its_row() {
        let mut w = walk(WalkMode::Repair);
        w.after = vec![0x91, 0x05];
        w.pending = vec![vec![0x91, 0x07]];
        assert_eq!(Walk::from_value(&w.to_value()), Some(w));
    }

    #[test]
    fn ranges_then_retried_keys_then_the_next_space() {
        let mut w = walk(WalkMode::Verify);
        assert!(matches!(
            w.step().and_then(|s| s.select),
            Some(v1::walk_step::Select::Range(_))
        ));
        w.advance(&Advance::Range {
            end: false,
            last_key: vec![0x91, 0x01],
            partial: vec![vec![0x91, 0x00]],
        });
        assert!(w.keys_step());
        assert_eq!(w.after, vec![0x91, 0x01]);
        w.advance(&Advance::Keys { partial: vec![] });
        assert!(!w.keys_step());
        w.advance(&Advance::Void);
        assert_eq!(w.attempt, 1);
        w.advance(&Advance::Range {
            end: true,
            last_key: vec![],
            partial: vec![],
        });
        assert_eq!(w.space(), Some("b"));
        w.advance(&Advance::Skipped);
        assert_eq!(w.state, WalkState::Done);
        assert!(w.step().is_none());
        assert_eq!(w.seq, 5);
    }

    #[test]
    fn a_verify_walk_gives_up_on_keys_that_always_change() {
        let mut w = walk(WalkMode::Verify);
        w.advance(&Advance::Range {
            end: true,
            last_key: vec![],
            partial: vec![vec![0x91, 0x01]],
        });
        let mut given_up = 0;
        for _ in 0..MAX_VERIFY_ATTEMPTS {
            given_up += w.advance(&Advance::Keys {
                partial: vec![vec![0x91, 0x01]],
            });
        }
        assert_eq!(given_up, 1);
        assert_eq!(w.space(), Some("b"));
        let mut r = walk(WalkMode::Repair);
        r.advance(&Advance::Range {
            end: true,
            last_key: vec![],
            partial: vec![vec![0x91, 0x01]],
        });
        for _ in 0..(MAX_VERIFY_ATTEMPTS * 2) {
            assert_eq!(
                r.advance(&Advance::Keys {
                    partial: vec![vec![0x91, 0x01]]
                }),
                0
            );
        }
        assert!(r.keys_step(), "a repair walk keeps retrying");
    }
}
