// RelayClient: one multiplexed WebSocket (`GET /ws`, PROTOCOL.md "One socket, many canvases") shared by every
// canvas the app opens. It owns the socket and its status, the reconnects (jittered exponential backoff, then a
// join with since + epoch for every board), the heartbeat, the rate limiter for logged ops, and the routing of
// each server frame to the Board it names. What a canvas's frames mean is board.js's business; the limiter is
// limiter.js's, the bounded waits for the answers to joins and leaves answers.js's, and the HTTP requests of the
// boards' history calls http.js's.

import { Answers } from "./answers.js";
import { Board, RelayError } from "./board.js";
import { Emitter } from "./emitter.js";
import { requester } from "./http.js";
import { Limiter } from "./limiter.js";

/** Close codes after which reconnecting cannot help: the app must act (a new token, slower sends). */
const FATAL_CLOSES = new Map([
  [1008, "token_expired"],
  [4008, "rate_limit_abuse"],
]);

/** HTTP answers to the upgrade that a retry will not change (seen in Node only: browsers hide the status). */
const FATAL_HTTP = new Map([
  [400, "bad_request"],
  [401, "unauthorized"],
  [403, "forbidden"],
]);

/**
 * @typedef {object} RelayClientOptions
 * @property {string} url                 ws:// or wss:// origin, e.g. "ws://127.0.0.1:8080"
 * @property {string} [user]              user id (a server with JWT auth takes the token's `sub` instead)
 * @property {string} [name]              display name shown in presence
 * @property {string} [token]             HS256 JWT, when the server requires one; also sent to the HTTP API
 * @property {string} [apiKey]            the relay's --api-key, sent to the HTTP API instead of `token`
 * @property {string} [httpUrl]           http:// or https:// base of the HTTP API (default: `url`, ws -> http)
 * @property {typeof fetch} [fetch]       the fetch function of the history calls; default the global one
 * @property {"viewer" | "editor"} [role] "viewer" joins read-only
 * @property {any} [WebSocket]            a WebSocket constructor (e.g. `ws` in Node); default the global one
 * @property {{ initialDelay?: number, maxDelay?: number }} [reconnect] backoff in ms (250 doubling to 10000)
 * @property {number} [heartbeatInterval] ms between pings (15000; 0: none); a ping still unanswered at the
 *                                        next one drops the socket, which reconnects
 * @property {number} [cursorRate]        cursors per second per board (60, the server's --max-cursor-rate)
 * @property {number} [presenceRate]      presence updates per second per board (60)
 * @property {number} [maxFrameSize]      bytes; larger frames are refused locally with "too_large" (65536)
 * @property {number} [answerTimeout]     ms to wait for the answer to a join or a leave (30000) before the
 *                                        socket is dropped and the client reconnects
 * @property {{ rate: number, burst: number } | false} [rateLimit] logged ops per second and burst for the whole
 *                                        socket ({ rate: 200, burst: 200 }, under the server's default
 *                                        --rate-limit); the excess waits in order instead of being refused
 */

export class RelayClient {
  /** @type {any} the WebSocket class: the global one, or the app's (`ws` in Node) */
  #WebSocket;
  /** @type {{ cursorInterval: number, presenceInterval: number, maxFrameSize: number }} what boards obey */
  #limits;
  /** the socket's allowance of logged frames (ops and joins) */
  #limiter;
  /** @type {import("./board.js").Link} what every board may ask of this client */
  #link;
  #events = new Emitter();
  /** @type {Map<string, Board>} */
  #boards = new Map();
  /** joins and leaves of this socket waiting for the relay's answer (a new join of a canvas being left waits) */
  #answers;
  /** @type {any} */
  #socket = null;
  #generation = 0;
  #retries = 0;
  /** @type {ReturnType<typeof setTimeout> | null} */
  #reconnectTimer = null;
  /** @type {ReturnType<typeof setInterval> | null} */
  #heartbeat = null;
  #lastHeard = 0;
  /** when the last heartbeat ping went out (0: none on this socket) */
  #pingedAt = 0;
  /** @type {number | null} the HTTP status that refused the last upgrade, when the WebSocket said */
  #httpStatus = null;
  #keyPrefix = randomId();
  #counter = 0;

