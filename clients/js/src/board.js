// One canvas as this client sees it (a Board): the state confirmed by the server at `seq`, the ops this client
// sent that are not acked yet (shown on top, and re-sent with the same idempotency key after a reconnect, so
// that none is ever logged twice), who is here (`users`, `peers`), and the events the app listens to. It
// applies the frames the client routes to it, in order, and checks that every seq arrives exactly once.
// It owns no socket: it writes through the small `link` its RelayClient gives it (client.js), which owns the
// socket, the reconnects and the joins.

import { Emitter } from "./emitter.js";
import { RelayError } from "./error.js";
import { copy, fitting, handled, requireId, throttle } from "./frames.js";
import { canvasPath, count } from "./http.js";

export { RelayError };

/** @typedef {{ id: string, [field: string]: any }} CanvasObject */

const OBJECT_OPS = new Set(["object-create", "object-update", "object-delete"]);

/**
 * Folds one object op into `objects` (id -> object), as the server does ("Canvas state" in the contract).
 * @param {Map<string, CanvasObject>} objects
 * @param {string} type
 * @param {any} data
 */
export function applyOp(objects, type, data) {
  if (!data || typeof data.id !== "string") return;
  const current = objects.get(data.id);
  if (type === "object-create") objects.set(data.id, { ...data });
  else if (type === "object-update" && current) objects.set(data.id, { ...current, ...data });
  else if (type === "object-delete") objects.delete(data.id);
}

/**
 * What a Board needs from its client (client.js builds it).
 * @typedef {object} Link
 * @property {(text: string, canvas?: string) => boolean} send  writes a frame if the socket is open; a logged
 *   op names its canvas, and goes through the client's rate limiter (and is dropped if the board leaves)
 * @property {(board: Board) => void} join      sends this board's join on the current socket
 * @property {(board: Board) => void} leave     tells the server, if it saw this board's join
 * @property {(board: Board) => void} forget    the client drops the board (and its queued ops)
 * @property {(why: string) => void} resync     drops the socket and reconnects (a gap: resume fixes it)
 * @property {() => number} nextId            a number never handed out before by this client
 * @property {string} keyPrefix                 random, per client: idempotency keys are `${keyPrefix}-${id}`
 * @property {() => number} generation          which socket is current (a join is per socket)
 * @property {{ cursorInterval: number, presenceInterval: number, maxFrameSize: number }} limits
 * @property {import("./http.js").Request} request  a request to the relay's HTTP API (http.js)
 */

/**
 * An op waiting for its ack.
 * @typedef {object} PendingOp
 * @property {string} type
 * @property {any} data           what was sent (a copy: the caller may go on mutating its own object)
 * @property {string} ref
 * @property {string} text        the frame, as re-sent after a reconnect
 * @property {boolean} sent       written on the current socket
 * @property {number} seq          once acked as a duplicate: the original's seq (see `#settling`)
 * @property {(seq: number) => void} resolve
 * @property {(error: Error) => void} reject
 */

export class Board {
  /** @type {Map<string, CanvasObject>} confirmed state as of `seq` */
  #confirmed = new Map();
  /** @type {Map<string, PendingOp>} by ref, in send order */
  #pending = new Map();
  /** @type {Map<string, PendingOp>} acked as duplicates at a seq this board has not reached yet (the replay
   *  that brings them is on its way): still shown, under the pending ones, until it does */
  #settling = new Map();
  /** @type {Map<string, CanvasObject> | null} `objects`, cached until the next change */
  #view = null;
  #events = new Emitter();
  /** @type {Link} */
  #link;
  /** @type {string | undefined} this connection's presence frame, re-sent after every (re)join; undefined: never set */
  #presence = undefined;
  #cursor;
  #presenceThrottle;
  /** the socket generation this board's join was sent on (-1: none) */
  #joinedOn = -1;
  #everJoined = false;
  /** this board's connection ids, one per welcome: after a reconnect the old one is no peer */
  /** @type {Set<string>} */
  #ownConnections = new Set();
  /** refs are `${serial}.${id}`: an ack or error naming another serial is the tail of an earlier board of
   *  this canvas (a `left` is not a barrier for every frame), never this board's business */
  #serial;
  /** @type {(board: Board) => void} */ #resolveReady = () => {};
  /** @type {(error: Error) => void} */ #rejectReady = () => {};

