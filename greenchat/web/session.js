// The session, as greenchat/client/client.py runs it: logging in, commands
// with ids and transaction ids, one awaited reply at a time, acknowledgements
// (batched), repeats dropped, reconnect and resume after a lost connection,
// the command awaited sent again as a retry. The page adds the online list
// (a `whoelse` of its own at each login, its reply not shown, then presence)
// and answers `help` and the private commands itself.

import { Link, Lost, ProtocolError, socketUrl } from "./link.js";
import { candidates, completable, firstWord, helpLines, hint, InvalidCommand, isBlank, lookup,
  parseLine } from "./commands.js";
import { fill, pieces, text, version } from "./texts.js";
import { fullStamp } from "./view.js";

const HANDSHAKE_TIMEOUT = 10000;
const CONNECT_TIMEOUT = 10000;
const REPLY_WAIT = 30000;
const ACK_DELAY = 100;
const ACK_EVERY = 64;
const TXN_MEMORY = 4096;
const RETRY_FIRST = 500;
const RETRY_MAX = 30000;
const STABLE_AFTER = 30000;
const RECONNECT_FOR = 300000;
const DEFAULT_MAX_FRAME = 65536;
const MAX_NAMES = 10000;
const PRIVATE_COMMANDS = ["startprivate", "private", "stopprivate"];

const now = () => performance.now();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const isInt = (value) => Number.isInteger(value);
const stringOrNull = (frame, name) => (typeof frame[name] === "string" ? frame[name] : null);

/** Member `name`: null if absent, a protocol error if not a string (the
 * frames that must be right: hello, login, bye, error). */
function optionalString(frame, name) {
  const value = frame[name];
  if (value === undefined || value === null) return null;
  if (typeof value !== "string") throw new ProtocolError(`a ${frame.type} frame with a bad ${name}`);
  return value;
}

function helloFrame() {
  return { type: "hello", version: 1, client: `greenchat-web ${version()}`.trim() };
}

/** The server's hello; its max_frame. */
async function greet(link, timeout) {
  link.send(helloFrame());
  const answer = await link.read(timeout);
  if (answer.type === "error" || answer.type === "bye") throw new Ended(optionalString(answer, "text"));
  if (answer.type !== "hello" || answer.version !== 1) throw new ProtocolError("no hello of ours");
  const limit = answer.max_frame === undefined ? DEFAULT_MAX_FRAME : answer.max_frame;
  if (!isInt(limit) || limit < 1) throw new ProtocolError("a bad max_frame");
  return limit;
}

/** The server ended a login with a text (an error or bye frame). */
export class Ended extends Error {
  constructor(text) {
    super(text || "ended");
    this.text = text;
  }
}

class Refused extends Error {
  constructor(text) {
    super(text || "refused");
    this.text = text;
  }
}

class Busy extends Refused {}

/** A login status frame, checked. */
function loginStatus(frame) {
  if (frame.type === "error" || frame.type === "bye") throw new Ended(optionalString(frame, "text"));
  if (frame.type !== "login") throw new ProtocolError(`expected login, got ${frame.type}`);
  return {
    status: optionalString(frame, "status"),
    text: optionalString(frame, "text"),
    user: optionalString(frame, "user"),
    token: optionalString(frame, "resume"),
    retryAfter: frame.retry_after,
  };
}

/**
 * The login form's conversation with the server: hello, username, password,
 * on one connection as long as it lasts (a refused password is asked again
 * on it). `submit` resolves to the logged-in state, or null with `say` told
 * what the server answered.
 */
export class Login {
  constructor(say) {
    this.say = say;           // say([{text, hint}]): the login form's alert
    this.link = null;
    this.stage = null;        // "username" or "password": what the server waits for
    this.name = null;         // the username the server took
    this.maxFrame = DEFAULT_MAX_FRAME;
  }

  reset() {
    if (this.link) this.link.close();
    this.link = null;
    this.stage = this.name = null;
  }

