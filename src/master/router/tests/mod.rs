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

    /// A client upgraded with `request`, its login asked of the router.
    fn upgrade(&mut self, request: &[u8]) -> (ConnId, MockStream) {
        let stream = MockStream::default();
        stream.send(request);
        let conn = self.ws.next_id();
        let peer = "127.0.0.1:40000".parse().expect("addr");
        self.ws.insert(conn, stream.clone(), peer, self.now);
        self.ws.on_readable(conn, self.now);
        let event = self.ws.take_events().pop();
        let Some(WsEvent::Login { login, .. }) = event else {
            panic!("{event:?}")
        };
        self.r.login_requested(conn, login, self.now);
        (conn, stream)
    }

    /// A client of `uid` upgraded, its login check asked of the router (its Login task checked).
    fn arrive(&mut self, uid: u64, source: &'static str, device: Option<&str>) -> Client {
        let (conn, stream) = self.upgrade(&mock::upgrade_request(uid, source, device));
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
        // A cluster login takes what other nodes kept for it once welcomed: nothing here.
        if names(&self.actions()).contains(&"FetchPending".to_owned()) {
            let (ws, now) = (&mut self.ws, self.now);
            self.r.fetch_answered(ws, Uid(uid), pending(vec![]), now);
        }
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

/// A take of kept messages as a worker answers it (`more` when it reached its row limit).
fn pending(frames: Vec<PendingFrame>) -> Reply {
    let more = frames.len() >= PENDING_PER_LOGIN;
    Reply::Pending {
        frames,
        store_down: false,
        more,
    }
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
        Task::Requeue { ids, .. } => Some(ids.iter().map(|i| i.0).collect()),
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

mod chat;
mod cluster;
mod groups;
mod login;
mod push;
