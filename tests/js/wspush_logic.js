// The logic of the browser library (src/master/api/wspush.js) against a fake WebSocket that
// the test drives frame by frame: what a real server cannot be made to do on demand (answer a
// group, answer late, redeliver a message already shown, stop answering pings). Evaluated in
// Chromium by tests/the_browser_library_reconnects_and_delivers_each_message_once.rs;
// `wspushLogic(WsPush)` resolves with {checks, failures}. Waits poll with deadlines; the only
// fixed waits are windows in which something must NOT happen, a few backoff ceilings long.

async function wspushLogic(WsPush) {
  const failures = [];
  let checks = 0;
  const check = (ok, what) => {
    checks += 1;
    if (!ok) failures.push(what);
  };
  const pause = (ms) => new Promise((r) => setTimeout(r, ms));
  const waitFor = async (cond, what, ms) => {
    const deadline = Date.now() + (ms || 3000);
    while (!cond()) {
      if (Date.now() > deadline) throw new Error("timed out waiting for " + what);
      await pause(2);
    }
  };
  const settle = (p) => p.then((v) => ({ ok: true, v }), (e) => ({ ok: false, e }));

  class FakeSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      FakeSocket.all.push(this);
    }
    send(text) {
      if (this.readyState !== 1) throw new Error("send on a socket that is not open");
      this.sent.push(text);
    }
    close(code) {
      this.readyState = 3;
      this.closedWith = code;
    }
    open() {
      this.readyState = 1;
      this.onopen && this.onopen({});
    }
    frame(f) {
      this.onmessage && this.onmessage({ data: typeof f === "string" ? f : JSON.stringify(f) });
    }
    login(uid) {
      this.open();
      this.frame({ type: "login", code: 200, message: "ok", data: { uid: uid, source: "app", fd: FakeSocket.all.length } });
    }
    drop(code, reason) {
      this.readyState = 3;
      this.onclose && this.onclose({ code: code, reason: reason || "" });
    }
    sentFrames() {
      return this.sent.filter((t) => t !== '{"type":"ping"}').map((t) => JSON.parse(t));
    }
  }
  FakeSocket.all = [];
  const last = () => FakeSocket.all[FakeSocket.all.length - 1];
  const nextSocket = async (after) => {
    await waitFor(() => last() !== after, "a new connection");
    return last();
  };

  function client(extra) {
    const got = [];
    const statuses = [];
    const options = Object.assign(
      {
        token: "T",
        WebSocket: FakeSocket,
        backoffInitial: 20,
        backoffMax: 80,
        ackTimeout: 2000,
        stableAfter: 100000,
        pingInterval: 100000,
        onMessage: (m) => got.push(m),
        onStatus: (s) => statuses.push(s),
      },
      extra || {}
    );
    const c = new WsPush("ws://fake/", options);
    return { c, got, statuses };
  }
  const chat = (id, value, state) => ({ id: id, type: "chat", uid: "2", to_uid: "5", time: 1, state: state, content: { type: "text", value: value } });

  try {
    // --- The URL, and each message once across a reconnect that redelivers. ---
    {
      const { c, got, statuses } = client({ device: "phone 1" });
      const s1 = last();
      check(s1.url === "ws://fake/?access_token=T&token=phone%201", "URL with token and device: " + s1.url);
      s1.login("5");
      check(c.state === "online" && c.login.uid === "5", "online after the login frame");
      s1.frame(chat("10", "a", 1));
      s1.frame(chat("11", "b", 1));
      s1.drop(1006);
      const off = statuses[statuses.length - 1];
      check(off.state === "offline" && off.code === 1006, "offline after a drop: " + JSON.stringify(off));
      check(off.retryIn >= 10 && off.retryIn <= 20, "first retry within [10, 20] ms: " + off.retryIn);
      const s2 = await nextSocket(s1);
      s2.login("5");
      // The stored messages come again, one new one behind them.
      s2.frame(chat("10", "a", 0));
      s2.frame(chat("11", "b", 0));
      s2.frame(chat("12", "c", 0));
      s2.frame(chat("12", "c", 0));
      check(JSON.stringify(got.map((m) => m.id)) === '["10","11","12"]', "each message once: " + got.map((m) => m.id));
      // Frames without an id (a push of anything) still reach onMessage; pongs do not.
      s2.frame({ type: "pong" });
      s2.frame({ type: "notice", content: 1 });
      check(got.length === 4 && got[3].type === "notice", "a frame without an id is delivered");
      c.close();
      check(c.state === "closed" && statuses[statuses.length - 1].state === "closed", "closed by close()");
      check(s2.closedWith === 1000, "close() closes the socket with 1000");
    }

    // --- The dedupe window is bounded: the oldest ids are forgotten. ---
    {
      const { c, got } = client({ dedupeWindow: 3 });
      const s = last();
      s.login("5");
      for (const id of ["1", "2", "3", "4"]) s.frame(chat(id, id, 1));
      s.frame(chat("2", "2", 0)); // still remembered
      s.frame(chat("1", "1", 0)); // forgotten: out of the window of 3
      check(JSON.stringify(got.map((m) => m.id)) === '["1","2","3","4","1"]', "window of 3 ids: " + got.map((m) => m.id));
      c.close();
    }

    // --- Backoff: doubles to its cap, with jitter; starts over after a stable connection. ---
    {
      const { c, statuses } = client({ stableAfter: 30 });
      let s = last();
      const ceilings = [20, 40, 80, 80, 80];
      for (const ceiling of ceilings) {
        s.drop(1006);
        const st = statuses[statuses.length - 1];
        check(st.state === "offline" && st.retryIn >= ceiling / 2 && st.retryIn <= ceiling, "retry within [" + ceiling / 2 + ", " + ceiling + "]: " + st.retryIn);
        s = await nextSocket(s);
      }
      s.login("5");
      await pause(40); // longer than stableAfter: the connection counts as stable
      s.drop(1001, "server shutting down");
      const st = statuses[statuses.length - 1];
      check(st.retryIn <= 20 && st.reason === "server shutting down", "backoff starts over after a stable connection: " + JSON.stringify(st));
      c.close();
    }

    // --- 4001, 4002 and 4003 stop for good, with the reason; others reconnect. ---
    for (const [code, reason, frame, expected] of [
      [4001, "", { type: "login", code: 401, message: "expired", data: [] }, "expired"],
      [4002, "logged in elsewhere", { type: "login", code: 441, message: "logged in elsewhere", data: [] }, "logged in elsewhere"],
      [4003, "kicked", null, "kicked"],
    ]) {
      const { c, statuses } = client();
      const s = last();
      s.open();
      if (code === 4003) s.login("5");
      if (frame) s.frame(frame);
      const pending = settle(c.send("7", "x"));
      s.drop(code, reason);
      const st = statuses[statuses.length - 1];
      check(st.state === "stopped" && st.code === code && st.reason === expected, code + " stops with its reason: " + JSON.stringify(st));
      // Sent and unanswered (4003 came online): it may have been delivered, so "closed";
      // never sent (the others): "stopped".
      const r = await pending;
      const why = code === 4003 ? "closed" : "stopped";
      check(!r.ok && r.e.code === why, code + ": the waiting send is rejected as " + why + ": " + (r.e && r.e.code));
      const after = await settle(c.send("7", "y"));
      check(!after.ok && after.e.code === "stopped", code + ": send after the stop is rejected");
      await pause(4 * 80); // four backoff ceilings: no reconnection comes
      check(last() === s && c.state === "stopped", code + ": no reconnection");
    }
    {
      // 1013 (token store unavailable) is retried.
      const { c } = client();
      const s = last();
      s.open();
      s.frame({ type: "login", code: 503, message: "service unavailable", data: [] });
      s.drop(1013, "service unavailable");
      check(c.state === "offline", "1013 is retried");
      await nextSocket(s);
      c.close();
    }

    // --- Sends settle by their acks and errors. ---
    {
      const { c } = client();
      const s = last();
      s.login("5");
      const p1 = settle(c.send("7", { type: "text", value: "a" }));
      const p2 = settle(c.sendToGroup("g", { type: "text", value: "b" }));
      const p3 = settle(c.send(8, "c", "notice"));
      const p4 = settle(c.sendToGroup("g2", "d"));
      const frames = s.sentFrames();
      check(JSON.stringify(frames[1]) === '{"to_group":"g","type":"chat","content":{"type":"text","value":"b"}}', "the group frame: " + JSON.stringify(frames[1]));
      check(JSON.stringify(frames[2]) === '{"to_uid":"8","type":"notice","content":"c"}', "a uid given as a number goes as a string, with its type");
      s.frame({ type: "ack", id: "101", to_uid: "7", state: 1 });
      s.frame({ type: "error", code: 403, message: "not a member of g" });
      s.frame({ type: "ack", id: "103", to_uid: "8", state: 0 });
      s.frame({ type: "ack", id: "104", to_group: "g2", state: 1 });
      const [r1, r2, r3, r4] = [await p1, await p2, await p3, await p4];
      check(r1.ok && r1.v.id === "101" && r1.v.state === 1, "uid ack");
      check(!r2.ok && r2.e.code === 403 && r2.e.message === "not a member of g" && r2.e instanceof WsPush.Error, "group error 403: " + (r2.e && r2.e.message));
      check(r3.ok && r3.v.id === "103" && r3.v.state === 0, "stored ack");
      check(r4.ok && r4.v.id === "104" && r4.v.to_group === "g2", "group ack");

      // Acks for different recipients may come out of order (a cluster): each finds its own.
      const p5 = settle(c.send("7", "e"));
      const p6 = settle(c.sendToGroup("g", "f"));
      s.frame({ type: "ack", id: "106", to_group: "g", state: 1 });
      s.frame({ type: "ack", id: "105", to_uid: "7", state: 1 });
      const [r5, r6] = [await p5, await p6];
      check(r5.ok && r5.v.id === "105" && r6.ok && r6.v.id === "106", "out-of-order acks find their sends");
      // An answer to nothing sent changes nothing.
      s.frame({ type: "ack", id: "999", to_uid: "7", state: 1 });
      s.frame({ type: "error", code: 429, message: "rate limit exceeded" });

      // Refused before sending.
      for (const [p, what] of [
        [c.send("abc", "x"), "a uid that is not digits"],
        [c.send(2 ** 60, "x"), "a uid number above 2^53"],
        [c.send("7", null), "null content"],
        [c.sendToGroup("", "x"), "an empty group"],
      ]) {
        const r = await settle(p);
        check(!r.ok && r.e.code === "invalid", what + " is refused");
      }
      check(s.sentFrames().length === 6, "nothing invalid was sent");
      c.close();
    }

    // --- A timed-out send's late ack is not taken for the next send's. ---
    {
      const { c } = client({ ackTimeout: 50 });
      const s = last();
      s.login("5");
      const r7 = await settle(c.send("9", "x"));
      check(!r7.ok && r7.e.code === "timeout", "no ack: timeout");
      const p8 = settle(c.send("9", "y"));
      s.frame({ type: "ack", id: "late", to_uid: "9", state: 1 });
      s.frame({ type: "ack", id: "right", to_uid: "9", state: 1 });
      const r8 = await p8;
      check(r8.ok && r8.v.id === "right", "the late ack went to the timed-out send: " + JSON.stringify(r8.v));
      c.close();
    }

    // --- Unanswered sends fail when the connection goes; sends while offline wait for it. ---
    {
      const { c } = client();
      const s = last();
      s.login("5");
      const p9 = settle(c.send("7", "lost?"));
      s.drop(1006);
      const r9 = await p9;
      check(!r9.ok && r9.e.code === "closed", "a send without its answer fails when the connection goes");
      const p10 = settle(c.send("7", "queued"));
      const s2 = await nextSocket(s);
      s2.open();
      check(s2.sentFrames().length === 0, "nothing is sent before the login");
      s2.frame({ type: "login", code: 200, message: "ok", data: { uid: "5", source: "app", fd: 9 } });
      check(s2.sentFrames().length === 1 && s2.sentFrames()[0].content === "queued", "the waiting send goes after the login");
      s2.frame({ type: "ack", id: "110", to_uid: "7", state: 1 });
      const r10 = await p10;
      check(r10.ok && r10.v.id === "110", "the waiting send is acked");
      c.close();
    }

    // --- Pings keep the connection alive; one that stops answering is given up. ---
    {
      const { c, statuses } = client({ pingInterval: 30 });
      const s = last();
      s.login("5");
      await waitFor(() => s.sent.includes('{"type":"ping"}'), "a ping");
      s.frame({ type: "pong" });
      await waitFor(() => s.sent.filter((t) => t === '{"type":"ping"}').length >= 2, "a second ping");
      check(c.state === "online", "answered pings keep it online");
      // No pong now: at the next ping the connection counts as dead and is replaced.
      const s2 = await nextSocket(s);
      check(statuses.some((st) => st.state === "offline" && st.reason === "no answer to ping"), "given up for want of a pong");
      check(s.closedWith === 1000, "the dead socket is closed");
      c.close();
      check(s2.closedWith === 1000 || s2.readyState === 3, "close() ends the connecting socket");
    }

    // --- A token function is called before every connection. ---
    {
      let calls = 0;
      const { c } = client({ token: async () => "tok" + ++calls });
      await waitFor(() => FakeSocket.all.length && last().url.includes("access_token=tok1"), "the first token");
      const s = last();
      s.drop(1006);
      const s2 = await nextSocket(s);
      check(s2.url.includes("access_token=tok2"), "a fresh token for the reconnection: " + s2.url);
      c.close();
    }

    check(WsPush.accessToken("fe24NDU2341N", "123456", "app") === "ZmUyNE5EVTIzNDFOLjEyMzQ1Ni5hcHA,", "accessToken as PROTOCOL.md section 3");
  } catch (e) {
    failures.push("threw: " + (e && e.stack ? e.stack : e));
  }
  return { checks, failures };
}