  async submit(name, password) {
    name = name.trim();
    try {
      if (!this.link || !this.link.open || this.stage === null ||
          (this.stage === "password" && this.name !== name)) {
        this.reset();
        const link = this.link = new Link(socketUrl());
        await link.opened(CONNECT_TIMEOUT);
        this.maxFrame = await greet(link, HANDSHAKE_TIMEOUT);
        this.stage = "username";
      }
      const link = this.link;
      link.run(null, null);
      if (this.stage === "username") {
        link.send({ type: "username", username: name });
        const answer = this._expect(await link.read(HANDSHAKE_TIMEOUT), ["username", "password", "failed"]);
        if (answer.status !== "password") return this._refused(answer);
        this.stage = "password";
        this.name = name;
      }
      link.send({ type: "password", password });
      const answer = this._expect(await link.read(HANDSHAKE_TIMEOUT), ["ok", "password", "failed"]);
      if (answer.status !== "ok") return this._refused(answer);
      this.link = null;
      this.stage = this.name = null;
      return { link, user: answer.user === null ? name : answer.user, password, token: answer.token,
        text: answer.text, maxFrame: this.maxFrame };
    } catch (exc) {
      this.reset();
      this.say([{ text: exc instanceof Ended && exc.text !== null ? exc.text : text("CONNECTION_LOST"),
        error: true }]);
      return null;
    }
  }

  _expect(frame, statuses) {
    const answer = loginStatus(frame);
    if (!statuses.includes(answer.status)) throw new ProtocolError(`login status ${answer.status}`);
    return answer;
  }

  /** A refusal: its text (and for a lockout how long it has left) in the
   * alert; a `failed` ends the connection. While the form waits, what the
   * server says (the login deadline passed) shows there too. */
  _refused(answer) {
    const lines = answer.text === null ? [] : [{ text: answer.text, error: true }];
    const after = answer.retryAfter;
    if (answer.status === "failed" && typeof after === "number" && after >= 0) {
      lines.push({ text: fill("retry_in", { seconds: Math.ceil(after) }), hint: true });
    }
    this.say(lines);
    if (answer.status === "failed") {
      this.reset();
    } else {
      const link = this.link;
      link.run((frame) => {
        if (frame.type === "error" || frame.type === "bye") {
          if (typeof frame.text === "string") this.say([{ text: frame.text, error: true }]);
          if (this.link === link) this.reset();
        }
      }, () => {
        if (this.link === link) this.reset();
      });
    }
    return null;
  }
}

/**
 * A logged-in session, from the login to its end (bye, error, a refused
 * reconnect, or a reconnect that gave up). `ui` is what it shows things
 * with: show(content, opts), hint(content), echo(line), keep(line) (a line
 * not sent, back into the input), keepTypedLine() (the input's text shown,
 * after an idle logout), roster {set, add, remove}, setState(state),
 * ended(text, error).
 */
export class Session {
  constructor(ui, login) {
    this.ui = ui;
    this.link = login.link;
    this.user = login.user;
    this.password = login.password;          // memory only, to log in again
    this.token = login.token;
    this.maxFrame = login.maxFrame;
    this.done = false;
    this.connected = false;
    this.outage = null;                      // [deadline, delay] of the last reconnect
    this.upSince = null;
    this.nextId = 0;
    this.txnPrefix = randomPrefix();
    this.txnCount = 0;
    this.queue = [];                         // typed lines not yet taken
    this.awaited = null;                     // {id, txn, line, spec}: the reply awaited
    this.waiting = false;                    // no next line until its reply (or REPLY_WAIT)
    this.replyTimer = null;
    this.silent = new Map();                 // id -> handler: the page's own commands
    this.lastId = null;                      // the highest message id shown
    this.shownTxns = new Set();              // (sender, txn) of the last TXN_MEMORY shown
    this.txnOrder = [];
    this.unacked = 0;
    this.ackTimer = null;
    this.seen = new Set();                   // names for Tab
    this.blocked = new Set();                // blocked here: their presence no longer comes
    this.handlers = {
      message: (f) => this._onMessage(f), presence: (f) => this._onPresence(f),
      reply: (f) => this._onReply(f), names: (f) => this._onNames(f),
      bye: (f) => this._onEnd(f), error: (f) => this._onEnd(f), ping: () => this._send({ type: "pong" }),
      notice: (f) => this._onNotice(f),
    };
  }

