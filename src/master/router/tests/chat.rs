//! Chats between clients of this node.

use super::*;

#[test]
fn a_chat_reaches_every_connection_of_its_recipient_and_is_kept_once_as_delivered() {
    for backup in [true, false] {
        let mut t = T::new(backup, LIMIT);
        let (s7, app, web) = (t.online(7, "app"), t.online(9, "app"), t.online(9, "web"));
        t.chat(&s7, 9, CONTENT, 0);
        let to_app = t.got(&app);
        let id = id_of(&to_app[0]);
        let want = chat_json(&id, 7, 9, time_of(&to_app[0]), 1, CONTENT);
        assert_eq!(to_app, [want]);
        assert_eq!(t.got(&web), to_app);
        assert_eq!(t.got(&s7), [ack(&id, 9, 1)]);
        assert!(t.actions().is_empty(), "batched until the loop turn ends");
        t.r.submit_store_batches();
        let actions = t.actions();
        if !backup {
            assert!(actions.is_empty() && t.r.store().is_idle(), "not kept");
            continue;
        }
        let row = format!("{id} 7>9 text Delivered {CONTENT}");
        assert_eq!(stored(&actions), [row]);
        let bodies = bodies(&actions);
        let (key, body, origin) = &bodies[0];
        assert_eq!((*key, origin.as_str()), (9, "Store"));
        let raw = body.windows(CONTENT.len()).any(|w| w == CONTENT.as_bytes());
        assert!(raw, "the content as the client wrote it, not escaped");
    }
}

#[test]
fn a_chat_to_an_offline_uid_is_acked_0_and_kept_and_a_login_in_progress_fetches_again() {
    let mut t = T::new(false, LIMIT);
    let s7 = t.online(7, "app");
    let c9 = t.arrive(9, "app", None);
    t.chat(&s7, 9, "1", 0);
    let acked = t.got(&s7);
    let id = id_of(&acked[0]);
    assert_eq!(acked, [ack(&id, 9, 0)]);
    assert!(t.got(&c9).is_empty(), "still logging in");
    assert_eq!(t.kept(), [format!("{id} 7>9 text Undelivered 1")]);
    // Its login check may have missed the message: fetched again.
    t.answer(&c9, pending(vec![]));
    assert_eq!(t.got(&c9), [login_frame(&c9)]);
    let fetch = format!("{:?}", tasks(&t.actions()));
    assert_eq!(
        fetch,
        "[(9, FetchPending(Uid(9)), FetchPending { uid: Uid(9) })]"
    );
    // A login with nothing kept meanwhile fetches nothing more.
    let c10 = t.arrive(10, "app", None);
    t.answer(&c10, pending(vec![]));
    assert!(t.actions().is_empty());
}
