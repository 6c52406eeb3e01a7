//! The gRPC contract between `tcf-gateway` (server) and `tcf-destination`
//! (client): the `tcf.stream.v1` protobuf package and its generated tonic code.
//!
//! * [`v1`] holds the prost messages and the `Replication` service:
//!   [`v1::replication_server`] for the gateway, [`v1::replication_client`]
//!   for the destination. The `.proto` is `proto/tcf/stream/v1/stream.proto`
//!   in this crate; it is compiled by `protox` in `build.rs`, so building
//!   needs no system `protoc`.
//! * Every protobuf `bytes` field is a [`bytes::Bytes`]: tuples, keys and
//!   update operations decoded from a frame share the frame's buffer.
//! * [`PROTOCOL_VERSION`] is what `Open.protocol_version` and
//!   `DescribeResponse.protocol_version` carry.
//! * `v1::Vclock` converts to and from [`tcf_iproto::Vclock`] (both ways, by
//!   value and by reference).
//!
//! The message flow, ordering and exactly-once rules are in `docs/stream.md`.

use tcf_iproto::Vclock as IprotoVclock;

/// The generated messages and service of the protobuf package `tcf.stream.v1`.
///
/// Field documentation is the `.proto`'s comments. A breaking change to the
/// wire contract makes a new package (`tcf.stream.v2`) and a new module.
#[allow(missing_docs, unreachable_pub)]
#[allow(clippy::all, clippy::pedantic, clippy::restriction)]
#[allow(
    clippy::clone_on_ref_ptr,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::unused_async,
    clippy::large_futures
)]
pub mod v1 {
    tonic::include_proto!("tcf.stream.v1");
}

/// The stream protocol version this build speaks: the gateway refuses an
/// `Open` whose `protocol_version` differs, and reports it in `Describe`.
///
/// It changes only together with the protobuf package (`v1` → `v2`).
pub const PROTOCOL_VERSION: u32 = 1;

/// The optional feature of online verification (`docs/verify.md`): listed in
/// `Open.features` by a destination and in `DescribeResponse.features` by a
/// gateway that handle `WalkStep`, `Chunk` and `GapRestart`. Within v1 a
/// peer sends those only to a peer that lists the feature, so old peers
/// never see them.
pub const FEATURE_VERIFY: &str = "verify";

impl From<&IprotoVclock> for v1::Vclock {
    /// Copies every non-zero component (absent components are 0 on both sides).
    fn from(v: &IprotoVclock) -> Self {
        v1::Vclock {
            lsn: v.iter().collect(),
        }
    }
}

impl From<IprotoVclock> for v1::Vclock {
    /// Same as the by-reference conversion.
    fn from(v: IprotoVclock) -> Self {
        v1::Vclock::from(&v)
    }
}

impl From<&v1::Vclock> for IprotoVclock {
    /// Copies every component; explicit zero components are dropped (a zero
    /// component and an absent one mean the same).
    fn from(v: &v1::Vclock) -> Self {
        v.lsn.iter().map(|(id, lsn)| (*id, *lsn)).collect()
    }
}

impl From<v1::Vclock> for IprotoVclock {
    /// Same as the by-reference conversion.
    fn from(v: v1::Vclock) -> Self {
        IprotoVclock::from(&v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use prost::Message;
    use v1::gateway_message::Kind;

    fn sample() -> v1::GatewayMessage {
        let vclock: IprotoVclock = [(1, 10), (2, 7)].into_iter().collect();
        v1::GatewayMessage {
            kind: Some(Kind::Batch(v1::Batch {
                transactions: vec![v1::Transaction {
                    origin: 1,
                    tsn: 9,
                    vclock: Some(vclock.into()),
                    timestamp: 1_700_000_000.5,
                    rows: vec![v1::Row {
                        op: v1::Op::Update as i32,
                        space: "accounts".into(),
                        index_id: 0,
                        index_base: Some(1),
                        key: Bytes::from_static(&[0x91, 0x01]),
                        tuple: Bytes::from_static(&[0x91, 0x93, 0xa1, b'=', 0x02, 0x05]),
                        ops: Bytes::new(),
                    }],
                    partial: false,
                }],
            })),
        }
    }

    #[test]
    fn gateway_message_round_trips_with_bytes_fields() {
        let msg = sample();
        let wire = Bytes::from(msg.encode_to_vec());
        let back = v1::GatewayMessage::decode(wire.clone()).unwrap();
        assert_eq!(back, msg);

        let Some(Kind::Batch(batch)) = back.kind else {
            panic!("not a batch: {back:?}");
        };
        let row = &batch.transactions[0].rows[0];
        // Compile-time check that the fields are `bytes::Bytes` (`.bytes(".")`).
        let tuple: &Bytes = &row.tuple;
        let key: &Bytes = &row.key;
        let ops: &Bytes = &row.ops;
        assert_eq!(key.as_ref(), &[0x91, 0x01]);
        assert!(ops.is_empty());
        // Decoding from a `Bytes` buffer slices it instead of copying.
        let range = wire.as_ptr_range();
        assert!(
            range.contains(&tuple.as_ptr()),
            "tuple was copied on decode"
        );
        assert_eq!(row.op(), v1::Op::Update);
        assert_eq!(row.index_base, Some(1));
    }

    #[test]
    fn vclock_converts_both_ways() {
        let iv: IprotoVclock = [(1, 10), (3, 4)].into_iter().collect();
        let pv = v1::Vclock::from(&iv);
        assert_eq!(pv.lsn.len(), 2);
        assert_eq!(pv.lsn[&3], 4);
        assert_eq!(IprotoVclock::from(pv), iv);

        let mut with_zero = v1::Vclock::default();
        with_zero.lsn.insert(2, 0);
        with_zero.lsn.insert(5, 1);
        let iv = IprotoVclock::from(&with_zero);
        assert_eq!(iv.iter().collect::<Vec<_>>(), vec![(5, 1)]);
        assert!(IprotoVclock::from(v1::Vclock::default()).is_empty());
    }

    #[test]
    fn open_carries_protocol_version() {
        let open = v1::DestinationMessage {
            kind: Some(v1::destination_message::Kind::Open(v1::Open {
                replicaset: "rs1".into(),
                start: Some(v1::open::Start::InitialLoad(v1::InitialLoad {
                    truncate: true,
                })),
                protocol_version: PROTOCOL_VERSION,
                ..Default::default()
            })),
        };
        let back = v1::DestinationMessage::decode(open.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back, open);
    }
}