  /** After the login's `ok`: the welcome, the hint, then the session runs. */
  start(welcome) {
    if (welcome !== null) this.ui.show(welcome);
    this.ui.hint(text("HELP_HINT"));
    this._attach(this.link);
    this._send({ type: "names" });
  }

  _attach(link) {
    this.connected = true;
    this.ui.setState("connected");
    link.run((frame) => this._onFrame(frame), (lost) => this._dropped(lost));
    if (!this.done && this.connected && this.link === link) {
      this._refreshRoster();
      this._pump();
    }
  }

  // Typed lines ----------------------------------------------------------------

  /** A line typed in the input: taken in turn, as the terminal's keyboard
   * takes lines (each after the reply to the one before). */
  type(line) {
    if (this.done || isBlank(line)) return;
    this.ui.echo(line);
    this.queue.push(line);
    this._pump();
  }

  _pump() {
    while (!this.done && this.queue.length && !this.waiting) {
      const line = this.queue[0];
      let spec = null;
      try {
        [spec] = parseLine(line);
      } catch (exc) {
        if (!(exc instanceof InvalidCommand)) throw exc;
      }
      const named = lookup(firstWord(line));
      if (named && PRIVATE_COMMANDS.includes(named.name)) {
        this.queue.shift();
        this.ui.show(text("PRIVATE_NOT_IN_WEB"));
        continue;
      }
      if (spec && spec.where === "local") {         // help
        this.queue.shift();
        for (const helpLine of helpLines()) this.ui.show(helpLine);
        continue;
      }
      const size = this._frameSize(line);
      if (size > this.maxFrame) {
        this.queue.shift();
        this.ui.show(fill("message_too_long", { size, limit: this.maxFrame }));
        this.ui.keep(line);
        continue;
      }
      if (!this.connected) return;                  // after the reconnect
      this.queue.shift();
      if (spec && spec.name === "logout") this._flushAck();
      this._sendCommand(line, spec);
    }
  }

  _frameSize(line) {
    const frame = { type: "command", id: this.nextId + 1, line,
      txn: `${this.txnPrefix}.${this.txnCount + 1}`, retry: true };
    return new TextEncoder().encode(JSON.stringify(frame)).length;
  }

  _sendCommand(line, spec) {
    this.nextId += 1;
    this.txnCount += 1;
    this.awaited = { id: this.nextId, txn: `${this.txnPrefix}.${this.txnCount}`, line, spec };
    this._wait();
    this._send({ type: "command", id: this.nextId, txn: this.awaited.txn, line });
  }

  /** The keyboard waits for the reply REPLY_WAIT from the command's send. */
  _wait() {
    this.waiting = true;
    clearTimeout(this.replyTimer);
    this.replyTimer = setTimeout(() => {
      this.replyTimer = null;
      if (this.connected) {
        this.waiting = false;
        this._pump();
      }
    }, REPLY_WAIT);
  }

  _answered() {
    clearTimeout(this.replyTimer);
    this.replyTimer = null;
    this.waiting = false;
    this._pump();
  }

  /** A command of the page's own, its reply handled by `handler`, not shown. */
  _sendSilent(line, handler) {
    this.nextId += 1;
    this.txnCount += 1;
    this.silent.set(this.nextId, handler);
    this._send({ type: "command", id: this.nextId, txn: `${this.txnPrefix}.${this.txnCount}`, line });
  }

  _refreshRoster() {
    this._sendSilent("whoelse", (lines) => {
      const names = lines.filter((line) => line !== text("NO_OTHER_USERS_ONLINE") &&
        !this.blocked.has(line));
      names.forEach((name) => this._saw(name));
      this.ui.roster.set(names);
    });
  }

  /** Log out now (the page is going away): what was shown is acknowledged first. */
  logout() {
    if (this.done || !this.connected) return;
    this._flushAck();
    this._sendCommand("logout", lookup("logout"));
  }

