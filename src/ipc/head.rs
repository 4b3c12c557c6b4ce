//! What the metrics read of an encoded task without decoding it.

/// What the metrics need to know of a task's encoded body, read from its first bytes without
/// decoding the rest (postcard: the variant's index, then a list's length, both varints).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskHead {
    Store { rows: u64 },
    Broadcast,
    Other,
}

/// Indexes of `Task`'s variants, as postcard writes them (checked by a test).
const STORE_VARIANT: u32 = 2;
const BROADCAST_VARIANT: u32 = 7;

pub fn task_head(body: &[u8]) -> TaskHead {
    let Ok((variant, rest)) = postcard::take_from_bytes::<u32>(body) else {
        return TaskHead::Other;
    };
    match variant {
        STORE_VARIANT => postcard::take_from_bytes::<u64>(rest)
            .map_or(TaskHead::Other, |(rows, _)| TaskHead::Store { rows }),
        BROADCAST_VARIANT => TaskHead::Broadcast,
        _ => TaskHead::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::{encode_task, ClusterMessage, Task};
    use crate::model::{Delivery, MessageId, StoredMessage, Uid};

    #[test]
    fn the_head_of_a_task_tells_store_rows_and_broadcasts_without_decoding() {
        let record = |id| StoredMessage {
            id: MessageId(id),
            from: Uid(1),
            to: Uid(2),
            kind: "chat",
            delivery: Delivery::Delivered,
            content: "1",
            time: 99,
        };
        let rows: Vec<StoredMessage> = (0..300).map(record).collect();
        let store = encode_task(&Task::Store(rows)).expect("encode");
        assert_eq!(task_head(&store), TaskHead::Store { rows: 300 });
        let broadcast = Task::Broadcast(ClusterMessage::Kick { uid: Uid(1) });
        let broadcast = encode_task(&broadcast).expect("encode");
        assert_eq!(task_head(&broadcast), TaskHead::Broadcast);
        for other in [
            Task::Ping,
            Task::Heartbeat,
            Task::Requeue {
                uid: Uid(1),
                ids: vec![MessageId(1)],
            },
        ] {
            assert_eq!(
                task_head(&encode_task(&other).expect("encode")),
                TaskHead::Other
            );
        }
        assert_eq!(task_head(&[]), TaskHead::Other);
    }
}