  /** Made by `RelayClient.canvas(id)`, not by the app. @param {string} canvas @param {Link} link */
  constructor(canvas, link) {
    /** @readonly */ this.canvas = canvas;
    this.#link = link;
    this.#serial = link.nextId();
    /** @type {"joining" | "joined" | "closed"} */ this.status = "joining";
    /** the last seq applied (0 before the first welcome) */ this.seq = 0;
    /** @type {string | null} */ this.epoch = null;
    /** @type {"editor" | "viewer" | null} */ this.role = null;
    /** @type {string | null} this board's connection id (new on every join) */ this.connection = null;
    /** @type {string | null} the user id the server says this is */ this.user = null;
    /** @type {Map<string, { user: string, name?: string, connections: number }>} */ this.users = new Map();
    /** @type {Map<string, { connection: string, user: string, name?: string, data: any }>} */ this.peers = new Map();
    /** @type {RelayError | null} why the board closed */ this.closedBy = null;
    /** @type {Promise<Board>} */ this.ready = new Promise((resolve, reject) => {
      this.#resolveReady = resolve;
      this.#rejectReady = reject;
    });
    this.ready.catch(() => {}); // a refused join is also a "status" + "error": never an unhandled rejection
    this.#cursor = throttle(link.limits.cursorInterval, (text) => link.send(text));
    this.#presenceThrottle = throttle(link.limits.presenceInterval, (text) => link.send(text));
  }

