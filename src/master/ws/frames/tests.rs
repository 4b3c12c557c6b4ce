use super::*;

const LIMITS: FrameLimits = FrameLimits {
    max_frame: 1000,
    max_message: 1000,
};

/// A client frame: `first` is FIN/RSV/opcode, masked with a fixed mask unless `masked` is false.
fn frame(first: u8, masked: bool, payload: &[u8]) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut out = vec![first];
    let m = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(m | n as u8),
        n if n <= 0xffff => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

fn decode_all(bytes: &[u8], piece: usize) -> Result<Vec<Incoming>, Violation> {
    let mut d = Decoder::default();
    let mut out = Vec::new();
    for chunk in bytes.chunks(piece.max(1)) {
        d.extend(chunk);
        while let Some(m) = d.next(LIMITS)? {
            out.push(m);
        }
    }
    assert!(d.is_idle(), "nothing left over");
    Ok(out)
}

#[test]
fn messages_arrive_whole_however_the_bytes_are_cut() {
    let mut wire = frame(0x81, true, b"hello");
    wire.extend(frame(0x89, true, b"p"));
    wire.extend(frame(0x01, true, b"fra"));
    wire.extend(frame(0x8A, true, b""));
    wire.extend(frame(0x80, true, "gmént".as_bytes()));
    wire.extend(frame(0x81, true, &[b'x'; 300]));
    wire.extend(frame(0x82, true, b"\x00\x01"));
    wire.extend(frame(0x88, true, &[0x03, 0xe8]));
    let expect = vec![
        Incoming::Text(Bytes::from_static(b"hello")),
        Incoming::Ping(Bytes::from_static(b"p")),
        Incoming::Pong,
        Incoming::Text(Bytes::from("fragmént".as_bytes())),
        Incoming::Text(Bytes::from(vec![b'x'; 300])),
        Incoming::Binary,
        Incoming::Close(Some(1000)),
    ];
    for piece in [1, 2, 3, 7, 64, wire.len()] {
        assert_eq!(
            decode_all(&wire, piece).expect("decodes"),
            expect,
            "pieces of {piece}"
        );
    }
}

#[test]
fn violations_have_the_rfc_codes() {
    let code = |bytes: Vec<u8>| {
        decode_all(&bytes, 4)
            .map(|_| 0)
            .unwrap_or_else(|v| v.close_code())
    };
    assert_eq!(code(frame(0x81, false, b"x")), 1002, "unmasked");
    assert_eq!(code(frame(0xC1, true, b"x")), 1002, "RSV1");
    assert_eq!(code(frame(0x83, true, b"x")), 1002, "opcode 3");
    assert_eq!(code(frame(0x89, true, &[0; 126])), 1002, "long ping");
    assert_eq!(code(frame(0x09, true, b"x")), 1002, "fragmented ping");
    assert_eq!(code(frame(0x80, true, b"x")), 1002, "continuation alone");
    let mut two = frame(0x01, true, b"a");
    two.extend(frame(0x81, true, b"b"));
    assert_eq!(code(two), 1002, "a message inside a fragmented one");
    assert_eq!(code(frame(0x88, true, &[3])), 1002, "one-byte close");
    assert_eq!(
        code(frame(0x88, true, &[0x03, 0xed])),
        1002,
        "close code 1005"
    );
    assert_eq!(code(frame(0x81, true, &[0xff, 0xfe])), 1007, "not UTF-8");
    let mut split = frame(0x01, true, &[0xc3]);
    split.extend(frame(0x80, true, &[0x28]));
    assert_eq!(code(split), 1007, "invalid across fragments");
    assert_eq!(
        code(frame(0x88, true, &[0x03, 0xe8, 0xff])),
        1007,
        "close reason"
    );
    assert_eq!(code(frame(0x81, true, &[b'x'; 1001])), 1009, "frame");
    let mut long = frame(0x01, true, &[b'x'; 600]);
    long.extend(frame(0x80, true, &[b'x'; 600]));
    assert_eq!(code(long), 1009, "message");
}

#[test]
fn a_header_alone_does_not_reserve_the_announced_length() {
    let limits = FrameLimits {
        max_frame: 1 << 20,
        max_message: 1 << 20,
    };
    let mut d = Decoder::default();
    let head = &frame(0x81, true, &vec![b'x'; 1 << 20])[..14];
    d.extend(head);
    assert_eq!(d.next(limits), Ok(None));
    assert!(
        d.buf.capacity() <= head.len() + RESERVE_AHEAD,
        "{}",
        d.buf.capacity()
    );
}

#[test]
fn unmask_matches_bytewise_xor() {
    for len in 0..20 {
        let data: Vec<u8> = (0..len as u8).collect();
        let mask = [1, 2, 3, 4];
        let mut fast = data.clone();
        unmask(&mut fast, mask);
        let slow: Vec<u8> = data
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        assert_eq!(fast, slow);
    }
}

#[test]
fn server_control_frames() {
    assert_eq!(
        &close(1000, "bye")[..],
        &[0x88, 5, 0x03, 0xe8, b'b', b'y', b'e']
    );
    assert_eq!(close(1001, &"é".repeat(100)).len(), 4 + 120);
    assert_eq!(&pong(b"hi")[..], &[0x8A, 2, b'h', b'i']);
}