  /** Tab: the candidates for the word after `words`. */
  candidates(words) {
    return candidates(words, this.seen, this.user);
  }

  _saw(name) {
    if (completable(name) && this.seen.size < MAX_NAMES) this.seen.add(name);
  }

  // Frames ---------------------------------------------------------------------

  _send(frame) {
    const link = this.link;
    if (!this.connected) return false;
    try {
      link.send(frame);
    } catch {
      this._dropped(link);
      return false;
    }
    return true;
  }

  _onFrame(frame) {
    const handler = this.handlers[frame.type];
    if (handler) handler(frame);
  }

  _onMessage(frame) {
    let id = isInt(frame.id) ? frame.id : null;
    if (id !== null && id < 0) id = null;
    if (id !== null && this.lastId !== null && id <= this.lastId) {
      this._handled();               // shown already: the server missed our ack
      return;
    }
    const body = stringOrNull(frame, "text");
    const sender = stringOrNull(frame, "from");
    const txn = stringOrNull(frame, "txn");
    if (id !== null) this.lastId = id;
    if (body !== null && !(txn !== null && this.shownTxns.has(JSON.stringify([sender, txn])))) {
      this._saw(sender);
      const offline = frame.offline === true;
      const sentAt = frame.sent_at;
      this.ui.show(this._template("message_line", { sender: sender === null ? "?" : sender, text: body }), {
        style: this.user && mentions(body, this.user) ? "self" : null,
        at: offline && typeof sentAt === "number" ? sentAt : null,
        prefix: frame.broadcast === true ? text("BROADCAST_MARK") : null,
        mark: offline ? text("OFFLINE_MARK") : null,
      });
      if (txn !== null) this._rememberTxn(sender, txn);
    }
    if (id !== null) this._handled();
  }

  /** A template's pieces, each argument in a span of its own class. */
  _template(name, params) {
    return pieces(name).map((piece) => (typeof piece === "string" ? piece
      : { text: piece.param in params ? String(params[piece.param]) : `{${piece.param}}`,
        cls: piece.param }));
  }

  _rememberTxn(sender, txn) {
    const key = JSON.stringify([sender, txn]);
    this.shownTxns.add(key);
    this.txnOrder.push(key);
    if (this.txnOrder.length > TXN_MEMORY) this.shownTxns.delete(this.txnOrder.shift());
  }

  _onPresence(frame) {
    const user = stringOrNull(frame, "user");
    const online = frame.online;
    if (user === null || typeof online !== "boolean") return;
    this._saw(user);
    this.ui.show(this._template(online ? "presence_line_on" : "presence_line_off", { user }),
      { style: "presence" });
    if (user === this.user) return;
    if (online && !this.blocked.has(user)) this.ui.roster.add(user);
    else this.ui.roster.remove(user);
  }

  _onNames(frame) {
    if (Array.isArray(frame.users)) frame.users.forEach((user) => this._saw(user));
  }

  _onNotice(frame) {
    const notice = stringOrNull(frame, "text");
    if (notice !== null) this.ui.show(notice);
  }

  _onReply(frame) {
    const lines = Array.isArray(frame.lines) ? frame.lines.filter((line) => typeof line === "string") : [];
    const id = isInt(frame.id) ? frame.id : null;
    if (id !== null && this.silent.has(id)) {
      const handler = this.silent.get(id);
      this.silent.delete(id);
      handler(lines, frame);
      return;
    }
    const awaited = this.awaited && id === this.awaited.id ? this.awaited : null;
    if (awaited && awaited.spec && awaited.spec.lists_users) lines.forEach((line) => this._saw(line));
    for (const line of lines) this.ui.show(line);
    if (awaited) this._feedback(frame, lines, awaited);
    if (Array.isArray(frame.history)) this._showHistory(frame.history);
    if (awaited) {
      this.awaited = null;
      this._answered();
    }
  }

