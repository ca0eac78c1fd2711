// Types of @canvas-relay/client, written by hand to match client.js, board.js, http.js, error.js and emitter.js
// (test/types-check.ts holds them together under `tsc --noEmit`). The behaviour behind each name is described in
// README.md.

/** What the SDK needs of a WebSocket: the browser's, or the `ws` package's in Node. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onerror: ((event: any) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface RelayClientOptions {
  /** ws:// or wss:// origin, e.g. "ws://127.0.0.1:8080"; the client opens `${url}/ws?...`. */
  url: string;
  /** User id; a server with JWT auth takes the token's `sub` instead. */
  user?: string;
  /** Display name shown in presence (≤ 64 chars). */
  name?: string;
  /** HS256 JWT, when the server runs with --jwt-secret. Also sent to the HTTP API (history), unless `apiKey` is set. */
  token?: string;
  /** The relay's --api-key: sent as `Authorization: Bearer` to the HTTP API (history) instead of `token`. Never
   *  put it in a page: it is the operator's. */
  apiKey?: string;
  /** http:// or https:// base of the HTTP API; default `url` with ws: -> http:, wss: -> https:. */
  httpUrl?: string;
  /** The fetch of the history calls; default `globalThis.fetch` (browsers, Node ≥ 18). */
  fetch?: typeof fetch;
  /** "viewer" joins read-only; "editor" (the default) is what the token allows. */
  role?: Role;
  /** A WebSocket constructor; default `globalThis.WebSocket`. In Node 20: `import { WebSocket } from "ws"`. */
  WebSocket?: WebSocketConstructor | (new (url: string) => unknown);
  /** Reconnect backoff in ms: `initialDelay` (250) doubling to `maxDelay` (10000), with equal jitter. */
  reconnect?: { initialDelay?: number; maxDelay?: number };
  /** Ms between `{"type":"ping"}` frames (15000; 0: none). A ping still unanswered (nothing heard since) at the
   *  next one drops the socket, which reconnects. */
  heartbeatInterval?: number;
  /** Cursor frames per second per board (60, the server's default --max-cursor-rate); 0: unthrottled. */
  cursorRate?: number;
  /** Presence frames per second per board (60); 0: unthrottled. */
  presenceRate?: number;
  /** Bytes: the server's --max-frame-size (65536). A frame over it is refused locally with code "too_large": an
   *  op's promise rejects; emit, setPresence and moveCursor throw. */
  maxFrameSize?: number;
  /** Ms to wait for the relay's answer to a join (its welcome or refusal) or a leave (`left`) before the socket is
   *  dropped and the client reconnects, rejoining every open board (30000). */
  answerTimeout?: number;
  /** Logged ops per second, and burst, for the whole socket ({ rate: 200, burst: 200 }); the excess waits in
   *  order. `false`: no limiter (the server may then refuse with "rate_limited", or close with 4008). */
  rateLimit?: { rate: number; burst: number } | false;
}

export type Role = "editor" | "viewer";
export type ClientStatus = "connecting" | "connected" | "reconnecting" | "closed";
export type BoardStatus = "joining" | "joined" | "closed";

/** Contract codes ("forbidden", "rate_limited", "canvas_full", "too_large", "invalid_frame", "unknown_type",
 *  "unavailable", "too_many_canvases"; from the HTTP API "seq_ahead", "history_expired", "canvas_exists") or the
 *  SDK's own ("left", "closed", "removed", "token_expired", "rate_limit_abuse", "unauthorized", "bad_request",
 *  "listener"; "too_large" too, for a frame over `maxFrameSize` refused before it is sent; for an HTTP error
 *  whose body names no code, one for its status: "bad_request", "unauthorized", "forbidden", "not_found",
 *  "conflict", "gone", "too_large", "rate_limited", "unavailable" (5xx); "network" when no answer came,
 *  "bad_response" for a 2xx without JSON). */
export type ErrorCode = string;

