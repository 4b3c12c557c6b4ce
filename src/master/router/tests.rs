//! The router on scripted sessions: what each client got (its JSON frames, a close as
//! `{"close": code}`), which actions came out (task bodies decoded) and what is kept.

use super::*;
use crate::ipc::LoginRefusal::{Expired, Unauthorized};
use crate::ipc::TaskFailure::{StoreRefused, StoreUnavailable, TimedOut};
use crate::ipc::{ClusterMessage, MessageMeta, PendingFrame, Reply, PENDING_PER_LOGIN};
use crate::master::ws::mock::{self, MockStream};
use crate::master::ws::WsEvent;
use crate::model::Credentials;
use crate::protocol::push::parse_push;
use serde_json::{json, Value};
use std::time::Duration;

const LIMIT: usize = 1 << 20;
const CONTENT: &str = r#"{"type":"text","value":"say \"hi\" \u00e9\n"}"#;

/// A connection that asked the router to log it in.
struct Client {
    conn: ConnId,
    uid: u64,
    source: &'static str,
    stream: MockStream,
}

/// A router and its sessions, at one instant.
struct T {
    now: Instant,
    ws: Sessions<MockStream>,
    r: Router,
}

impl T {
    fn with(r: Router) -> T {
        let (now, ws) = (Instant::now(), mock::sessions());
        T { now, ws, r }
    }

    fn new(backup: bool, limit: usize) -> T {
        T::with(Router::new(
            1,
            StoreQueue::new(1, backup, limit, 1000),
            None,
        ))
    }

    fn cluster() -> T {
        let store = StoreQueue::new(1, true, LIMIT, 1000);
        T::with(Router::new(1, store, Some("127.0.0.1:9501".into())))
    }

    /// What `c`'s client got since the last look: text frames as JSON, a close as
    /// `{"close": code}`.
    fn got(&mut self, c: &Client) -> Vec<Value> {
        self.ws.flush();
        let frame = |(op, p): (u8, Vec<u8>)| match op {
            1 => Some(serde_json::from_slice(&p).expect("a JSON frame")),
            8 => Some(json!({"close": u16::from_be_bytes([p[0], p[1]])})),
            _ => None,
        };
        let frames = mock::server_frames(&c.stream.take_written());
        frames.into_iter().filter_map(frame).collect()
    }

    fn actions(&mut self) -> Vec<Action> {
        self.r.take_actions()
    }

    /// What the loop turn's Store tasks keep, as `stored` rows.
    fn kept(&mut self) -> Vec<String> {
        self.r.submit_store_batches();
        stored(&self.actions())
    }

    /// A client of `uid` upgraded, its login check asked of the router (its Login task checked).
    fn arrive(&mut self, uid: u64, source: &'static str, device: Option<&str>) -> Client {
        let stream = MockStream::default();
        stream.send(&mock::upgrade_request(uid, source, device));
        let conn = self.ws.next_id();
        let peer = "127.0.0.1:40000".parse().expect("addr");
        self.ws.insert(conn, stream.clone(), peer, self.now);
        self.ws.on_readable(conn, self.now);
        let event = self.ws.take_events().pop();
        let Some(WsEvent::Login { login, .. }) = event else {
            panic!("{event:?}")
        };
        self.r.login_requested(conn, login);
        let (uid_, token, source_) = (Uid(uid), format!("t{uid}"), src(source));
        let creds = Credentials {
            uid: uid_,
            token,
            source: source_,
        };
        let actions = self.actions();
        let login = tasks(&actions)
            .into_iter()
            .map(|(key, t, _)| format!("{key} {t:?}"));
        assert_eq!(
            login.collect::<Vec<_>>(),
            [format!("{uid} {:?}", Task::Login(creds))]
        );
        Client {
            conn,
            uid,
            source,
            stream,
        }
    }

    fn answer(&mut self, c: &Client, reply: Reply) {
        let (uid, source) = (Uid(c.uid), src(c.source));
        let (ws, now) = (&mut self.ws, self.now);
        self.r.login_answered(ws, c.conn, uid, source, reply, now);
    }

    /// A client logged in (welcomed, in a cluster), with nothing left to look at.
    fn online(&mut self, uid: u64, source: &'static str) -> Client {
        let c = self.arrive(uid, source, None);
        self.answer(&c, pending(vec![]));
        self.r.welcome(&mut self.ws, c.conn);
        self.actions();
        self.got(&c);
        c
    }