  /** @param {RelayClientOptions} options */
  constructor(options) {
    if (!options || typeof options.url !== "string") throw new TypeError("canvas-relay: `url` is required");
    const WebSocketClass = options.WebSocket ?? globalThis.WebSocket;
    if (typeof WebSocketClass !== "function") {
      throw new TypeError("canvas-relay: no global WebSocket here: pass one, e.g. { WebSocket } from the `ws` package");
    }
    this.#WebSocket = WebSocketClass;
    this.options = options;
    this.url = options.url.replace(/\/+$/, "");
    const rate = (/** @type {number | undefined} */ n, /** @type {number} */ fallback) =>
      n === undefined ? 1000 / fallback : n > 0 ? 1000 / n : 0;
    this.#limits = {
      cursorInterval: rate(options.cursorRate, 60),
      presenceInterval: rate(options.presenceRate, 60),
      maxFrameSize: options.maxFrameSize ?? 65536,
    };
    const rateLimit = options.rateLimit === false ? null : options.rateLimit ?? { rate: 200, burst: 200 };
    this.#limiter = new Limiter(rateLimit, (queued) => {
      if (this.#sendRaw(queued.text) && queued.join) this.#answers.joinSent(queued.canvas);
    });
    const leave = (/** @type {string} */ canvas) => this.#sendRaw(JSON.stringify({ type: "leave", canvas }));
    this.#answers = new Answers(options.answerTimeout ?? 30000, (why) => this.#resync(why), leave);
    this.#link = this.#makeLink();
    /** @type {"connecting" | "connected" | "reconnecting" | "closed"} */
    this.status = "connecting";
    /** @type {RelayError | null} why the client closed, when the server or the app closed it */
    this.closedBy = null;
    this.#connect();
  }

  /**
   * The board of canvas `id`, joined over this client's socket; the same object on every call until it is left
   * or closed.
   * @param {string} id
   */
  canvas(id) {
    if (this.status === "closed") throw new RelayError("closed", "canvas-relay: the client is closed");
    const known = this.#boards.get(id);
    if (known) return known;
    const board = new Board(id, this.#link);
    this.#boards.set(id, board);
    this.#join(board);
    return board;
  }

  /** The boards open now, by canvas id (a copy). */
  get boards() {
    return new Map(this.#boards);
  }

  /**
   * Events: "status" (the new status), "message" (user messages and broadcasts, which name no canvas), "error"
   * (an error frame that names no canvas, or the reason the client closed).
   * @param {string} type
   * @param {(...args: any[]) => void} listener
   */
  on(type, listener) {
    this.#events.on(type, listener);
    return this;
  }

  /**
   * @param {string} type
   * @param {(...args: any[]) => void} listener
   */
  off(type, listener) {
    this.#events.off(type, listener);
    return this;
  }

  /** Closes the socket for good; every board closes and pending ops reject with code "closed". */
  close() {
    this.#shut(new RelayError("closed", "the client was closed"));
  }

  // ---- Socket ----

  #connect() {
    const query = new URLSearchParams();
    const { user, name, token, role } = this.options;
    if (user) query.set("user", user);
    if (name) query.set("name", name);
    if (token) query.set("token", token);
    if (role) query.set("role", role);
    this.#httpStatus = null;
    /** @type {any} */
    let socket;
    try {
      socket = new this.#WebSocket(`${this.url}/ws?${query}`);
    } catch (error) {
      return this.#shut(new RelayError("bad_request", `canvas-relay: cannot open ${this.url}: ${error}`));
    }
    this.#socket = socket;
    this.#generation += 1;
    socket.onopen = () => this.#socket === socket && this.#opened();
    socket.onmessage = (/** @type {{ data: unknown }} */ event) => this.#socket === socket && this.#heard(event.data);
    socket.onerror = (/** @type {{ message?: string }} */ event) => {
      const status = /Unexpected server response: (\d+)/.exec(String(event?.message ?? ""));
      if (status && this.#socket === socket) this.#httpStatus = Number(status[1]);
    };
    socket.onclose = (/** @type {{ code: number, reason: string }} */ event) =>
      this.#socket === socket && this.#lost(event.code, event.reason);
  }

  #opened() {
    this.#retries = 0;
    this.#lastHeard = Date.now();
    const interval = this.options.heartbeatInterval ?? 15000;
    this.#pingedAt = 0;
    if (interval > 0) this.#heartbeat = setInterval(() => this.#beat(), interval);
    this.#setStatus("connected");
    for (const board of this.#boards.values()) this.#join(board);
  }

  /** Each beat pings; a beat that finds the previous ping unanswered (nothing heard since) drops the socket.
   *  Counting in pings, not in ms, keeps a background tab (whose timers browsers slow down) from looking dead. */
  #beat() {
    if (this.#pingedAt > 0 && this.#lastHeard < this.#pingedAt) return this.#resync("no answer to a ping");
    this.#pingedAt = Date.now();
    this.#sendRaw(JSON.stringify({ type: "ping" }));
  }

  /** @param {unknown} data */
  #heard(data) {
    this.#lastHeard = Date.now();
    let frame;
    try {
      frame = JSON.parse(String(data));
    } catch {
      return console.error("canvas-relay: the server sent a frame that is not JSON; ignored");
    }
    if (frame && typeof frame === "object") this.#route(frame);
  }

  /** @param {Record<string, any>} frame */
  #route(frame) {
    if (frame.type === "pong") return;
    const canvas = frame.canvas;
    if (typeof canvas !== "string") {
      if (frame.type === "error") return this.#events.dispatch("error", new RelayError(frame.code, frame.message, frame));
      this.#events.dispatch("message", frame); // a user message or broadcast: for every board too
      for (const board of this.#boards.values()) if (board.status === "joined") board._message(frame);
      return;
    }
    if (frame.type === "left") return this.#left(frame);
    if (this.#answers.heard(canvas, frame)) return; // the tail of a canvas being left, or what its leave met
    this.#boards.get(canvas)?._receive(frame);
  }

  /** `left`: the answer to our leave, or (with code 4003) the API removed this user from the canvas.
   *  @param {Record<string, any>} frame */
  #left(frame) {
    const canvas = frame.canvas;
    const board = this.#boards.get(canvas);
    const answered = this.#answers.left(canvas);
    if (frame.code !== undefined && !answered) {
      this.#boards.delete(canvas);
      const error = new RelayError("removed", frame.reason ?? "removed from the canvas", frame);
      return board?._end(Object.assign(error, { closeCode: frame.code }));
    }
    if (board && !board._joinSent()) this.#join(board); // re-opened while the leave was on its way
  }

  /**
   * The socket closed (or was dropped by us). Fatal codes close the client; anything else reconnects.
   * @param {number} code
   * @param {string} reason
   */
  #lost(code, reason) {
    const status = this.#httpStatus;
    this.#detach();
    if (this.status === "closed") return;
    for (const board of this.#boards.values()) board._disconnected();
    const fatal = FATAL_CLOSES.get(code) ?? (status === null ? undefined : FATAL_HTTP.get(status));
    if (fatal) {
      const why = status !== null && !FATAL_CLOSES.has(code) ? `HTTP ${status}` : `close ${code}`;
      return this.#shut(Object.assign(new RelayError(fatal, `the server refused the connection (${why}) ${reason || ""}`.trim()), {
        closeCode: code,
        httpStatus: status,
      }));
    }
    if (code === 4003) {
      for (const board of this.#boards.values()) board._end(new RelayError("removed", reason || "removed from the canvas"));
      this.#boards.clear();
    }
    this.#setStatus("reconnecting");
    const { initialDelay = 250, maxDelay = 10000 } = this.options.reconnect ?? {};
    const delay = Math.min(maxDelay, initialDelay * 2 ** this.#retries++);
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = null;
      if (this.status !== "closed") this.#connect();
    }, delay / 2 + (Math.random() * delay) / 2); // equal jitter: a restarted instance's clients spread out
  }

  /** Drops the current socket now and reconnects to resume (a seq gap, a silent server). @param {string} why */
  #resync(why) {
    if (!this.#socket) return;
    const socket = this.#socket;
    this.#lost(4000, why);
    try {
      socket.close(1000, "resuming");
    } catch {
      // it was closing anyway
    }
  }

  /** Forgets the current socket: no more of its events count. */
  #detach() {
    const socket = this.#socket;
    this.#socket = null;
    this.#generation += 1;
    if (socket) {
      socket.onopen = socket.onmessage = socket.onclose = null;
      socket.onerror = () => {}; // `ws` throws an 'error' nobody listens to (e.g. closed while connecting)
    }
    if (this.#heartbeat !== null) clearInterval(this.#heartbeat);
    this.#heartbeat = null;
    this.#limiter.clear();
    this.#answers.clear();
  }

  /** Closes the client for good with `error` as the reason. @param {RelayError} error */
  #shut(error) {
    if (this.status === "closed") return;
    const socket = this.#socket;
    this.#detach();
    if (this.#reconnectTimer !== null) clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = null;
    try {
      socket?.close(1000, "closed by the client");
    } catch {
      // already closing
    }
    this.closedBy = error;
    const boards = [...this.#boards.values()];
    this.#boards.clear();
    this.#setStatus("closed");
    for (const board of boards) board._end(error);
    if (error.code !== "closed") this.#events.dispatch("error", error);
  }

  /** @param {"connecting" | "connected" | "reconnecting" | "closed"} status */
  #setStatus(status) {
    if (this.status === status) return;
    this.status = status;
    this.#events.dispatch("status", status);
  }

  // ---- Writing ----

  /** A join goes through the limiter with the logged ops: the relay charges joins to the same allowance. One of
   *  a canvas being left waits for its `left`. @param {Board} board */
  #join(board) {
    if (!this.#isOpen() || this.#answers.isLeaving(board.canvas)) return;
    this.#limiter.push({ canvas: board.canvas, text: JSON.stringify(board._joinFrame()), join: true });
  }

  #isOpen() {
    return this.#socket !== null && this.#socket.readyState === 1; // WebSocket.OPEN
  }

  /** @param {string} text */
  #sendRaw(text) {
    if (!this.#isOpen()) return false;
    this.#socket.send(text);
    return true;
  }

  /** A logged op goes out through the limiter (at once, or in its turn). @param {string} text @param {string} canvas */
  #sendLogged(text, canvas) {
    if (!this.#isOpen()) return false;
    this.#limiter.push({ canvas, text, join: false });
    return true;
  }

  /** What each Board may ask of its client (board.js `Link`). @returns {import("./board.js").Link} */
  #makeLink() {
    return {
      send: (text, canvas) => (canvas === undefined ? this.#sendRaw(text) : this.#sendLogged(text, canvas)),
      join: (board) => this.#boards.get(board.canvas) === board && this.#join(board),
      leave: (board) => {
        if (this.#boards.get(board.canvas) !== board || !board._joinSent()) return;
        if (this.#limiter.drop(board.canvas)) return; // its join never went out: nothing to tell the relay
        // Not through the limiter: the relay never refuses a leave for rate.
        if (this.#sendRaw(JSON.stringify({ type: "leave", canvas: board.canvas }))) this.#answers.leaveSent(board.canvas);
      },
      forget: (board) => {
        if (this.#boards.get(board.canvas) !== board) return;
        this.#boards.delete(board.canvas);
        this.#limiter.drop(board.canvas);
      },
      resync: (why) => this.#resync(why),
      nextId: () => (this.#counter += 1),
      keyPrefix: this.#keyPrefix,
      generation: () => this.#generation,
      limits: this.#limits,
      request: requester(this.url, this.options),
    };
  }
}

/** 16 random hex characters: the idempotency keys' prefix, unique per client. */
function randomId() {
  const bytes = new Uint8Array(8);
  if (globalThis.crypto?.getRandomValues) globalThis.crypto.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}
