use super::*;
use crate::protocol::frames::payload;
use serde_json::Value;

fn push(body: &str) -> Result<PushRequest<'_>, PushError> {
    parse_push(body.as_bytes(), Some("k"), None)
}

#[test]
fn every_means_parses() {
    let m = |b: &str| push(b).map(|p| p.means);
    assert_eq!(
        m(r#"{"sk":"k","means":"to_uid","data":{"to_uid":"5"}}"#),
        Ok(Means::ToUid(Uid(5)))
    );
    assert_eq!(
        m(r#"{"sk":"k","means":"to_uids","data":{"to_uids":[1,"2"]}}"#),
        Ok(Means::ToUids(vec![Uid(1), Uid(2)]))
    );
    assert_eq!(
        m(r#"{"sk":"k","means":"to_uid_all","data":{"uid_all":[]}}"#),
        Ok(Means::ToUids(vec![]))
    );
    assert_eq!(
        m(r#"{"sk":"k","means":"broadcast","data":{}}"#),
        Ok(Means::Broadcast)
    );
    assert_eq!(
        m(r#"{"sk":"k","means":"to_fd","data":{"to_fd":3}}"#),
        Ok(Means::ToFds(vec![ConnId(3)]))
    );
    assert_eq!(
        m(r#"{"sk":"k","means":"to_fd_all","data":{"fd_all":[]}}"#),
        Ok(Means::ToFds(vec![]))
    );
    assert_eq!(
        m(r#"{"sk":"k","means":"online","data":{"uid":"9"}}"#),
        Ok(Means::Online(Uid(9)))
    );
    assert_eq!(
        m(r#"{"sk":"k","means":"is_on_line","data":{"to_uid":9}}"#),
        Ok(Means::Online(Uid(9)))
    );
    assert_eq!(
        m(r#"{"sk":"k","means":"kick","data":{"uid":9}}"#),
        Ok(Means::Kick(Uid(9)))
    );
    assert!(push("{\"sk\":\"k\",\"means\":\"broadcast\",\"data\":{}}\n").is_ok());
}

fn framed(body: &str) -> (Value, PushFrame) {
    let p = push(body).expect("a push");
    let f = p.data.frame(MessageId(42), 1_700_000_001);
    let v = serde_json::from_slice(payload(&f.frame)).expect("the frame is JSON");
    (v, f)
}

#[test]
fn the_frame_is_the_data_with_id_and_time() {
    let (v, _) = framed(r#"{"sk":"k","means":"to_uid","data":{"to_uid":"5","x":[1,{"y":"}"}]}}"#);
    assert_eq!(v["id"], "42");
    assert_eq!(v["time"], 1_700_000_001u64);
    assert_eq!(v["x"][1]["y"], "}");
    assert_eq!(v["to_uid"], "5");
    let (v, _) = framed(r#"{"sk":"k","means":"broadcast","data":{ }}"#);
    assert_eq!(v.as_object().map(|m| m.len()), Some(2), "{v}");
    let (v, _) = framed(r#"{"sk":"k","means":"broadcast"}"#);
    assert_eq!(v["id"], "42");
    // A pusher's own id is replaced, its time kept as given.
    let (v, _) = framed(r#"{"sk":"k","means":"broadcast","data":{"id":"x","time":"soon"}}"#);
    assert_eq!(v["id"], "42");
    assert_eq!(v["time"], "soon");
    assert_eq!(v.as_object().map(|m| m.len()), Some(2), "{v}");
}

#[test]
fn content_is_a_range_of_the_frame_wherever_the_id_was() {
    for body in [
        r#"{"sk":"k","means":"to_uid","data":{"to_uid":5,"content":{"a" : 1}}}"#,
        r#"{"sk":"k","means":"to_uid","data":{"id":"a-very-long-id-of-the-pusher","to_uid":5,"content":{"a" : 1}}}"#,
        r#"{"sk":"k","means":"to_uid","data":{"id":1,"to_uid":5,"content":{"a" : 1}}}"#,
        r#"{"sk":"k","means":"to_uid","data":{"content":{"a" : 1},"id":1,"to_uid":5}}"#,
    ] {
        let (v, f) = framed(body);
        assert_eq!(v["id"], "42", "{body}");
        let range = f.content.expect("content");
        assert_eq!(&f.frame[range], br#"{"a" : 1}"#, "{body}");
    }
    let (_, f) = framed(r#"{"sk":"k","means":"to_uid","data":{"to_uid":5}}"#);
    assert!(f.content.is_none());
}

#[test]
fn the_kept_fields_are_read_from_data() {
    let p = push(r#"{"sk":"k","means":"to_uid","data":{"to_uid":5,"uid":"7","type":"notice","time":123,"content":{"a" : 1}}}"#)
        .expect("a push");
    assert_eq!(p.data.sender, Uid(7));
    assert_eq!(p.data.kind(), "notice");
    assert_eq!(p.data.time(9), 123);
    assert_eq!(p.data.content(), r#"{"a" : 1}"#);
    let p = push(r#"{"sk":"k","means":"to_uid","data":{"to_uid":"5"}}"#).expect("a push");
    assert_eq!(
        (
            p.data.sender,
            p.data.kind(),
            p.data.content(),
            p.data.time(9)
        ),
        (Uid(0), "push", "null", 9)
    );
    let system = PushData::chat_from_system(Uid(5), "hi \"you\"");
    assert_eq!(system.kind(), "chat");
    assert_eq!(system.content(), r#"{"type":"text","value":"hi \"you\""}"#);
}

#[test]
fn refusals_have_codes() {
    let code = |r: Result<PushRequest, PushError>| r.map(|_| 0).unwrap_or_else(|e| e.code);
    assert_eq!(code(parse_push(b"{}", None, None)), 401);
    assert_eq!(
        code(push(r#"{"sk":"x","means":"broadcast","data":{}}"#)),
        401
    );
    assert_eq!(code(push(r#"{"means":"broadcast","data":{}}"#)), 401);
    assert_eq!(
        code(parse_push(
            br#"{"means":"broadcast"}"#,
            Some("k"),
            Some("k")
        )),
        0
    );
    assert_eq!(code(push("not json")), 400);
    assert_eq!(code(push(r#"{"sk":"k","means":"nope","data":{}}"#)), 400);
    assert_eq!(code(push(r#"{"sk":"k","means":"to_uid","data":{}}"#)), 400);
    assert_eq!(
        code(push(
            r#"{"sk":"k","means":"to_uids","data":{"to_uids":"1"}}"#
        )),
        400
    );
    assert_eq!(code(push("[1]")), 400);
    assert_eq!(code(push(r#"["k","broadcast",{}]"#)), 400);
    assert_eq!(code(push(r#"{"sk":"k","means":"to_uid","data":"x"}"#)), 400);
    assert_eq!(
        code(push(r#"{"sk":"k","means":"to_uid","data":{"to_uid":[5]}}"#)),
        400
    );
}

#[test]
fn a_list_means_without_its_list_is_refused_and_an_empty_list_means_everyone() {
    for (means, key) in [
        ("to_uids", "to_uids"),
        ("to_uid_all", "uid_all"),
        ("to_fd_all", "fd_all"),
    ] {
        for data in [r#"{}"#.to_owned(), format!(r#"{{"{key}":null}}"#)] {
            let body = format!(r#"{{"sk":"k","means":"{means}","data":{data}}}"#);
            let err = push(&body).map(|p| p.means).expect_err(&body);
            assert_eq!(err.code, 400, "{body}");
            assert!(err.msg.contains(&format!("data.{key}")), "{}", err.msg);
        }
        // The other means' key is not this one's.
        let other = if key == "to_uids" {
            "uid_all"
        } else {
            "to_uids"
        };
        let body = format!(r#"{{"sk":"k","means":"{means}","data":{{"{other}":[1]}}}}"#);
        assert_eq!(push(&body).map(|_| 0).unwrap_or_else(|e| e.code), 400);
        let body = format!(r#"{{"sk":"k","means":"{means}","data":{{"{key}":[]}}}}"#);
        let everyone = push(&body).map(|p| p.means).expect(&body);
        assert!(
            matches!(everyone, Means::ToUids(ref l) if l.is_empty())
                || matches!(everyone, Means::ToFds(ref l) if l.is_empty())
        );
    }
}

#[test]
fn a_recipient_listed_twice_is_one_recipient_in_the_pushers_order() {
    let m = |b: &str| push(b).map(|p| p.means);
    assert_eq!(
        m(r#"{"sk":"k","means":"to_uids","data":{"to_uids":[3,"1",3,"3",1,2]}}"#),
        Ok(Means::ToUids(vec![Uid(3), Uid(1), Uid(2)]))
    );
    assert_eq!(
        m(r#"{"sk":"k","means":"to_uid_all","data":{"uid_all":["7",7]}}"#),
        Ok(Means::ToUids(vec![Uid(7)]))
    );
    assert_eq!(
        m(r#"{"sk":"k","means":"to_fd_all","data":{"fd_all":[4,4,"5",4]}}"#),
        Ok(Means::ToFds(vec![ConnId(4), ConnId(5)]))
    );
}