  /** The page's own word on a reply (dim): a hint for a refused line, what
   * became of a message or a broadcast; and the online list kept right. */
  _feedback(frame, lines, awaited) {
    if (lines.length === 1 && lines[0] === text("INVALID_COMMAND")) {
      this.ui.hint(hint(awaited.line));
      return;
    }
    let parsed = null;
    try {
      parsed = parseLine(awaited.line);
    } catch {
      parsed = null;
    }
    if (frame.stored === true && frame.ok === true) {
      if (parsed) this.ui.hint(fill("stored_for", { user: parsed[1][0] }));
    } else if (frame.delivered === 0) {
      this.ui.hint(text("NO_ONE_ONLINE"));
    }
    if (frame.ok === true && parsed && (parsed[0].name === "block" || parsed[0].name === "unblock")) {
      // A blocked user's presence stops coming: off the list, and back on
      // (if online) when unblocked.
      const user = parsed[1][0];
      if (parsed[0].name === "block") {
        this.blocked.add(user);
        this.ui.roster.remove(user);
      } else {
        this.blocked.delete(user);
        this._refreshRoster();
      }
    }
  }

  _showHistory(entries) {
    for (const entry of entries) {
      if (entry === null || typeof entry !== "object") continue;
      const sender = stringOrNull(entry, "from");
      const body = stringOrNull(entry, "text");
      const sentAt = entry.sent_at;
      if (sender === null || body === null || typeof sentAt !== "number") continue;
      const date = new Date(sentAt * 1000);
      if (Number.isNaN(date.getTime())) continue;
      this._saw(sender);
      this._saw(stringOrNull(entry, "to"));
      this.ui.show(this._template("history_line", { stamp: fullStamp(date), sender, text: body }));
    }
  }

  /** A bye or an error frame: the session is over, no reconnect. */
  _onEnd(frame) {
    let said;
    let reason = null;
    try {
      said = optionalString(frame, "text");
      if (frame.type === "bye") reason = optionalString(frame, "reason");
    } catch {
      this._lost();
      return;
    }
    if (said !== null) this.ui.show(said);
    if (reason === "idle") this.ui.keepTypedLine();
    this._finish(said, frame.type === "error");
  }

  // Acknowledgements -----------------------------------------------------------

  _handled() {
    this.unacked += 1;
    if (this.unacked >= ACK_EVERY) {
      this._flushAck();
    } else if (this.ackTimer === null) {
      this.ackTimer = setTimeout(() => {
        this.ackTimer = null;
        this._sendAck();
      }, ACK_DELAY);
    }
  }

  _flushAck() {
    clearTimeout(this.ackTimer);
    this.ackTimer = null;
    this._sendAck();
  }

  /** Acknowledge up to lastId; what a lost connection did not take goes on
   * the next one. */
  _sendAck() {
    if (this.unacked && this.lastId !== null) {
      const count = this.unacked;
      this.unacked = 0;
      if (!this._send({ type: "ack", upto: this.lastId })) this.unacked += count;
    }
  }

  // The end, and reconnecting ----------------------------------------------------

  _finish(said, error = false) {
    if (this.done) return;
    this.done = true;
    this.connected = false;
    clearTimeout(this.ackTimer);
    clearTimeout(this.replyTimer);
    this.ackTimer = this.replyTimer = null;
    if (this.link) this.link.close();
    this.ui.roster.set([]);
    this.ui.setState("off");
    this.ui.ended(said, error);
  }

  _lost() {
    if (this.done) return;
    this.ui.show(text("CONNECTION_LOST"));
    this._finish(text("CONNECTION_LOST"), true);
  }

  _dropped(link) {
    if (link !== this.link || !this.connected || this.done) return;
    this.connected = false;
    this._reconnect(link);
  }