    /// A chat of `content` (raw JSON) from `c` to `to`.
    fn chat(&mut self, c: &Client, to: u64, content: &str, in_flight: usize) {
        let text = format!(r#"{{"to_uid":"{to}","type":"text","content":{content}}}"#);
        let range = text.len() - 1 - content.len()..text.len() - 1;
        let (ws, conn, from, to) = (&mut self.ws, c.conn, Uid(c.uid), Uid(to));
        let (text, now) = (text.as_bytes(), self.now);
        self.r
            .chat(ws, conn, from, to, "text", text, range, in_flight, now);
    }

    fn push(&mut self, body: &str, in_flight: usize) -> PushOutcome {
        let req = parse_push(body.as_bytes(), Some("k"), None);
        let (req, now) = (req.expect("a valid push"), self.now);
        self.r.push(&mut self.ws, req, udp(), in_flight, now)
    }

    /// An inbound cluster message, as another node publishes it (JSON).
    fn inbound(&mut self, json: &[u8]) {
        let message = ClusterMessage::from_json(json).expect("readable");
        self.r.cluster_message(&mut self.ws, message, self.now);
    }
}

fn src(s: &str) -> Source {
    Source::new(s).expect("source")
}

fn udp() -> ReplyTo {
    ReplyTo::Udp("127.0.0.1:9000".parse().expect("addr"))
}

fn pending(frames: Vec<PendingFrame>) -> Reply {
    let store_down = false;
    Reply::Pending { frames, store_down }
}

/// The tasks among `actions`, decoded: (key, task, origin).
fn tasks(actions: &[Action]) -> Vec<(u64, Task<'_>, &Origin)> {
    let mut tasks = Vec::new();
    for a in actions {
        if let Action::Task { key, body, origin } = a {
            let task = ipc::decode::<Task>(body).expect("a task body");
            tasks.push((*key, task, origin));
        }
    }
    tasks
}

/// The tasks among `actions` as they go: (key, body, origin).
fn bodies(actions: &[Action]) -> Vec<(u64, Bytes, String)> {
    let body = |a: &Action| match a {
        Action::Task { key, body, origin } => Some((*key, body.clone(), format!("{origin:?}"))),
        _ => None,
    };
    actions.iter().filter_map(body).collect()
}

/// Each action by name (a task by its task's name).
fn names(actions: &[Action]) -> Vec<String> {
    let name = |a: &Action| match a {
        Action::Task { body, .. } => {
            let task = format!("{:?}", ipc::decode::<Task>(body).expect("a task"));
            task.split([' ', '(', '{'])
                .next()
                .unwrap_or_default()
                .to_owned()
        }
        Action::Reply { .. } => "Reply".into(),
        Action::Presence(_) => "Presence".into(),
        Action::AwaitPresence(_) => "AwaitPresence".into(),
    };
    actions.iter().map(name).collect()
}

/// The rows of every Store task, as `id from>to kind Delivery content`.
fn stored(actions: &[Action]) -> Vec<String> {
    let mut rows = Vec::new();
    for (_, task, _) in tasks(actions) {
        if let Task::Store(batch) = task {
            rows.extend(batch.iter().map(|m| {
                let (id, from, to, kind, content) = (m.id, m.from, m.to, m.kind, m.content);
                format!("{id} {from}>{to} {kind} {:?} {content}", m.delivery)
            }));
        }
    }
    rows
}

/// The ids of every Requeue task, one list per task.
fn requeued(actions: &[Action]) -> Vec<Vec<u64>> {
    let ids = |(_, t, _)| match t {
        Task::Requeue(ids) => Some(ids.iter().map(|i| i.0).collect()),
        _ => None,
    };
    tasks(actions).into_iter().filter_map(ids).collect()
}

/// The replies among `actions`: (status, JSON body).
fn replies(actions: &[Action]) -> Vec<(u16, Value)> {
    let reply = |a: &Action| match a {
        Action::Reply { to, status, body } if *to == udp() => {
            Some((*status, serde_json::from_str(body).expect("a JSON reply")))
        }
        _ => None,
    };
    actions.iter().filter_map(reply).collect()
}

/// A push answered at once: its status and JSON body.
fn now_reply(outcome: PushOutcome) -> (u16, Value) {
    let PushOutcome::Now { status, body } = outcome else {
        panic!("later")
    };
    (status, serde_json::from_str(&body).expect("a JSON reply"))
}

fn login_frame(c: &Client) -> Value {
    let data = json!({"uid": c.uid.to_string(), "source": c.source, "fd": c.conn.0});
    json!({"type":"login","code":200,"message":"ok","data":data})
}

fn refused(code: u16, message: &str) -> Value {
    json!({"type":"login","code":code,"message":message,"data":[]})
}

fn close(code: u16) -> Value {
    json!({ "close": code })
}

fn chat_json(id: &str, from: u64, to: u64, time: u64, state: u8, content: &str) -> Value {
    let content: Value = serde_json::from_str(content).expect("JSON content");
    let (from, to) = (from.to_string(), to.to_string());
    json!({"id":id,"type":"text","uid":from,"to_uid":to,"time":time,"state":state,"content":content})
}

fn ack(id: &str, to: u64, state: u8) -> Value {
    json!({"type":"ack","id":id,"to_uid":to.to_string(),"state":state})
}

/// The `time` of a frame, checked to be now.
fn time_of(v: &Value) -> u64 {
    let t = v["time"].as_u64().expect("a time");
    assert!(t.abs_diff(crate::ids::unix_now()) <= 2, "{v}");
    t
}

/// The message id of a frame or a push reply.
fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("an id").to_owned()
}

