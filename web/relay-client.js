// canvas-relay's reference client: the whole wire contract (PROTOCOL.md) for one canvas, with no UI.
//
//   const session = new CanvasSession({ canvas: "team-1", user: "ann", name: "Ann" });
//   session.onchange = () => render(session.objects(), session.presence);
//   session.connect();
//   session.send("object-create", { id: "r1", kind: "rect", x: 10, y: 10, w: 80, h: 40 });
//
// What it keeps: the canvas state confirmed by the server at `seq` (objects folded in seq order), the ops this
// client sent that are not acked yet (shown on top, so drawing feels instant), the users present, and the
// `seq` + `epoch` to resume from. On a dropped connection it reconnects with backoff and `since`+`epoch`; the
// server replays what was missed (`resumed: true`) or sends the whole state again (`resumed: false`).

/** Connection states, as the indicator shows them. */
export const Status = {
  connecting: "connecting",
  connected: "connected",
  reconnecting: "reconnecting",
  resumed: "resumed",   // reconnected, and the server replayed every message missed: nothing reloaded
  reloaded: "reloaded", // reconnected, but the log no longer reached back (or the epoch changed): state reloaded
  closed: "closed",     // the server refused to continue (expired token, removed: 4003); no more reconnects
};

const OBJECT_OPS = new Set(["object-create", "object-update", "object-delete"]);

/** Folds one object op into `objects` (a Map of id to object), as the server does. */
export function applyOp(objects, type, data) {
  if (!data || typeof data.id !== "string") return;
  if (type === "object-create") objects.set(data.id, { ...data });
  else if (type === "object-update" && objects.has(data.id)) objects.set(data.id, { ...objects.get(data.id), ...data });
  else if (type === "object-delete") objects.delete(data.id);
}

export class CanvasSession {
  /**
   * @param {object} options
   * @param {string} options.canvas  canvas id
   * @param {string} [options.user]  user id (ignored by a server with JWT auth: the token's `sub` counts)
   * @param {string} [options.name]  display name shown in presence
   * @param {string} [options.token] JWT, when the server requires one
   * @param {string} [options.role]  "viewer" to join read-only (a role can be lowered, never raised)
   * @param {string} [options.base]  ws:// or wss:// origin; defaults to the page's own
   */
  constructor({ canvas, user, name, token, role, base }) {
    Object.assign(this, { canvas, user, name, token, role });
    this.base = base ?? `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}`;
    this.confirmed = new Map(); // id -> object, as of `seq`
    this.pending = new Map();   // ref -> {type, data}, in send order
    this.presence = new Map();  // user -> {user, name, connections}
    this.seq = 0;
    this.epoch = null;
    this.status = Status.connecting;
    this.nextRef = 1;
    this.retries = 0;
    // Callbacks, all optional.
    this.onchange = null; // objects or presence changed
    this.onstatus = null; // (status)
    this.oncursor = null; // (user, data) another user's cursor
    this.onerror = null;  // (frame) an error frame, e.g. rate_limited
    this.onmessage = null; // (frame) anything else: custom types, user messages
    this.onevent = null;   // (frame) another connection's ephemeral event, e.g. a reaction
  }

  /** The canvas as this client should show it: the confirmed state with its own unacked ops on top. */
  objects() {
    const view = new Map(this.confirmed);
    for (const { type, data } of this.pending.values()) applyOp(view, type, data);
    return view;
  }

  connect() {
    const query = new URLSearchParams();
    if (this.user) query.set("user", this.user);
    if (this.name) query.set("name", this.name);
    if (this.token) query.set("token", this.token);
    if (this.role) query.set("role", this.role);
    if (this.epoch !== null) {
      query.set("since", String(this.seq));
      query.set("epoch", this.epoch);
    }
    const socket = new WebSocket(`${this.base}/ws/${encodeURIComponent(this.canvas)}?${query}`);
    this.socket = socket;
    socket.onmessage = (event) => this.receive(JSON.parse(event.data));
    socket.onclose = (event) => {
      if (this.socket === socket) this.reconnectAfter(event.code);
    };
  }

