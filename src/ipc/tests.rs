use super::*;
use crate::model::Delivery;

#[test]
fn round_trip_in_pieces() {
    let mut wire = Vec::new();
    for id in 0..3 {
        encode(
            &ToMaster::Done {
                id: TaskId(id),
                reply: Reply::Ok,
            },
            &mut wire,
        )
        .expect("encode");
    }
    let mut reader = FrameReader::default();
    let mut got = Vec::new();
    for piece in wire.chunks(5) {
        reader
            .fill(&mut io::Cursor::new(piece.to_vec()))
            .expect("fill");
        while let Some(body) = reader.next_frame().expect("frame") {
            if let Ok(ToMaster::Done { id, .. }) = decode(&body) {
                got.push(id.0);
            }
        }
    }
    assert_eq!(got, vec![0, 1, 2]);
}

#[test]
fn a_store_task_carries_content_as_its_own_bytes() {
    let content = r#"{"type":"text","value":"say \"hi\"\n"}"#;
    let record = StoredMessage {
        id: MessageId(7),
        from: Uid(1),
        to: Uid(2),
        kind: "chat",
        delivery: Delivery::Delivered,
        content,
        time: 99,
    };
    let body = encode_task(&Task::Store(vec![record.clone()])).expect("encode");
    // Not escaped: the content's bytes appear as they are.
    assert!(body.windows(content.len()).any(|w| w == content.as_bytes()));
    let mut wire = Vec::new();
    encode(
        &ToWorker::Task {
            id: TaskId(3),
            body: &body,
        },
        &mut wire,
    )
    .expect("frame");
    let mut read = Vec::new();
    assert!(read_frame_blocking(&mut io::Cursor::new(wire), &mut read).expect("read"));
    let Ok(ToWorker::Task { id, body }) = decode::<ToWorker>(&read) else {
        panic!("a task frame")
    };
    assert_eq!(id, TaskId(3));
    let Ok(Task::Store(batch)) = decode::<Task>(body) else {
        panic!("a store task")
    };
    assert_eq!(batch, vec![record]);
}

#[test]
fn cluster_messages_embed_the_frame_as_json() {
    let frame = br#"{"id":"1","content":{"a":"\"b"}}"#;
    let m = ClusterMessage::Deliver {
        uid: Uid(5),
        meta: MessageMeta {
            id: MessageId(9),
            from: Uid(1),
            time: 3,
            kind: "no\"tice".into(),
            content: Some((20, 10)),
        },
        frame,
    };
    let json = m.to_json();
    let v: serde_json::Value = serde_json::from_slice(&json).expect("JSON");
    assert_eq!(v["t"], "deliver");
    assert_eq!(v["uid"], "5");
    assert_eq!(v["frame"]["content"]["a"], "\"b");
    assert_eq!(ClusterMessage::from_json(&json).expect("reads back"), m);
    let b = ClusterMessage::Broadcast {
        origin: "10.0.0.1:9501",
        frame,
    };
    assert_eq!(
        ClusterMessage::from_json(&b.to_json()).expect("reads back"),
        b
    );
    // As the Lua script of a login on another node publishes it.
    let lua = br#"{"t":"displace","uid":"9","source":"app","fd":12,"same_device":true}"#;
    assert_eq!(
        ClusterMessage::from_json(lua).expect("reads"),
        ClusterMessage::Displace {
            uid: Uid(9),
            source: Source::new("app").expect("source"),
            conn: ConnId(12),
            same_device: true
        }
    );
    for m in [
        ClusterMessage::Kick { uid: Uid(3) },
        ClusterMessage::Fetch { uid: Uid(4) },
    ] {
        assert_eq!(ClusterMessage::from_json(&m.to_json()).expect("reads"), m);
    }
    assert!(ClusterMessage::from_json(br#"{"t":"deliver"}"#).is_err());
    assert!(ClusterMessage::from_json(br#"{"t":"what","uid":"1"}"#).is_err());
}

#[test]
fn oversized_length_is_refused_before_allocation() {
    let mut reader = FrameReader::default();
    let wire = u32::MAX.to_le_bytes().to_vec();
    reader
        .fill(&mut io::Cursor::new(wire.clone()))
        .expect("fill");
    assert!(matches!(reader.next_frame(), Err(IpcError::TooLarge(_))));
    let mut body = Vec::new();
    let r = read_frame_blocking(&mut io::Cursor::new(wire), &mut body);
    assert!(matches!(r, Err(IpcError::TooLarge(_))));
}

#[test]
fn garbage_body_is_a_decode_error() {
    let mut wire = 3u32.to_le_bytes().to_vec();
    wire.extend_from_slice(&[0xff, 0xff, 0xff]);
    let mut body = Vec::new();
    assert!(read_frame_blocking(&mut io::Cursor::new(wire), &mut body).expect("read"));
    assert!(matches!(
        decode::<ToMaster>(&body),
        Err(IpcError::Decode(_))
    ));
}