export class RelayError extends Error {
  constructor(code: ErrorCode, message: string, frame?: Record<string, any>);
  readonly code: ErrorCode;
  /** The server frame that said so, when one did. */
  readonly frame: Record<string, any> | undefined;
  /** Set on a "removed", "token_expired" or "rate_limit_abuse" error: the WebSocket close code (4003, 1008, 4008). */
  closeCode?: number;
  /** The HTTP status: of every error of a history call that got an answer, and of an "unauthorized"/"forbidden"/
   *  "bad_request" refusal of the upgrade when the WebSocket said (Node). */
  httpStatus?: number | null;
}

export interface CanvasObject {
  id: string;
  [field: string]: any;
}

export interface UserInfo {
  user: string;
  name?: string;
  /** The user's connection count as of the welcome (1 for a user who connected since). */
  connections: number;
}

export interface Peer {
  connection: string;
  user: string;
  name?: string;
  /** Its presence state; `null` when it never set one, or (in a "presence" event) when it left. */
  data: any;
}

export type ChangeReason =
  | "welcome" // the first welcome: state loaded
  | "resume" // a rejoin that replayed what was missed (no reload)
  | "reload" // a rejoin that reloaded the state (resumed:false); "reset" fired before it
  | "reset" // the canvas was deleted through the API: empty state at a new epoch
  | "local" // this client's optimistic op, shown before its ack
  | "ack" // one of this client's ops is confirmed
  | "rollback" // one of this client's ops was refused (or the board closed): its optimistic change is gone
  | "remote" // another connection's object op
  | "users"; // user-connected / user-disconnected

/** The canvas at a past seq (`board.history`). */
export interface HistoryState {
  seq: number;
  epoch: string;
  /** As `board.objects`: id -> object. */
  objects: Map<string, CanvasObject>;
}

/** A named version or a kept automatic snapshot. */
export interface Version {
  seq: number;
  /** The commit time of `seq`, unix ms. */
  ts: number;
  /** `null` for an automatic snapshot. */
  name: string | null;
  /** The size of its snapshot. */
  bytes: number;
}

export interface VersionPage {
  /** Newest first. */
  versions: Version[];
  /** Pass as `before` for the next page; `null` on the last. */
  next: number | null;
}

export interface ChangeEvent {
  reason: ChangeReason;
  /** The frame behind the change, when one was. */
  frame?: Record<string, any>;
  /** Why a "rollback" happened: the refusal of the op, with its `.code`. */
  error?: RelayError;
}

export interface ResetEvent {
  /** "reset": the canvas was deleted through the API; "reload": a rejoin could not resume. */
  reason: "reset" | "reload";
  epoch: string | null;
  seq: number;
}

/** A frame as the server sent it, e.g. a cursor: `{ type, canvas, from, connection, data, ts }`. */
export interface ServerFrame {
  type: string;
  canvas?: string;
  from?: string;
  connection?: string;
  data?: any;
  ts?: number;
  seq?: number;
  to?: string;
  ephemeral?: boolean;
  [field: string]: any;
}

export interface BoardEvents {
  change: (change: ChangeEvent) => void;
  cursor: (frame: ServerFrame) => void;
  presence: (peer: Peer, frame: ServerFrame) => void;
  event: (frame: ServerFrame) => void;
  message: (frame: ServerFrame) => void;
  reset: (reset: ResetEvent) => void;
  error: (error: RelayError) => void;
  status: (status: BoardStatus) => void;
}

export interface ClientEvents {
  status: (status: ClientStatus) => void;
  message: (frame: ServerFrame) => void;
  error: (error: RelayError) => void;
}

/** The listener registry: a listener that throws is reported (code "listener") and never breaks the client. */
export class Emitter {
  on(type: string, listener: (...args: any[]) => void): void;
  off(type: string, listener: (...args: any[]) => void): void;
  has(type: string): boolean;
  dispatch(type: string, ...args: unknown[]): void;
}

