//! Fuzz the frame decoder: arbitrary bytes never panic, and whatever decodes
//! re-encodes to the same frame.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use stagedoor::spop::Frame;
use stagedoor::spop::frame::read_frame;

fuzz_target!(|data: &[u8]| {
    let _ = read_frame(data, 16_380);
    if let Ok(frame) = Frame::decode(data) {
        let mut out = BytesMut::new();
        frame.encode(&mut out, u32::MAX).expect("a decoded frame re-encodes");
        let again = Frame::decode(&out[4..]).expect("re-encoded frame decodes");
        assert_eq!(again, frame);
    }
});