  async _reconnect(old) {
    clearTimeout(this.ackTimer);
    this.ackTimer = null;
    clearTimeout(this.replyTimer);       // the wait starts over when it goes again
    this.replyTimer = null;
    this.silent.clear();
    old.close();
    this.ui.show(text("RECONNECTING"));
    this.ui.setState("reconnecting");
    let deadline;
    let delay;
    const start = now();
    if (this.outage !== null && start - this.upSince < STABLE_AFTER) {
      [deadline, delay] = this.outage;
    } else {
      [deadline, delay] = [start + RECONNECT_FOR, RETRY_FIRST];
    }
    let busy = null;
    for (;;) {
      const left = deadline - now();
      if (left <= 0) break;
      await sleep(Math.min(left, delay * (0.5 + Math.random() * 0.5)));
      if (this.done) return;
      delay = Math.min(delay * 2, RETRY_MAX);
      if (now() >= deadline) break;
      let link;
      try {
        link = await this._logInAgain(deadline);
      } catch (exc) {
        if (exc instanceof Busy) {
          busy = exc.text;
          continue;
        }
        if (exc instanceof Refused) {
          if (exc.text !== null) this.ui.show(exc.text);
          this._finish(exc.text, true);
          return;
        }
        busy = null;
        continue;
      }
      if (this.done) {
        link.close();
        return;
      }
      this.link = link;
      this.outage = [deadline, delay];
      this.upSince = now();
      this.ui.show(text("RECONNECTED"));
      if (this.waiting) this._wait();
      this._attach(link);
      return;
    }
    if (busy !== null) this.ui.show(busy);
    this._lost();
  }

  /** One try: a new connection logged in as before (resume, else the
   * password), the awaited command sent again as a retry, and an ack for
   * what was shown meanwhile. Throws Refused (with the server's text), Busy,
   * or anything else for another try. */
  async _logInAgain(deadline) {
    const left = (most) => Math.max(10, Math.min(most, deadline - now()));
    const link = new Link(socketUrl());
    try {
      await link.opened(left(CONNECT_TIMEOUT));
      await greet(link, left(HANDSHAKE_TIMEOUT)).catch((exc) => {
        throw exc instanceof Ended ? new Lost("the server ended the login") : exc;
      });
      let answer = null;
      if (this.token !== null) {
        link.send({ type: "resume", user: this.user, token: this.token, last: this.lastId ?? 0 });
        answer = await this._loginStep(link, left(HANDSHAKE_TIMEOUT), ["ok", "expired"], ["failed"]);
      }
      if (answer === null || answer.status !== "ok") {
        link.send({ type: "username", username: this.user });
        await this._loginStep(link, left(HANDSHAKE_TIMEOUT), ["password"], ["username", "failed"]);
        link.send({ type: "password", password: this.password });
        answer = await this._loginStep(link, left(HANDSHAKE_TIMEOUT), ["ok"], ["password", "failed"]);
      }
      this.token = answer.token;
      if (this.awaited !== null) {
        this.nextId += 1;
        this.awaited.id = this.nextId;
        link.send({ type: "command", id: this.nextId, txn: this.awaited.txn, line: this.awaited.line,
          retry: true });
      }
      if (this.unacked && this.lastId !== null) {
        link.send({ type: "ack", upto: this.lastId });
        this.unacked = 0;
      }
      return link;
    } catch (exc) {
      link.close();
      throw exc;
    }
  }

  async _loginStep(link, timeout, goesOn, refused) {
    const frame = await link.read(timeout);
    if (frame.type === "error" || frame.type === "bye") throw new Lost("the server ended the login");
    const answer = loginStatus(frame);
    if (goesOn.includes(answer.status)) return answer;
    if (answer.status === "failed" && answer.text === text("ALREADY_LOGGED_IN")) throw new Busy(answer.text);
    if (!refused.includes(answer.status)) throw new ProtocolError(`login status ${answer.status}`);
    throw new Refused(answer.text);
  }
}

/** True if `body` names `name` as a whole word (`hans`, not `chansons`). */
function mentions(body, name) {
  const escaped = name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  try {
    return new RegExp(`(?<![\\p{L}\\p{N}_])${escaped}(?![\\p{L}\\p{N}_])`, "u").test(body);
  } catch {
    return false;
  }
}

function randomPrefix() {
  const bytes = crypto.getRandomValues(new Uint8Array(6));
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_");
}
