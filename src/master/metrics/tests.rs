use super::exposition::encode_snapshot_for_test;
use super::*;
use crate::ipc::{encode_task, Task, TaskFailure};
use crate::model::{Delivery, MessageId, StoredMessage, Uid};
use std::time::Duration;

fn metrics(clustered: bool) -> Metrics {
    Metrics::new(IpRanges::default(), clustered, Instant::now())
}

fn completion(origin: Origin, body: bytes::Bytes, reply: Reply) -> Completion<Origin> {
    Completion {
        origin,
        key: 1,
        body,
        reply,
        took: Some(Duration::from_millis(3)),
    }
}

fn store_task(rows: u64) -> bytes::Bytes {
    let rows = (0..rows)
        .map(|id| StoredMessage {
            id: MessageId(id),
            from: Uid(1),
            to: Uid(2),
            kind: "chat",
            delivery: Delivery::Delivered,
            content: "1",
            time: 5,
        })
        .collect();
    encode_task(&Task::Store(rows)).expect("encode")
}

#[test]
fn each_message_of_a_turn_is_one_delivery_observation() {
    let mut m = metrics(false);
    m.turn_started(Instant::now());
    m.chat_received();
    m.push_received(Door::Udp, &Means::ToUid(Uid(1)));
    m.push_received(Door::Http, &Means::Online(Uid(1)));
    m.push_received(Door::Http, &Means::Broadcast);
    m.turn_flushed();
    let text = encode_snapshot_for_test(&m);
    assert!(
        text.contains("wspush_delivery_latency_seconds_count 3\n"),
        "{text}"
    );
    // The next turn routed nothing: nothing more is observed.
    m.turn_started(Instant::now());
    m.turn_flushed();
    assert!(encode_snapshot_for_test(&m).contains("wspush_delivery_latency_seconds_count 3\n"));
}

#[test]
fn in_a_cluster_messages_to_uids_are_timed_when_redis_brings_them_back() {
    let mut m = metrics(true);
    m.turn_started(Instant::now());
    m.chat_received();
    m.push_received(Door::Udp, &Means::ToUids(vec![Uid(1), Uid(2)]));
    m.push_received(Door::Udp, &Means::ToUids(Vec::new()));
    let kick = ClusterMessage::Kick { uid: Uid(3) };
    m.cluster_inbound(&kick, "me");
    let own = ClusterMessage::Broadcast {
        origin: "me",
        frame: b"{}",
    };
    m.cluster_inbound(&own, "me");
    let other = ClusterMessage::Broadcast {
        origin: "them",
        frame: b"{}",
    };
    m.cluster_inbound(&other, "me");
    // to_uid_all, and the other node's broadcast.
    assert_eq!(m.routed - m.routed_before_turn, 2);
    assert_eq!(m.cluster_received, 3);
}

#[test]
fn pushes_count_by_door_means_and_reply_code() {
    let mut m = metrics(false);
    m.push_received(Door::Udp, &Means::ToFds(Vec::new()));
    m.push_replied(Door::Udp, 200);
    m.push_replied(Door::Http, 401);
    m.push_replied(Door::Http, 418);
    let text = encode_snapshot_for_test(&m);
    for line in [
        r#"wspush_pushes_total{door="udp",means="to_fd_all"} 1"#,
        r#"wspush_pushes_total{door="http",means="to_fd_all"} 0"#,
        r#"wspush_push_replies_total{door="udp",code="200"} 1"#,
        r#"wspush_push_replies_total{door="http",code="401"} 1"#,
        r#"wspush_push_replies_total{door="http",code="other"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
}

#[test]
fn store_answers_count_rows_written_and_errors() {
    let mut m = metrics(false);
    m.task_answered(&completion(Origin::Store, store_task(5), Reply::Ok));
    let partly = Reply::PartlyStored { refused: 2 };
    m.task_answered(&completion(Origin::StoreProbe, store_task(4), partly));
    let failed = Reply::Failed(TaskFailure::StoreUnavailable);
    m.task_answered(&completion(Origin::Store, store_task(9), failed.clone()));
    let login = Origin::Login {
        conn: crate::model::ConnId(1),
        uid: Uid(1),
        source: crate::model::Source::new("app").expect("source"),
    };
    m.task_answered(&completion(login, bytes::Bytes::new(), failed));
    assert_eq!(m.store_rows_written, 7);
    assert_eq!(m.store_errors, [1, 0, 1]);
    let text = encode_snapshot_for_test(&m);
    assert!(
        text.contains("wspush_task_duration_seconds_count 4\n"),
        "{text}"
    );
}
