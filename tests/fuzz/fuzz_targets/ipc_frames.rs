//! The master/worker channel: bytes read in arbitrary pieces, decoded frame by frame, and each
//! frame's body decoded as every message the channel carries (a task inside a task frame too).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::io::Cursor;
use wspush::ipc::{decode, read_frame_blocking, FrameReader, Task, ToMaster, ToWorker};

fn decode_all(body: &[u8]) {
    let _ = decode::<ToMaster>(body);
    if let Ok(ToWorker::Task { body, .. }) = decode::<ToWorker>(body) {
        let _ = decode::<Task>(body);
    }
    let _ = decode::<Task>(body);
}

fuzz_target!(|data: &[u8]| {
    let mut reader = FrameReader::default();
    for piece in data.chunks(7) {
        if reader.fill(&mut Cursor::new(piece.to_vec())).is_err() {
            return;
        }
        loop {
            match reader.next_frame() {
                Ok(Some(body)) => decode_all(&body),
                Ok(None) | Err(_) => break,
            }
        }
    }
    let mut body = Vec::new();
    if let Ok(true) = read_frame_blocking(&mut Cursor::new(data), &mut body) {
        decode_all(&body);
    }
});