/// A message kept for 9, as a worker hands it back (state 0).
fn kept(id: u64, content: &str) -> PendingFrame {
    let id = MessageId(id);
    let (frame, _) = frames::message(id, "text", Uid(7), Uid(9), 1000, 0, content);
    let frame = frame.to_vec();
    PendingFrame { id, frame }
}

fn kept_json(id: u64, content: &str) -> Value {
    chat_json(&id.to_string(), 7, 9, 1000, 0, content)
}

fn message(id: u64, to: u64, content: &str) -> Rc<Message> {
    let (id, from, to, time, kind) = (MessageId(id), Uid(7), Uid(to), 1000, Kind::Named("text"));
    let (frame, layout) = frames::message(id, "text", from, to, time, 1, content);
    let content = Some(layout.content);
    Rc::new(Message {
        id,
        from,
        to,
        time,
        frame,
        kind,
        content,
    })
}

/// The cluster's form of `m`'s delivery: `content` where its JSON text has it.
fn deliver(m: &Message, content: Option<(u32, u32)>) -> ClusterMessage<'_> {
    let (id, from, time, kind) = (m.id, m.from, m.time, m.kind().into());
    let meta = MessageMeta {
        id,
        from,
        time,
        kind,
        content,
    };
    let (uid, frame) = (m.to, m.json());
    ClusterMessage::Deliver { uid, meta, frame }
}

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

#[test]
fn a_login_displaces_the_older_connection_of_its_uid_and_source() {
    let elsewhere = || vec![refused(441, "logged in elsewhere"), close(4002)];
    for (old_device, new_device, to_old) in [
        (Some("dev"), Some("other"), elsewhere()),
        (None, None, elsewhere()),
        (Some("dev"), Some("dev"), vec![close(4002)]),
    ] {
        let mut t = T::new(false, LIMIT);
        let old = t.arrive(9, "app", old_device);
        t.answer(&old, pending(vec![]));
        let web = t.online(9, "web");
        assert_eq!(t.got(&old), [login_frame(&old)]);
        let new = t.arrive(9, "app", new_device);
        t.answer(&new, pending(vec![]));
        assert_eq!(t.got(&old), to_old, "{old_device:?} then {new_device:?}");
        assert_eq!(t.got(&new), [login_frame(&new)]);
        assert!(t.got(&web).is_empty(), "another source stays");
        let entries = t.r.registry().connections_of(Uid(9));
        let conns: Vec<ConnId> = entries.iter().map(|e| e.conn).collect();
        assert!(conns.len() == 2 && conns.contains(&new.conn) && !conns.contains(&old.conn));
        assert_eq!(t.r.stats().logins, 3);
    }
}

