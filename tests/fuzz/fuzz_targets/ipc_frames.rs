//! The master/worker channel: bytes read in arbitrary pieces, decoded frame by frame.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::io::Cursor;
use wspush::ipc::{read_frame_blocking, FrameReader, ToMaster, ToWorker};

fuzz_target!(|data: &[u8]| {
    let mut reader = FrameReader::default();
    for piece in data.chunks(7) {
        if reader.fill(&mut Cursor::new(piece.to_vec())).is_err() {
            return;
        }
        loop {
            match reader.next_frame::<ToMaster>() {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
    let _ = read_frame_blocking::<ToWorker>(&mut Cursor::new(data));
});