  /** The confirmed state with this client's pending ops applied on top. Read-only: do not mutate it. */
  get objects() {
    if (!this.#view) {
      const view = new Map(this.#confirmed);
      for (const op of [...this.#settling.values(), ...this.#pending.values()]) {
        if (OBJECT_OPS.has(op.type)) applyOp(view, op.type, op.data);
      }
      this.#view = view;
    }
    return this.#view;
  }

  /** How many logged ops wait for their ack. */
  get pendingCount() {
    return this.#pending.size;
  }

  /** @param {Record<string, any> & { id: string }} object */
  create(object) {
    return this.#publish("object-create", requireId(object));
  }

  /** @param {Record<string, any> & { id: string }} changes top-level fields to merge into the object */
  update(changes) {
    return this.#publish("object-update", requireId(changes));
  }

  /** @param {string} id */
  delete(id) {
    return this.#publish("object-delete", requireId({ id }));
  }

  /** A custom logged message (`type` matching [a-z][a-z0-9-]{0,31}, not reserved). @param {string} type @param {unknown} data */
  publish(type, data) {
    return this.#publish(type, data);
  }

  /** An ephemeral event to every other connection: no seq, no ack; dropped (false) while not joined. Throws a
   *  RelayError "too_large" for a frame over maxFrameSize. @param {string} type @param {unknown} data */
  emit(type, data) {
    const text = this.#fit({ type, canvas: this.canvas, data, ephemeral: true });
    return this.status === "joined" && this.#link.send(text);
  }

  /** Replaces this connection's presence state: sent throttled (the latest always goes out), and again after
   *  every rejoin (a new connection starts with none). Throws a RelayError "too_large" for a frame over
   *  maxFrameSize, and the state stays as it was. @param {Record<string, any>} data */
  setPresence(data) {
    this.#presence = this.#fit({ type: "presence", canvas: this.canvas, data: copy(data) });
    if (this.status === "joined") this.#presenceThrottle.push(this.#presence);
  }

  /** Throttled; the latest always goes out; dropped while not joined. Throws a RelayError "too_large" for a frame
   *  over maxFrameSize. @param {{ x: number, y: number } & Record<string, any>} position */
  moveCursor(position) {
    const text = this.#fit({ type: "cursor", canvas: this.canvas, data: copy(position) });
    if (this.status === "joined") this.#cursor.push(text);
  }

  /** @param {string} type @param {(...args: any[]) => void} listener */
  on(type, listener) {
    this.#events.on(type, listener);
    return this;
  }

  /** @param {string} type @param {(...args: any[]) => void} listener */
  off(type, listener) {
    this.#events.off(type, listener);
    return this;
  }

  /** Leaves the canvas: pending ops reject with code "left"; the client forgets this board. */
  leave() {
    if (this.status === "closed") return;
    this.#link.leave(this);
    this._end(new RelayError("left", `left canvas ${this.canvas}`));
  }

  // ---- History: the relay's HTTP API (PROTOCOL.md v1.2 "History"), not the socket; any status will do ----

  /** The canvas as it was right after seq `at` in the current epoch: `{ seq, epoch, objects }`, `objects` a Map
   *  as `board.objects` is. @param {{ at: number }} point @returns {Promise<{ seq: number, epoch: string,
   *  objects: Map<string, CanvasObject> }>} */
  async history({ at }) {
    const answer = await this.#link.request("GET", `${canvasPath(this.canvas)}?at=${count(at, "at")}`);
    return { seq: answer.seq, epoch: answer.epoch, objects: new Map(Object.entries(answer.objects ?? {})) };
  }

  /** Named versions and kept automatic snapshots, newest first, a page at a time: pass `next` as `before`.
   *  @param {{ limit?: number, before?: number }} [page]
   *  @returns {Promise<{ versions: { seq: number, ts: number, name: string | null, bytes: number }[], next: number | null }>} */
  async versions({ limit, before } = {}) {
    const query = new URLSearchParams();
    if (limit !== undefined) query.set("limit", String(count(limit, "limit")));
    if (before !== undefined) query.set("before", String(count(before, "before")));
    const answer = await this.#link.request("GET", `${canvasPath(this.canvas)}/versions${String(query) ? `?${query}` : ""}`);
    return { versions: answer.versions, next: answer.next ?? null };
  }

  /** Names the state at the head (naming a seq again renames it). @param {string} name
   *  @returns {Promise<{ seq: number, name: string }>} */
  async nameVersion(name) {
    if (typeof name !== "string") throw new TypeError("canvas-relay: a version's name is a string");
    const answer = await this.#link.request("POST", `${canvasPath(this.canvas)}/versions`, { name });
    return { seq: answer.seq, name: answer.name };
  }

  /** Brings the canvas back to its state at `seq`: the relay logs the ops that do it, which reach every board as
   *  anyone's do. Resolves with the new head and how many ops that took (0: nothing differed).
   *  @param {number} seq @returns {Promise<{ seq: number, ops: number }>} */
  async restore(seq) {
    const answer = await this.#link.request("POST", `${canvasPath(this.canvas)}/restore`, { seq: count(seq, "seq") });
    return { seq: answer.seq, ops: answer.ops };
  }

  // ---- Called by the client (not part of the API) ----

  /** The join frame: with since + epoch once this board has had a welcome, so that the server resumes. */
  _joinFrame() {
    this.#joinedOn = this.#link.generation();
    if (this.epoch === null) return { type: "join", canvas: this.canvas };
    return { type: "join", canvas: this.canvas, since: this.seq, epoch: this.epoch };
  }

  /** Whether this board's join went out on the current socket. */
  _joinSent() {
    return this.#joinedOn === this.#link.generation();
  }

  /** The socket is gone: everything unacked will be re-sent after the next welcome. */
  _disconnected() {
    if (this.status === "closed") return;
    for (const op of this.#pending.values()) op.sent = false;
    this.#cursor.cancel();
    this.#presenceThrottle.cancel();
    this.#setStatus("joining");
  }

  /** @param {PendingOp} op @param {RelayError} error */
  _refuse(op, error) {
    if (!this.#pending.delete(op.ref)) return;
    op.reject(error);
    this.#changed("rollback", undefined, error);
  }

  /** Closes the board for good: ready and every pending op reject with `error`. @param {RelayError} error */
  _end(error) {
    if (this.status === "closed") return;
    this.closedBy = error;
    this.#link.forget(this);
    this.#cursor.cancel();
    this.#presenceThrottle.cancel();
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    this.#settling.clear();
    this.#view = null;
    this.#rejectReady(error);
    for (const op of pending) op.reject(error);
    this.#setStatus("closed");
    if (error.code !== "left" && error.code !== "closed") this.#events.dispatch("error", error);
    if (pending.length) this.#changed("rollback");
  }

  /** A user message or broadcast (no canvas: the client hands it to every board). @param {any} frame */
  _message(frame) {
    this.#events.dispatch("message", frame);
  }

  /** A frame about this canvas, in the order the socket delivered it. @param {Record<string, any>} frame */
  _receive(frame) {
    switch (frame.type) {
      case "welcome": return this.#welcome(frame);
      case "ack": return this.#ack(frame);
      case "error": return this.#error(frame);
      case "reset": return this.#reset(frame);
      case "cursor": return this.#cursorFrom(frame);
      case "presence": return this.#peer(frame);
    }
    if (this.status !== "joined") return;
    if (frame.ephemeral === true) return this.#events.dispatch("event", frame);
    if (typeof frame.seq === "number") return this.#logged(frame);
    this.#events.dispatch("message", frame);
  }

  // ---- Frames ----

  /** @param {Record<string, any>} frame */
  #welcome(frame) {
    const first = !this.#everJoined;
    const epochChanged = this.epoch !== frame.epoch;
    Object.assign(this, { epoch: frame.epoch, seq: frame.seq, role: frame.role ?? "editor" });
    Object.assign(this, { connection: frame.connection ?? null, user: frame.user ?? null });
    if (this.connection !== null) this.#ownConnections.add(this.connection);
    if (!frame.resumed) this.#confirmed = new Map(Object.entries(frame.objects ?? {}));
    this.users = new Map((frame.presence ?? []).map((/** @type {any} */ p) => [p.user, { ...p }]));
    // This board's own earlier connections (before a reconnect) are listed until the relay expires them: not peers.
    const peers = (frame.peers ?? []).filter((/** @type {any} */ p) => !this.#ownConnections.has(p.connection));
    this.peers = new Map(peers.map((/** @type {any} */ p) => [p.connection, { ...p, data: p.data ?? null }]));
    this.#everJoined = true;
    this.#setStatus("joined");
    // What was acked as a duplicate and is now covered by the state is done; the rest goes out again, in order.
    this.#settle(epochChanged ? Infinity : this.seq);
    for (const op of this.#pending.values()) if (!op.sent) this.#sendOp(op);
    if (this.#presence !== undefined) this.#presenceThrottle.push(this.#presence);
    if (first) this.#resolveReady(this);
    if (!first && !frame.resumed) this.#events.dispatch("reset", { reason: "reload", epoch: this.epoch, seq: this.seq });
    this.#changed(first ? "welcome" : frame.resumed ? "resume" : "reload", frame);
  }

  /** @param {Record<string, any>} frame */
  #ack(frame) {
    const op = this.#pending.get(frame.ref);
    if (frame.duplicate === true) {
      if (!op) return;
      this.#pending.delete(op.ref);
      op.resolve(frame.seq);
      if (frame.seq > this.seq) this.#settling.set(op.ref, Object.assign(op, { seq: frame.seq }));
      return this.#changed("ack", frame);
    }
    if (!op) return this.#isMine(frame.ref) && this.#gap(`an ack for an op it does not know (ref ${frame.ref})`);
    if (!this.#advance(frame.seq)) return;
    this.#pending.delete(op.ref);
    if (OBJECT_OPS.has(op.type)) applyOp(this.#confirmed, op.type, op.data);
    op.resolve(frame.seq);
    this.#changed("ack", frame);
  }

  /** @param {Record<string, any>} frame */
  #logged(frame) {
    if (!this.#advance(frame.seq)) return;
    if (OBJECT_OPS.has(frame.type)) {
      applyOp(this.#confirmed, frame.type, frame.data);
      return this.#changed("remote", frame);
    }
    if (frame.type === "user-connected") {
      const known = this.users.get(frame.data.user);
      this.users.set(frame.data.user, { ...frame.data, connections: Math.max(1, known?.connections ?? 0) });
      return this.#changed("users", frame);
    }
    if (frame.type === "user-disconnected") {
      this.users.delete(frame.data.user);
      return this.#changed("users", frame);
    }
    this.#events.dispatch("message", frame);
  }

  /** @param {Record<string, any>} frame */
  #error(frame) {
    const error = new RelayError(frame.code, frame.message ?? frame.code, frame);
    if (this.status === "joining") {
      // The join was refused. "unavailable" is the store being slow: try again shortly on the same socket.
      if (frame.code !== "unavailable") return this._end(error);
      const generation = this.#link.generation();
      setTimeout(() => this.status === "joining" && this.#link.generation() === generation && this.#link.join(this), 1000);
      return this.#events.dispatch("error", error);
    }
    const op = frame.ref === undefined ? undefined : this.#pending.get(frame.ref);
    if (op) return this._refuse(op, error);
    if (frame.ref === undefined || this.#isMine(frame.ref)) this.#events.dispatch("error", error);
  }

  /** The canvas was deleted through the API: a new epoch starts empty. Pending ops stay (they are in flight,
   *  and the server acks them in whichever epoch it commits them). @param {Record<string, any>} frame */
  #reset(frame) {
    Object.assign(this, { epoch: frame.epoch, seq: frame.seq ?? 0 });
    this.#confirmed = new Map();
    this.#settling.clear();
    this.#events.dispatch("reset", { reason: "reset", epoch: this.epoch, seq: this.seq });
    this.#changed("reset", frame);
  }

  /** A cursor; its connection becomes a peer if it was not one yet (it joined after this board's welcome and has
   *  set no presence state). @param {Record<string, any>} frame */
  #cursorFrom(frame) {
    const connection = frame.connection;
    if (typeof connection === "string" && !this.peers.has(connection) && !this.#ownConnections.has(connection)) {
      const name = this.users.get(frame.from)?.name;
      this.peers.set(connection, { connection, user: frame.from, name, data: null });
    }
    this.#events.dispatch("cursor", frame);
  }

  /** @param {Record<string, any>} frame */
  #peer(frame) {
    const connection = frame.connection;
    if (this.#ownConnections.has(connection)) return; // an earlier connection of this board, gone or going
    const name = this.users.get(frame.from)?.name ?? this.peers.get(connection)?.name;
    const peer = { connection, user: frame.from, name, data: frame.data ?? null };
    if (peer.data === null) this.peers.delete(connection);
    else this.peers.set(connection, peer);
    this.#events.dispatch("presence", peer, frame);
  }

  // ---- Helpers ----

  /** @param {string} type @param {unknown} data @returns {Promise<number>} */
  #publish(type, data) {
    if (this.status === "closed") {
      const error = this.closedBy ?? new RelayError("closed", "the board is closed");
      return handled(Promise.reject(error));
    }
    const id = this.#link.nextId();
    const [ref, key] = [`${this.#serial}.${id}`, `${this.#link.keyPrefix}-${id}`];
    const sent = copy(data);
    let text;
    try {
      text = this.#fit({ type, canvas: this.canvas, data: sent, ref, idempotency_key: key });
    } catch (error) {
      return handled(Promise.reject(error)); // refused here: nothing is sent, nothing is shown
    }
    /** @type {PendingOp} */
    let op = /** @type {any} */ (null);
    const promise = new Promise((resolve, reject) => {
      op = { type, data: sent, ref, text, sent: false, seq: 0, resolve, reject };
    });
    this.#pending.set(ref, op);
    if (this.status === "joined") this.#sendOp(op);
    if (OBJECT_OPS.has(type)) this.#changed("local");
    return handled(promise);
  }

  /** @param {PendingOp} op */
  #sendOp(op) {
    op.sent = this.#link.send(op.text, this.canvas);
  }

  /** The text of a frame this board sends, checked against the relay's --max-frame-size (see frames.js).
   *  @param {Record<string, any>} frame */
  #fit(frame) {
    return fitting(frame, this.#link.limits.maxFrameSize);
  }

  /** Every seq arrives exactly once, in order; anything else is a bug or a lost frame: resume. @param {number} seq */
  #advance(seq) {
    if (seq !== this.seq + 1) return this.#gap(`expected seq ${this.seq + 1}, got ${seq}`);
    this.seq = seq;
    if (this.#settling.size > 0) this.#settle(seq);
    return true;
  }

  /** Duplicates the state now covers (their seq reached) are done. @param {number} seq */
  #settle(seq) {
    for (const op of this.#settling.values()) if (op.seq <= seq) this.#settling.delete(op.ref);
  }

  /** @param {unknown} ref */
  #isMine(ref) {
    return typeof ref === "string" && ref.startsWith(`${this.#serial}.`);
  }

  /** @param {string} why @returns {false} */
  #gap(why) {
    console.error(`canvas-relay: canvas ${this.canvas}: ${why}; resuming`);
    this.#link.resync(why);
    return false;
  }

  /** @param {"joining" | "joined" | "closed"} status */
  #setStatus(status) {
    if (this.status === status) return;
    this.status = status;
    this.#events.dispatch("status", status);
  }

  /** @param {string} reason @param {Record<string, any>} [frame] @param {RelayError} [error] a rollback's cause */
  #changed(reason, frame, error) {
    this.#view = null;
    this.#events.dispatch("change", error === undefined ? { reason, frame } : { reason, frame, error });
  }
}
