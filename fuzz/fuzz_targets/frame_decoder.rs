//! Feeds arbitrary bytes to the iproto frame decoder and everything that reads
//! a decoded frame (row bodies, synchro bodies, error stacks, the transaction
//! assembler, IPROTO_ID answers, RAFT rows, recordings). Any panic is a bug:
//! the decoders must only return errors.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tcf_iproto::{
    Protocol, RaftState, Row, TxAssembler, Vclock, frame::decode_frame, recording::Conversation,
};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let mut tx = TxAssembler::new(Vclock::new());
    while let Ok(Some(frame)) = decode_frame(&mut buf, 1 << 20) {
        let _ = frame.server_error();
        let _ = Protocol::decode(&frame.body);
        let _ = RaftState::decode(&frame.body);
        let row = Row::from(frame);
        let _ = row.fields();
        let _ = row.synchro();
        let _ = tx.push(row);
    }
    if let Ok(conv) = Conversation::decode(data) {
        let _ = conv.greeting();
        let _ = conv.server_frames();
        let _ = conv.exchanges();
    }
});
