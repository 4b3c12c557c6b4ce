// wspush.js: the browser client of wspush (docs/PROTOCOL.md), without dependencies.
//
//   const c = new WsPush("ws://host:9501/", {token, device, onMessage, onStatus});
//   await c.send("654321", {type: "text", value: "hello"});   // resolves with the ack
//
// The server serves this file on its WebSocket port twice, wrapped at build time: as an ES
// module (/wspush.js, exports WsPush and WsPushError) and as a classic script
// (/wspush.classic.js, sets window.WsPush; WsPush.Error is WsPushError).
//
// What it does for you:
// - logs in with the access token in the URL (options.token: a string, or a function, maybe
//   async, called before every connection so that a fresh token can be fetched);
// - reconnects after a drop with exponential backoff and jitter, capped; the backoff starts
//   over once a connection has stayed up for `stableAfter` ms;
// - stops for good on close 4001 (unauthorized, expired), 4002 (logged in elsewhere) and
//   4003 (kicked): onStatus gets {state: "stopped", code, reason};
// - pings so that the server's idle timeout never closes a quiet connection, and gives up on
//   a connection that no longer answers;
// - send(toUid, content) and sendToGroup(group, content) return promises settled by the
//   server's ack or error frame, or rejected after `ackTimeout` ms;
// - hands each message to onMessage once, even when a reconnect brings stored messages that
//   were already shown (by message id, over the last `dedupeWindow` ids).

/** Close codes after which reconnecting would only repeat the refusal (PROTOCOL.md, 10). */
const WSPUSH_STOP_CODES = {
  4001: "unauthorized",
  4002: "logged in elsewhere",
  4003: "kicked",
};

const WSPUSH_DEFAULTS = {
  // The server closes a connection silent for heartbeat_idle_time (60 s by default).
  pingInterval: 25000,
  ackTimeout: 10000,
  backoffInitial: 500,
  backoffMax: 30000,
  stableAfter: 10000,
  dedupeWindow: 1000,
  // Messages waiting for a connection; past it send() rejects at once.
  maxOutbox: 1000,
};

/**
 * Why a send() failed. `code` is the server's error code (400, 403, 429, 503, ...) or one of
 * "timeout" (no answer within ackTimeout: it may still have been delivered), "closed" (the
 * connection went before the answer: it may have been delivered), "stopped" (the client was
 * stopped or closed), "outbox full", "invalid" (refused before sending).
 */
class WsPushError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "WsPushError";
    this.code = code;
  }
}

class WsPush {
  /**
   * @param {string} url  ws:// or wss:// address of the WebSocket port, e.g. "ws://host:9501/"
   * @param {object} options  token (required), device, onMessage(frame), onStatus(status),
   *   and the tunables of WSPUSH_DEFAULTS; WebSocket: another WebSocket class (tests, Node).
   */
  constructor(url, options) {
    const o = Object.assign({}, WSPUSH_DEFAULTS, options || {});
    if (o.token === undefined || o.token === null || o.token === "") {
      throw new TypeError("WsPush: options.token (the access token) is required");
    }
    this.url = url;
    this.options = o;
    /** "connecting", "online", "offline" (waiting to reconnect), "stopped" or "closed". */
    this.state = "connecting";
    /** The login frame's data ({uid, source, fd}) of the current connection. */
    this.login = null;
    this._Socket = o.WebSocket || globalThis.WebSocket;
    this._ws = null;
    // Bumped whenever a connection is given up, so that late callbacks of it are ignored.
    this._generation = 0;
    this._failures = 0;
    this._retryTimer = null;
    this._pingTimer = null;
    this._onlineSince = 0;
    this._lastHeard = 0;
    this._lastPing = 0;
    this._loginRefusal = "";
    // Sent frames waiting for their ack or error, oldest first. The server answers a
    // connection's frames in order, except that in a cluster an ack waits for Redis while
    // an error comes at once; acks for one recipient always come in order.
    this._pending = [];
    this._outbox = [];
    this._seen = new Set();
    this._seenOrder = [];
    this._onNetwork = () => {
      if (this.state === "offline") this._connectNow();
    };
    if (typeof globalThis.addEventListener === "function") {
      globalThis.addEventListener("online", this._onNetwork);
    }
    this._connect();
  }