#[test]
fn a_refused_or_unchecked_login_gets_its_code_and_close() {
    for (reply, code, message, close_code) in [
        (Reply::Refused(Expired), 401, "expired", 4001),
        (Reply::Refused(Unauthorized), 401, "unauthorized", 4001),
        (
            Reply::Failed(StoreUnavailable),
            503,
            "service unavailable",
            1013,
        ),
    ] {
        let mut t = T::new(false, LIMIT);
        let c = t.arrive(9, "app", None);
        t.answer(&c, reply);
        assert_eq!(t.got(&c), [refused(code, message), close(close_code)]);
        assert!(!t.r.registry().is_online(Uid(9)));
        assert!(t.actions().is_empty());
        let stats = t.r.stats();
        assert_eq!((stats.logins, stats.logins_refused), (0, 1));
    }
}

#[test]
fn a_login_answered_after_its_client_left_requeues_what_was_taken_for_it() {
    let mut t = T::new(false, LIMIT);
    let c = t.arrive(9, "app", None);
    t.ws.close(c.conn, 1001, "gone", t.now);
    t.answer(&c, pending(vec![kept(5, "1"), kept(6, "2")]));
    assert_eq!(t.got(&c), [close(1001)], "no login frame");
    assert!(!t.r.registry().is_online(Uid(9)));
    assert_eq!(requeued(&t.actions()), [[5, 6]]);
}

#[test]
fn kept_messages_follow_the_login_frame_in_order_and_a_full_batch_fetches_more() {
    let mut t = T::new(false, LIMIT);
    let c = t.arrive(9, "app", None);
    let (a, b, c_) = (CONTENT, "1", "[2]");
    t.answer(&c, pending(vec![kept(103, a), kept(101, b), kept(102, c_)]));
    let kept_ones = [kept_json(103, a), kept_json(101, b), kept_json(102, c_)];
    let mut want = vec![login_frame(&c)];
    want.extend(kept_ones);
    assert_eq!(t.got(&c), want);
    assert!(t.actions().is_empty(), "nothing requeued or fetched");
    // A whole batch: more may wait.
    let c = t.arrive(10, "app", None);
    let batch = (0..PENDING_PER_LOGIN as u64).map(|i| kept(1000 + i, "0"));
    t.answer(&c, pending(batch.collect()));
    assert_eq!(t.got(&c).len(), PENDING_PER_LOGIN + 1);
    assert_eq!(names(&t.actions()), ["FetchPending"]);
}

#[test]
fn kept_messages_that_reach_no_connection_are_requeued() {
    let mut t = T::new(false, LIMIT);
    let c = t.online(9, "app");
    t.ws.close(c.conn, 1001, "bye", t.now); // closing, its Offline not applied yet
    let frames = pending(vec![kept(5, "1"), kept(6, "2")]);
    t.r.fetch_answered(&mut t.ws, Uid(9), frames, t.now);
    assert_eq!(t.got(&c), [close(1001)]);
    assert_eq!(requeued(&t.actions()), [[5, 6]]);
}

#[test]
fn a_slow_consumer_s_unsent_messages_are_kept_undelivered_then_requeued() {
    let mut t = T::new(false, LIMIT);
    let entries = || {
        let ack = Outgoing::Frame(frames::ack(MessageId(40), Uid(3), 1));
        let (id, frame) = (MessageId(42), frames::text(b"{}"));
        let message = Outgoing::Message(message(41, 9, CONTENT));
        vec![message, ack, Outgoing::Kept { id, frame }]
    };
    t.r.undelivered(Uid(9), entries());
    let actions = t.actions();
    assert_eq!(names(&actions), ["Store", "Requeue"]);
    let row = format!("41 7>9 text Undelivered {CONTENT}");
    assert_eq!(stored(&actions), [row]);
    assert_eq!(requeued(&actions), [[41, 42]]);
    // Another connection of the uid is still online: that device has them.
    t.online(9, "web");
    t.r.undelivered(Uid(9), entries());
    assert!(t.actions().is_empty() && t.r.store().is_idle());
}

