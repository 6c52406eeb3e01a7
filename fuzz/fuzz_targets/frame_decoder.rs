//! Feeds arbitrary bytes to the iproto frame decoder and everything that reads
//! a decoded frame (row bodies, synchro bodies, error stacks, the transaction
//! assembler). Any panic is a bug: the decoder must only return errors.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tcf_iproto::{Row, TxAssembler, Vclock, frame::decode_frame};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let mut tx = TxAssembler::new(Vclock::new());
    while let Ok(Some(frame)) = decode_frame(&mut buf, 1 << 20) {
        let _ = frame.server_error();
        let row = Row::from(frame);
        let _ = row.fields();
        let _ = row.synchro();
        let _ = tx.push(row);
    }
});