  /** Sends a logged message; object ops show at once and are confirmed by their ack. Returns its ref. */
  send(type, data) {
    const ref = `r${this.nextRef++}`;
    if (!this.isOpen()) return null; // nothing is queued while offline: the UI shows the state as it is
    if (OBJECT_OPS.has(type)) this.pending.set(ref, { type, data });
    this.socket.send(JSON.stringify({ type, data, ref }));
    this.changed();
    return ref;
  }

  /** Sends an ephemeral event to everyone else on the canvas: no seq, no ack, never logged. */
  emit(type, data) {
    if (this.isOpen()) this.socket.send(JSON.stringify({ type, data, ephemeral: true }));
  }

  /** Sends this user's cursor position (ephemeral: no seq, no ack). */
  cursor(data) {
    if (this.isOpen()) this.socket.send(JSON.stringify({ type: "cursor", data }));
  }

  close() {
    const socket = this.socket;
    this.socket = null;
    socket?.close();
    this.setStatus(Status.closed);
  }

  isOpen() {
    return this.socket?.readyState === WebSocket.OPEN;
  }

  receive(frame) {
    switch (frame.type) {
      case "welcome": return this.welcome(frame);
      case "ack": return this.ack(frame);
      case "cursor": return this.oncursor?.(frame.from, frame.data);
      case "reset": return this.reset(frame);
      case "error":
        if (frame.ref) this.pending.delete(frame.ref); // refused: it will never be logged
        this.changed();
        return this.onerror?.(frame);
      case "pong": return;
    }
    if (frame.ephemeral === true) return this.onevent?.(frame);
    if (typeof frame.seq === "number") return this.logged(frame);
    this.onmessage?.(frame); // e.g. a user message: {"type": ..., "to": ..., "data": ...}
  }

  welcome(frame) {
    const reconnect = this.epoch !== null;
    this.epoch = frame.epoch;
    this.seq = frame.seq;
    this.role = frame.role ?? this.role; // what the server granted: "editor" or "viewer"
    this.retries = 0;
    // Presence is as of `seq`, where the replay (if any) starts; objects come only when not resumed.
    this.presence = new Map(frame.presence.map((p) => [p.user, p]));
    if (!frame.resumed) this.confirmed = new Map(Object.entries(frame.objects ?? {}));
    this.setStatus(!reconnect ? Status.connected : frame.resumed ? Status.resumed : Status.reloaded);
    this.changed();
  }

  ack(frame) {
    const op = this.pending.get(frame.ref);
    this.pending.delete(frame.ref);
    if (!this.advance(frame.seq)) return;
    if (op) applyOp(this.confirmed, op.type, op.data);
    this.changed();
  }

  logged(frame) {
    if (!this.advance(frame.seq)) return;
    if (OBJECT_OPS.has(frame.type)) applyOp(this.confirmed, frame.type, frame.data);
    else if (frame.type === "user-connected") this.presence.set(frame.data.user, { ...frame.data, connections: 1 });
    else if (frame.type === "user-disconnected") this.presence.delete(frame.data.user);
    else this.onmessage?.(frame);
    this.changed();
  }

  /** The canvas was deleted through the API: a new epoch starts empty at seq 0. */
  reset(frame) {
    this.epoch = frame.epoch;
    this.seq = 0;
    this.confirmed.clear();
    this.pending.clear();
    this.changed();
  }

  /** Every seq arrives exactly once, in order; anything else is a bug worth a loud message and a resume. */
  advance(seq) {
    if (seq !== this.seq + 1) {
      console.error(`canvas-relay: expected seq ${this.seq + 1}, got ${seq}; resuming`);
      this.socket?.close();
      return false;
    }
    this.seq = seq;
    return true;
  }

  reconnectAfter(code) {
    // Ops never acked may or may not have been logged; a resume replays them if they were.
    this.pending.clear();
    if (code === 1008) return this.close(); // token expired: a new token is the app's business
    if (code === 4003) return this.close(); // removed from the canvas through the API: not ours to undo
    this.setStatus(Status.reconnecting);
    this.changed();
    // 250 ms doubling to 5 s, with jitter so a restarted instance's clients do not all return at once.
    const delay = Math.min(5000, 250 * 2 ** this.retries++) * (0.5 + Math.random() / 2);
    setTimeout(() => this.status !== Status.closed && this.connect(), delay);
  }

  setStatus(status) {
    this.status = status;
    this.onstatus?.(status);
  }

  changed() {
    this.onchange?.();
  }
}