#[test]
fn a_push_to_a_uid_reaches_its_connections_with_its_data_id_and_time() {
    let mut t = T::new(true, LIMIT);
    let (app, web) = (t.online(9, "app"), t.online(9, "web"));
    let data = r#"{"to_uid":"9","type":"notice","content":[1]}"#;
    let body = format!(r#"{{"sk":"k","means":"to_uid","data":{data}}}"#);
    let (status, reply) = now_reply(t.push(&body, 0));
    let id = id_of(&reply);
    let want = json!({"code":0,"msg":"ok","id":id,"delivered":2,"onLine":1});
    assert_eq!((status, reply), (200, want));
    let frame = t.got(&app);
    let time = time_of(&frame[0]);
    let want = json!({"to_uid":"9","type":"notice","content":[1],"id":id,"time":time});
    assert_eq!(frame, [want]);
    assert_eq!(t.got(&web), frame);
    assert_eq!(t.kept(), [format!("{id} 0>9 notice Delivered [1]")]);
}

#[test]
fn a_push_to_uids_gives_each_uid_its_own_message() {
    let mut t = T::new(false, LIMIT);
    let s9 = t.online(9, "app");
    let data = r#"{"to_uids":["10","9"],"uid":"3","content":1}"#;
    let body = format!(r#"{{"sk":"k","means":"to_uids","data":{data}}}"#);
    let (status, reply) = now_reply(t.push(&body, 0));
    let first = id_of(&reply);
    let counts = (status, &reply["delivered"], &reply["onLine"]);
    assert_eq!(counts, (200, &json!(1), &json!(1)));
    let number = |id: &str| id.parse::<u64>().expect("a decimal id");
    let second = id_of(&t.got(&s9)[0]);
    assert!(
        number(&second) > number(&first),
        "the reply names the first"
    );
    let row = format!("{first} 3>10 push Undelivered 1");
    assert_eq!(t.kept(), [row], "9 got its own");
}

#[test]
fn a_broadcast_and_a_to_fd_push_reach_only_logged_in_connections() {
    let mut t = T::new(true, LIMIT);
    let (a, b) = (t.online(9, "app"), t.online(10, "app"));
    let waiting = t.arrive(11, "app", None);
    let body = r#"{"sk":"k","means":"broadcast","data":{"x":1}}"#;
    let (_, reply) = now_reply(t.push(body, 0));
    assert_eq!(reply["delivered"], 2);
    let frame = t.got(&a);
    let want = json!({"x":1,"id":id_of(&reply),"time":time_of(&frame[0])});
    assert_eq!(frame, [want]);
    assert_eq!(t.got(&b), frame);
    assert!(t.got(&waiting).is_empty());
    for (fd, delivered) in [(a.conn.0, 1), (waiting.conn.0, 0)] {
        let body = format!(r#"{{"sk":"k","means":"to_fd","data":{{"to_fd":{fd}}}}}"#);
        assert_eq!(now_reply(t.push(&body, 0)).1["delivered"], delivered);
    }
    assert_eq!(t.got(&a).len(), 1);
    assert!(t.got(&b).is_empty() && t.got(&waiting).is_empty());
    assert!(t.kept().is_empty(), "broadcasts are not kept");
}

#[test]
fn online_lists_the_sources_and_kick_closes_every_connection_with_4003() {
    let mut t = T::new(false, LIMIT);
    let (web, app) = (t.online(9, "web"), t.online(9, "app"));
    let online = |uid: u64| {
        let data = format!(r#"{{"uid":"{uid}"}}"#);
        format!(r#"{{"sk":"k","means":"online","data":{data}}}"#)
    };
    let sources = json!({"code":0,"msg":"ok","onLine":1,"sources":["app","web"]});
    assert_eq!(now_reply(t.push(&online(9), 0)), (200, sources));
    let none = json!({"code":0,"msg":"ok","onLine":0,"sources":[]});
    assert_eq!(now_reply(t.push(&online(10), 0)), (200, none));
    let kick = r#"{"sk":"k","means":"kick","data":{"uid":"9"}}"#;
    let kicked = json!({"code":0,"msg":"ok","delivered":2,"onLine":1});
    assert_eq!(now_reply(t.push(kick, 0)), (200, kicked));
    assert_eq!(t.got(&app), [close(4003)]);
    assert_eq!(t.got(&web), [close(4003)]);
}

#[test]
fn a_full_store_backlog_refuses_chats_and_pushes_with_503() {
    let (id, time) = (IdGenerator::new(1).next_id(), crate::ids::unix_now());
    let (frame, _) = frames::message(id, "text", Uid(7), Uid(9), time, 1, "1");
    let full = 4 * frame.len();
    let mut t = T::new(true, full);
    let (s7, s9) = (t.online(7, "app"), t.online(9, "app"));
    for _ in 0..4 {
        t.chat(&s7, 9, "1", 0);
    }
    assert_eq!((t.got(&s7).len(), t.got(&s9).len()), (4, 4));
    assert!(!t.r.store().has_room(0));
    let busy = [json!({"type":"error","code":503,"message":"busy: try again later"})];
    let msg = "busy: the store is behind, try again later";
    let busy_push = (503, json!({"code":503,"msg":msg}));
    let to_9 = r#"{"sk":"k","means":"to_uid","data":{"to_uid":"9"}}"#;
    t.chat(&s7, 9, "1", 0);
    assert_eq!(t.got(&s7), busy);
    assert_eq!(now_reply(t.push(to_9, 0)), busy_push);
    assert!(t.got(&s9).is_empty());
    assert_eq!(t.r.stats().refused_busy, 2);
    assert_eq!(t.kept().len(), 4, "only what was accepted");
    // Handed to the pool: the bytes in flight count there.
    t.chat(&s7, 9, "1", full);
    assert_eq!(t.got(&s7), busy);
    assert_eq!(now_reply(t.push(to_9, full)), busy_push);
    assert!(t.got(&s9).is_empty() && t.kept().is_empty());
    assert_eq!(t.r.stats().refused_busy, 4);
    t.chat(&s7, 9, "1", 0);
    assert_eq!(t.got(&s9).len(), 1, "room again");
}

/// A chat to an offline uid, kept, its Store task submitted: (key, body).
fn store_task(t: &mut T, sender: &Client) -> (u64, Bytes) {
    t.chat(sender, 9, "1", 0);
    t.r.submit_store_batches();
    let tasks = bodies(&t.actions());
    let [(key, body, origin)] = &tasks[..] else {
        panic!("{tasks:?}")
    };
    assert_eq!(origin, "Store");
    (*key, body.clone())
}

#[test]
fn failed_store_writes_wait_for_a_probe_that_releases_them() {
    let mut t = T::new(false, LIMIT);
    let s7 = t.online(7, "app");
    let failed = || Reply::Failed(StoreUnavailable);
    let (key, first) = store_task(&mut t, &s7);
    t.r.store_answered(key, first.clone(), false, failed(), t.now);
    let (_, second) = store_task(&mut t, &s7);
    t.r.store_answered(key, second.clone(), false, failed(), t.now);
    assert_eq!(t.r.store().waiting_for_retry(), 2);
    t.r.probe_store(t.now);
    assert!(t.actions().is_empty(), "not due yet");
    let later = t.now + Duration::from_secs(1);
    t.r.probe_store(later);
    let probe = (9, first.clone(), "StoreProbe".to_owned());
    assert_eq!(bodies(&t.actions()), [probe]);
    assert_eq!(t.r.store().waiting_for_retry(), 1);
    t.r.store_answered(key, first, true, Reply::Ok, later);
    assert_eq!(bodies(&t.actions()), [(9, second, "Store".to_owned())]);
    assert_eq!(t.r.store().waiting_for_retry(), 0);
}

#[test]
fn a_write_the_store_refuses_is_counted_and_not_retried() {
    let mut t = T::new(false, LIMIT);
    let s7 = t.online(7, "app");
    let (key, body) = store_task(&mut t, &s7);
    let refused = Reply::Failed(StoreRefused);
    t.r.store_answered(key, body.clone(), false, refused, t.now);
    let partly = Reply::PartlyStored { refused: 2 };
    t.r.store_answered(key, body, false, partly, t.now);
    assert_eq!(t.r.stats().store_refused, 3);
    assert_eq!(t.r.store().waiting_for_retry(), 0);
    t.r.probe_store(t.now + Duration::from_secs(5));
    assert!(t.actions().is_empty());
}

/// The one Route task among `actions`: its waiter, and the message it carries.
fn route(actions: &[Action]) -> (WaiterId, Vec<u8>) {
    let tasks = tasks(actions);
    let [(
        key,
        Task::Route {
            uid,
            include_self,
            message,
        },
        origin,
    )] = &tasks[..]
    else {
        panic!("{:?}", names(actions))
    };
    assert_eq!((*key, *include_self), (uid.0, true));
    let Origin::Route { waiter, part: 0 } = origin else {
        panic!("{origin:?}")
    };
    (*waiter, message.to_json())
}

#[test]
fn in_a_cluster_a_chat_is_routed_and_acked_by_the_route_s_answer() {
    let mut t = T::cluster();
    let (s7, s9) = (t.online(7, "app"), t.online(9, "app"));
    let answers = [
        (Reply::Routed { nodes: 1 }, false),
        (Reply::Failed(TimedOut), true),
    ];
    for (reply, here) in answers {
        t.chat(&s7, 9, CONTENT, 0);
        assert!(
            t.got(&s9).is_empty() && t.got(&s7).is_empty(),
            "all waits for Redis"
        );
        let (waiter, wire) = route(&t.actions());
        let Ok(ClusterMessage::Deliver {
            uid: Uid(9),
            meta,
            frame,
        }) = ClusterMessage::from_json(&wire)
        else {
            panic!("not a delivery")
        };
        let v: Value = serde_json::from_slice(frame).expect("JSON");
        let id = id_of(&v);
        assert_eq!(v, chat_json(&id, 7, 9, time_of(&v), 1, CONTENT));
        let (at, len) = meta.content.expect("content");
        let content = &frame[at as usize..(at + len) as usize];
        assert_eq!(content, CONTENT.as_bytes());
        let meta = (meta.id.to_string(), meta.from, &*meta.kind);
        assert_eq!(meta, (id.clone(), Uid(7), "text"));
        t.r.route_answered(&mut t.ws, waiter, 0, reply.clone(), t.now);
        assert_eq!(t.got(&s7), [ack(&id, 9, 1)]);
        let local = if here { vec![v] } else { vec![] };
        assert_eq!(t.got(&s9), local, "{reply:?}: here only as a fallback");
        assert_eq!(t.kept(), [format!("{id} 7>9 text Delivered {CONTENT}")]);
    }
}

#[test]
fn in_a_cluster_inbound_messages_reach_local_connections_and_displace_them() {
    let mut t = T::cluster();
    let (s9, s10) = (t.online(9, "app"), t.online(10, "app"));
    t.inbound(&deliver(&message(55, 9, CONTENT), None).to_json());
    assert_eq!(t.got(&s9), [chat_json("55", 7, 9, 1000, 1, CONTENT)]);
    assert!(t.got(&s10).is_empty());
    let fd = s9.conn.0;
    let wire = format!(r#"{{"t":"displace","uid":"9","source":"app","fd":{fd}}}"#);
    t.inbound(wire.as_bytes());
    let displaced = [refused(441, "logged in elsewhere"), close(4002)];
    assert_eq!(t.got(&s9), displaced);
    assert!(t.got(&s10).is_empty());
}

/// A push in a cluster, each of its routes answered in turn: what came out at the end.
fn routed_push(t: &mut T, body: &str, answers: Vec<Reply>) -> Vec<Action> {
    assert_eq!(t.push(body, 0), PushOutcome::Later);
    let actions = t.actions();
    let origins = tasks(&actions).into_iter().map(|(_, _, o)| o.clone());
    let origins: Vec<Origin> = origins.collect();
    assert_eq!(origins.len(), answers.len());
    for (origin, reply) in origins.into_iter().zip(answers) {
        let Origin::Route { waiter, part } = origin else {
            panic!("{origin:?}")
        };
        assert!(t.actions().is_empty(), "no reply before every route's");
        t.r.route_answered(&mut t.ws, waiter, part, reply, t.now);
    }
    t.actions()
}

#[test]
fn in_a_cluster_a_push_is_answered_once_every_part_is_routed() {
    let mut t = T::cluster();
    let s9 = t.online(9, "app");
    let body = r#"{"sk":"k","means":"to_uids","data":{"to_uids":["9","10"],"content":1}}"#;
    let routed = vec![Reply::Routed { nodes: 1 }, Reply::Routed { nodes: 0 }];
    let actions = routed_push(&mut t, body, routed);
    let [(200, reply)] = &replies(&actions)[..] else {
        panic!("{actions:?}")
    };
    let counts = (&reply["delivered"], &reply["onLine"]);
    assert_eq!(counts, (&json!(1), &json!(1)));
    assert!(t.got(&s9).is_empty(), "delivered through Redis");
    let (id, kept) = (id_of(reply), t.kept());
    assert!(
        kept[0].starts_with(&format!("{id} 0>9 push Delivered")),
        "{kept:?}"
    );
    assert!(kept[1].ends_with(" 0>10 push Undelivered 1"), "{kept:?}");
    // Redis is down: what is local is delivered here; nobody local is a 503, nothing kept.
    let failed = |n: usize| vec![Reply::Failed(StoreUnavailable); n];
    let actions = routed_push(&mut t, body, failed(2));
    assert_eq!(replies(&actions)[0].1["delivered"], 1);
    assert_eq!(t.got(&s9).len(), 1);
    assert_eq!(t.kept().len(), 2);
    let to_10 = r#"{"sk":"k","means":"to_uid","data":{"to_uid":"10"}}"#;
    let actions = routed_push(&mut t, to_10, failed(1));
    let cannot = json!({"code":503,"msg":"cannot route: redis is down"});
    assert_eq!(replies(&actions), [(503, cannot)]);
    assert!(t.kept().is_empty());
}

#[test]
fn in_a_cluster_the_login_frame_waits_for_the_presence_write() {
    let mut t = T::cluster();
    let c = t.arrive(9, "app", Some("dev"));
    t.answer(&c, pending(vec![kept(5, "1")]));
    assert!(t.got(&c).is_empty(), "held until welcome");
    let actions = t.actions();
    let [Action::Presence(p), Action::AwaitPresence(waits)] = &actions[..] else {
        panic!("{:?}", names(&actions))
    };
    let change = (p.uid, p.source, p.conn, p.online, p.device.as_deref());
    assert_eq!(change, (Uid(9), src("app"), c.conn, true, Some("dev")));
    assert_eq!(*waits, c.conn);
    t.r.welcome(&mut t.ws, c.conn);
    assert_eq!(t.got(&c), [login_frame(&c), kept_json(5, "1")]);
    assert_eq!(names(&t.actions()), ["FetchPending"]);
    t.r.offline(c.conn, Uid(9), src("app"));
    let actions = t.actions();
    let gone = matches!(&actions[..], [Action::Presence(p)] if p.conn == c.conn && !p.online);
    assert!(gone, "{actions:?}");
}

#[test]
fn in_a_cluster_what_was_held_and_no_longer_fits_at_welcome_is_requeued() {
    let mut t = T::cluster();
    let c = t.arrive(9, "app", None);
    let room = t.ws.config().send_buffer;
    let sized = |n: usize| kept(5, &format!("\"{}\"", "x".repeat(n)));
    let beside = sized(room).frame.len() - room; // the header and the fields around the content
    let big = sized(room - 20 - beside);
    assert_eq!(big.frame.len(), room - 20, "fits in what is held");
    t.answer(&c, pending(vec![big]));
    t.actions();
    t.r.welcome(&mut t.ws, c.conn);
    let (sent, actions) = (t.got(&c).len(), t.actions());
    let ok = sent == 2 || requeued(&actions) == [[5]];
    assert!(
        ok,
        "5 neither sent ({sent}) nor requeued: {:?}",
        names(&actions)
    );
}

#[test]
fn in_a_cluster_an_inbound_message_no_local_connection_takes_is_kept_undelivered() {
    let mut t = T::cluster();
    let c = t.online(9, "app");
    t.ws.close(c.conn, 1001, "bye", t.now); // closing, its Offline not applied yet
    let m = message(55, 9, CONTENT);
    let (end, len) = (m.json().len() as u32 - 1, CONTENT.len() as u32);
    t.inbound(&deliver(&m, Some((end - len, len))).to_json());
    assert_eq!(t.kept(), [format!("55 7>9 text Undelivered {CONTENT}")]);
}

#[test]
fn after_redis_returns_presence_is_rewritten_and_kept_messages_fetched() {
    let mut t = T::cluster();
    let (a, b) = (t.online(9, "app"), t.online(9, "web"));
    t.r.resync();
    let actions = t.actions();
    assert_eq!(names(&actions), ["Resync", "FetchPending"]);
    let tasks = tasks(&actions);
    let (key, Task::Resync(changes), _) = &tasks[0] else {
        panic!("not a resync")
    };
    assert_eq!(*key, PRESENCE_KEY);
    let mut conns: Vec<_> = changes.iter().map(|c| (c.conn.0, c.online)).collect();
    conns.sort();
    assert_eq!(conns, [(a.conn.0, true), (b.conn.0, true)]);
}