  /** base64 of `token.uid.source` with `+/=` written `-_,` (PROTOCOL.md, section 3). */
  static accessToken(token, uid, source) {
    const text = token + "." + uid + "." + (source || "app");
    let binary = "";
    for (const b of new TextEncoder().encode(text)) binary += String.fromCharCode(b);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=/g, ",");
  }

  /** A chat to a uid (digits; a string above 2^53). Resolves with the ack frame. */
  send(toUid, content, type) {
    const to = String(toUid);
    if (!/^\d{1,19}$/.test(to) || (typeof toUid === "number" && !Number.isSafeInteger(toUid))) {
      return Promise.reject(new WsPushError("invalid", "toUid must be a uid: digits, as a string above 2^53"));
    }
    return this._submit({ to_uid: to, type: type || "chat", content: content }, "u:" + to);
  }

  /** A chat to a group. Resolves with the ack ({type:"ack", id, to_group, state}). */
  sendToGroup(group, content, type) {
    if (typeof group !== "string" || group === "") {
      return Promise.reject(new WsPushError("invalid", "group must be a non-empty string"));
    }
    return this._submit({ to_group: group, type: type || "chat", content: content }, "g:" + group);
  }

  /** Closes the connection for good; what waits for an answer is rejected ("stopped"). */
  close() {
    this._finish("closed", { state: "closed" });
  }

  // --- connecting ---

  async _connect() {
    this._retryTimer = null;
    const generation = ++this._generation;
    this._setState({ state: "connecting", attempt: this._failures + 1 });
    let token;
    try {
      token = typeof this.options.token === "function" ? await this.options.token() : this.options.token;
    } catch (e) {
      if (generation === this._generation) this._retry(0, "no token: " + ((e && e.message) || e));
      return;
    }
    if (generation !== this._generation) return;
    let ws;
    try {
      ws = new this._Socket(this._address(token));
    } catch (e) {
      // A malformed URL does not get better by retrying.
      this._finish("stopped", { state: "stopped", code: 0, reason: "cannot connect: " + e.message });
      return;
    }
    this._ws = ws;
    this._loginRefusal = "";
    ws.onopen = () => {
      if (this._ws !== ws) return;
      this._lastHeard = Date.now();
      this._startPing(ws);
    };
    ws.onmessage = (ev) => {
      if (this._ws === ws) this._frame(ev.data);
    };
    ws.onclose = (ev) => {
      if (this._ws === ws) this._dropped(ev.code, ev.reason);
    };
    ws.onerror = () => {}; // a close event follows
  }

  _address(token) {
    const sep = this.url.indexOf("?") >= 0 ? "&" : "?";
    let url = this.url + sep + "access_token=" + encodeURIComponent(token);
    if (this.options.device) url += "&token=" + encodeURIComponent(this.options.device);
    return url;
  }

  _connectNow() {
    clearTimeout(this._retryTimer);
    this._connect();
  }

  /** The connection went (or was given up): reconnect later, or stop for good. */
  _dropped(code, reason) {
    const stable = this._onlineSince && Date.now() - this._onlineSince >= this.options.stableAfter;
    this._release(new WsPushError("closed", "the connection closed before the answer came; the message may have been delivered"));
    if (WSPUSH_STOP_CODES[code]) {
      const why = reason || this._loginRefusal || WSPUSH_STOP_CODES[code];
      this._finish("stopped", { state: "stopped", code: code, reason: why });
      return;
    }
    if (stable) this._failures = 0;
    this._retry(code, reason || this._loginRefusal);
  }

  _retry(code, reason) {
    // Exponential, capped, and "equal jitter": between half and all of the ceiling, so that
    // clients dropped together (a server restart) do not come back together.
    const ceiling = Math.min(this.options.backoffMax, this.options.backoffInitial * Math.pow(2, Math.min(this._failures, 30)));
    const delay = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
    this._failures += 1;
    this._setState({ state: "offline", code: code, reason: reason || "", retryIn: delay, attempt: this._failures });
    this._retryTimer = setTimeout(() => this._connect(), delay);
  }

  /** Lets the current socket go: its timers, its unanswered sends. */
  _release(why) {
    this._generation += 1;
    clearInterval(this._pingTimer);
    this._pingTimer = null;
    const ws = this._ws;
    this._ws = null;
    this._onlineSince = 0;
    this.login = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      if (ws.readyState === 0 || ws.readyState === 1) {
        try {
          ws.close(1000);
        } catch (e) {
          /* already closing */
        }
      }
    }
    for (const entry of this._pending.splice(0)) this._fail(entry, why);
  }

  _finish(state, status) {
    if (this.state === "stopped" || this.state === "closed") return;
    clearTimeout(this._retryTimer);
    this._release(new WsPushError("stopped", "the client was " + state));
    for (const entry of this._outbox.splice(0)) this._fail(entry, new WsPushError("stopped", "the client was " + state));
    if (typeof globalThis.removeEventListener === "function") {
      globalThis.removeEventListener("online", this._onNetwork);
    }
    this._setState(status);
  }

  _startPing(ws) {
    this._lastPing = 0;
    this._pingTimer = setInterval(() => {
      if (this._ws !== ws) return;
      // Nothing heard since the last ping, not even its pong: the connection is dead
      // without having said so (a vanished network, a half-open TCP connection).
      if (this._lastPing && this._lastHeard < this._lastPing) {
        this._dropped(0, "no answer to ping");
        return;
      }
      this._lastPing = Date.now();
      ws.send('{"type":"ping"}');
    }, this.options.pingInterval);
  }

  // --- frames ---

  _frame(data) {
    this._lastHeard = Date.now();
    let m;
    try {
      m = JSON.parse(data);
    } catch (e) {
      return; // the server sends JSON only
    }
    if (m === null || typeof m !== "object") return;
    if (m.id === undefined) {
      if (m.type === "pong") return;
      if (m.type === "login") return this._loginFrame(m);
      if (m.type === "error") return this._answer(null, m);
    } else if (m.type === "ack") {
      return this._answer(m, null);
    } else if (this._seenBefore(String(m.id))) {
      return;
    }
    this._call("onMessage", m);
  }

  _loginFrame(m) {
    if (m.code !== 200) {
      // 401 (then close 4001), 441 (then 4002), 503 (then 1013): the close decides.
      this._loginRefusal = m.message || "";
      return;
    }
    this.login = m.data || {};
    this._onlineSince = Date.now();
    this._setState(Object.assign({ state: "online" }, this.login));
    for (const entry of this._outbox.splice(0)) {
      if (!entry.done) this._transmit(entry);
    }
  }

  _seenBefore(id) {
    if (this._seen.has(id)) return true;
    this._seen.add(id);
    this._seenOrder.push(id);
    if (this._seenOrder.length > this.options.dedupeWindow) this._seen.delete(this._seenOrder.shift());
    return false;
  }

  // --- sends and their answers ---

  _submit(frame, key) {
    if (this.state === "stopped" || this.state === "closed") {
      return Promise.reject(new WsPushError("stopped", "the client was " + this.state));
    }
    if (frame.content === undefined || frame.content === null) {
      return Promise.reject(new WsPushError("invalid", "content must not be null"));
    }
    let text;
    try {
      text = JSON.stringify(frame);
    } catch (e) {
      return Promise.reject(new WsPushError("invalid", "content is not JSON: " + e.message));
    }
    return new Promise((resolve, reject) => {
      const entry = { key: key, text: text, resolve: resolve, reject: reject, done: false, timer: null };
      entry.timer = setTimeout(() => this._expire(entry), this.options.ackTimeout);
      if (this.state === "online") {
        this._transmit(entry);
      } else if (this._outbox.length >= this.options.maxOutbox) {
        this._fail(entry, new WsPushError("outbox full", "too many messages wait for a connection"));
      } else {
        this._outbox.push(entry);
      }
    });
  }

  _transmit(entry) {
    this._ws.send(entry.text);
    this._pending.push(entry);
  }

  _expire(entry) {
    const i = this._outbox.indexOf(entry);
    if (i >= 0) this._outbox.splice(i, 1);
    // A sent one stays in _pending, settled: its late answer must not be taken for the
    // answer to a later message.
    this._fail(entry, new WsPushError("timeout", "no answer within " + this.options.ackTimeout + " ms; the message may have been delivered"));
  }

  /** An ack settles the oldest send to its recipient; an error frame the oldest send. */
  _answer(ack, error) {
    let i = 0;
    if (ack) {
      const key = ack.to_group !== undefined ? "g:" + ack.to_group : "u:" + ack.to_uid;
      i = this._pending.findIndex((e) => e.key === key);
    }
    if (i < 0 || i >= this._pending.length) return; // not an answer to anything sent
    const entry = this._pending.splice(i, 1)[0];
    if (ack) {
      if (entry.done) return;
      entry.done = true;
      clearTimeout(entry.timer);
      entry.resolve(ack);
    } else {
      this._fail(entry, new WsPushError(error.code, error.message || "error " + error.code));
    }
  }

  _fail(entry, error) {
    if (entry.done) return;
    entry.done = true;
    clearTimeout(entry.timer);
    entry.reject(error);
  }

  // --- callbacks ---

  _setState(status) {
    this.state = status.state;
    this._call("onStatus", status);
  }

  _call(name, arg) {
    const f = this.options[name];
    if (typeof f !== "function") return;
    try {
      f(arg);
    } catch (e) {
      // The application's bug must not stop the client; it still shows in the console.
      setTimeout(() => {
        throw e;
      });
    }
  }
}

WsPush.Error = WsPushError;
