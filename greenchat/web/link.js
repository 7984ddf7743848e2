// One WebSocket to the server's /ws, carrying the frames of docs/protocol.md:
// one JSON object per text message, each way. Frames are read one at a time
// (`read`, for the login's steps), or handed to `onframe` as they come once
// the session runs. A closed socket, a binary message or a frame that is not
// a JSON object with a string "type" makes the link lost.

export class Lost extends Error {}
export class ProtocolError extends Error {}

export function socketUrl() {
  const url = new URL("ws", window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

export class Link {
  constructor(url) {
    this.frames = [];         // read and not yet taken
    this.waiter = null;       // the read waiting: {resolve, reject, timer}
    this.onframe = null;      // once the session runs: every frame
    this.onlost = null;       // ...and the news of a loss
    this.lost = null;         // why it is lost (an Error), once it is
    this.ws = new WebSocket(url);
    this._open = new Promise((resolve, reject) => {
      this.ws.addEventListener("open", () => resolve(), { once: true });
      this._openFailed = reject;
    });
    this._open.catch(() => {});
    this.ws.addEventListener("message", (event) => this._message(event));
    this.ws.addEventListener("close", () => this._lose(new Lost("connection closed")));
    this.ws.addEventListener("error", () => this._lose(new Lost("connection failed")));
  }

  /** Resolves once the socket is open; rejects if it fails or `timeout` ms pass. */
  opened(timeout) {
    let timer;
    const expired = new Promise((_, reject) => {
      timer = setTimeout(() => {
        reject(new Lost("no connection"));
        this.close();
      }, timeout);
    });
    return Promise.race([this._open, expired]).finally(() => clearTimeout(timer));
  }

  get open() {
    return this.lost === null && this.ws.readyState === WebSocket.OPEN;
  }

  send(frame) {
    if (!this.open) throw this.lost || new Lost("not connected");
    this.ws.send(JSON.stringify(frame));
  }

  /** The next frame, within `timeout` ms (ProtocolError past it; Lost if
   * the link is lost first). */
  read(timeout) {
    if (this.frames.length) return Promise.resolve(this.frames.shift());
    if (this.lost) return Promise.reject(this.lost);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        reject(new ProtocolError("the server did not answer"));
      }, timeout);
      this.waiter = { resolve, reject, timer };
    });
  }

  /** From now on every frame goes to `onframe` (those read already first),
   * and a loss to `onlost`; null for both: frames wait for `read` again. */
  run(onframe, onlost) {
    this.onframe = onframe;
    this.onlost = onlost;
    while (onframe && this.frames.length && this.onframe === onframe) onframe(this.frames.shift());
    if (onlost && this.lost && this.onlost === onlost) onlost(this);
  }

  close() {
    this.onframe = this.onlost = null;
    this._lose(new Lost("closed here"));
    try {
      this.ws.close();
    } catch {
      // closing a socket that is not open yet: nothing to do
    }
  }

  _message(event) {
    if (this.lost) return;
    let frame = null;
    if (typeof event.data === "string") {
      try {
        frame = JSON.parse(event.data);
      } catch {
        frame = null;
      }
    }
    if (frame === null || typeof frame !== "object" || Array.isArray(frame) ||
        typeof frame.type !== "string") {
      this._lose(new ProtocolError("a malformed frame"));
      this.ws.close();
      return;
    }
    if (this.onframe) {
      this.onframe(frame);
    } else if (this.waiter) {
      const { resolve, timer } = this.waiter;
      this.waiter = null;
      clearTimeout(timer);
      resolve(frame);
    } else {
      this.frames.push(frame);
    }
  }

  _lose(reason) {
    if (this.lost) return;
    this.lost = reason;
    this._openFailed(reason);
    if (this.waiter) {
      const { reject, timer } = this.waiter;
      this.waiter = null;
      clearTimeout(timer);
      reject(reason);
    }
    if (this.onlost) this.onlost(this);
  }
}