/** One canvas, joined over its client's socket. Made by `client.canvas(id)`. */
export class Board {
  private constructor(canvas: string, link: never);
  readonly canvas: string;
  /** "joining" until a welcome (and again while the socket is down), "closed" for good. */
  status: BoardStatus;
  /** The last seq applied (0 before the first welcome). */
  seq: number;
  epoch: string | null;
  role: Role | null;
  /** This board's connection id, as others see it in presence and cursors (new on every join). */
  connection: string | null;
  /** The user id the server says this is. */
  user: string | null;
  users: Map<string, UserInfo>;
  /** Every other live connection of the canvas, with its presence state. */
  peers: Map<string, Peer>;
  /** Why the board closed ("left", "closed", "removed", a refused join's code), else null. */
  closedBy: RelayError | null;
  /** Resolves with the board after the first welcome; rejects with a RelayError (`.code`) if the join is refused. */
  ready: Promise<Board>;
  /** The confirmed state with this client's pending ops applied on top. Read-only. */
  readonly objects: Map<string, CanvasObject>;
  /** How many logged ops wait for their ack. */
  readonly pendingCount: number;
  /** Each resolves with the op's seq once acked; rejects with a RelayError, the optimistic change rolled back. */
  create(object: CanvasObject): Promise<number>;
  update(changes: CanvasObject): Promise<number>;
  delete(id: string): Promise<number>;
  /** A custom logged message; resolves with its seq. */
  publish(type: string, data?: unknown): Promise<number>;
  /** An ephemeral event; false when not joined (dropped).
   *  @throws {RelayError} code "too_large" when its frame is over `maxFrameSize` (nothing is sent). */
  emit(type: string, data?: unknown): boolean;
  /** Replaces this connection's presence state (throttled, sent again after every rejoin).
   *  @throws {RelayError} code "too_large" when its frame is over `maxFrameSize` (the state stays as it was). */
  setPresence(data: Record<string, any>): void;
  /** Throttled to `cursorRate`, the latest always sent; dropped while not joined.
   *  @throws {RelayError} code "too_large" when its frame is over `maxFrameSize`. */
  moveCursor(position: { x: number; y: number; [field: string]: any }): void;
  on<K extends keyof BoardEvents>(type: K, listener: BoardEvents[K]): this;
  off<K extends keyof BoardEvents>(type: K, listener: BoardEvents[K]): this;
  /** Leaves the canvas; pending ops reject with code "left". */
  leave(): void;
  /** The state right after seq `at` (current epoch). Rejects with a RelayError: "seq_ahead" (400, past the
   *  head), "history_expired" (410, older than kept), "unauthorized"/"forbidden" (401/403), ... */
  history(point: { at: number }): Promise<HistoryState>;
  /** Named versions and kept automatic snapshots, newest first; page with `before: page.next`. */
  versions(page?: { limit?: number; before?: number }): Promise<VersionPage>;
  /** Names the head's state (naming a seq again renames it); resolves with the seq named. */
  nameVersion(name: string): Promise<{ seq: number; name: string }>;
  /** Logs the ops that bring the canvas back to its state at `seq`; every board converges by receiving them.
   *  Resolves with the new head and the number of ops (0: nothing differed, nothing logged). */
  restore(seq: number): Promise<{ seq: number; ops: number }>;
}

export class RelayClient {
  constructor(options: RelayClientOptions);
  readonly options: RelayClientOptions;
  /** The origin, without a trailing slash. */
  readonly url: string;
  status: ClientStatus;
  /** Why the client closed, else null. */
  closedBy: RelayError | null;
  /** The board of canvas `id`; the same object on every call until it is left or closed. Throws once closed. */
  canvas(id: string): Board;
  /** The open boards by canvas id (a copy). */
  readonly boards: Map<string, Board>;
  on<K extends keyof ClientEvents>(type: K, listener: ClientEvents[K]): this;
  off<K extends keyof ClientEvents>(type: K, listener: ClientEvents[K]): this;
  /** Closes the socket for good: every board closes, pending ops reject with code "closed". */
  close(): void;
}

/** Folds one object op into `objects` as the server does. */
export function applyOp(objects: Map<string, CanvasObject>, type: string, data: any): void;
