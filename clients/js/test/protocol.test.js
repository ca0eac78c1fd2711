// The SDK's protocol logic against a scripted server (a fake WebSocket class, no relay): the cases a real
// relay produces only by luck of timing. A duplicate ack ahead of the replay, a seq gap, re-sent ops keeping
// their idempotency key, a reset with ops pending, user messages, a leave answered after a new join, the
// rate limiter, the close codes that stop the client, the throttled cursor, a relay that never answers a
// leave or a join, leaves it refuses, and a board left before its join went out.

import assert from "node:assert/strict";
import test from "node:test";
import { RelayClient, RelayError } from "../src/index.js";
import { WebSocket, sleep, waitFor } from "./harness.js";

/** A WebSocket the test plays the server for. */
class FakeSocket {
  /** @type {FakeSocket[]} */
  static made = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    FakeSocket.made.push(this);
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close() {
    this.readyState = 3;
  }
  // The server's side:
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }
  push(frame) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  drop(code, reason = "") {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  sentOf(type) {
    return this.sent.filter((frame) => frame.type === type);
  }
}

const welcome = (canvas, seq, extra = {}) => ({
  type: "welcome", canvas, user: "u", connection: `conn-${seq}`, instance: "i", epoch: "e1", seq,
  resumed: false, role: "editor", presence: [], peers: [], objects: {}, ...extra,
});

function setup(options = {}) {
  FakeSocket.made = [];
  const client = new RelayClient({ url: "ws://relay.test/", user: "u", WebSocket: FakeSocket, reconnect: { initialDelay: 1, maxDelay: 2 }, ...options });
  const socket = () => FakeSocket.made.at(-1);
  return { client, socket };
}

test("a duplicate ack ahead of the replay, a gap, and re-sent ops with their keys", async () => {
  const { client, socket } = setup();
  assert.equal(socket().url, "ws://relay.test/ws?user=u");
  const board = client.canvas("c1");
  socket().open();
  assert.deepEqual(socket().sentOf("join"), [{ type: "join", canvas: "c1" }]);
  socket().push(welcome("c1", 5, { objects: { a: { id: "a", x: 1 } } }));
  await board.ready;

  const create = board.create({ id: "b", x: 2 });
  const [sent] = socket().sentOf("object-create");
  assert.equal(sent.canvas, "c1");
  assert.ok(sent.ref && sent.idempotency_key);

  // The socket drops before the ack; the op is re-sent after the welcome, with the same ref and key.
  socket().drop(1001, "shutting down");
  assert.equal(client.status, "reconnecting");
  await waitFor("a new socket", () => FakeSocket.made.length === 2);
  socket().open();
  assert.deepEqual(socket().sentOf("join"), [{ type: "join", canvas: "c1", since: 5, epoch: "e1" }]);
  assert.equal(socket().sentOf("object-create").length, 0, "nothing goes out before the welcome");
  socket().push(welcome("c1", 5, { resumed: true, objects: undefined }));
  const [again] = socket().sentOf("object-create");
  assert.deepEqual(again, sent);

  // The first send was committed as seq 6: the duplicate ack says so before the replay reaches it.
  socket().push({ type: "ack", canvas: "c1", seq: 6, ref: sent.ref, duplicate: true });
  assert.equal(await create, 6);
  assert.equal(board.objects.get("b")?.x, 2, "still shown until the replay brings it");
  assert.equal(board.pendingCount, 0);
  socket().push({ type: "object-create", seq: 6, canvas: "c1", from: "u", data: { id: "b", x: 2 }, ts: 1 });
  assert.equal(board.seq, 6);
  assert.deepEqual(board.objects.get("b"), { id: "b", x: 2 });

  // A gap: the client drops the socket and resumes from the last seq it applied.
  const errors = [];
  const restore = console.error;
  console.error = (...args) => errors.push(args.join(" "));
  try {
    socket().push({ type: "object-update", seq: 8, canvas: "c1", from: "v", data: { id: "a", x: 9 }, ts: 1 });
  } finally {
    console.error = restore;
  }
  assert.match(errors[0], /expected seq 7, got 8/);
  assert.equal(board.objects.get("a")?.x, 1, "the frame after the gap is not applied");
  await waitFor("a third socket", () => FakeSocket.made.length === 3);
  socket().open();
  assert.deepEqual(socket().sentOf("join"), [{ type: "join", canvas: "c1", since: 6, epoch: "e1" }]);
  client.close();
});

test("a reset keeps pending ops on top; a reload re-sends them; refusals roll back", async () => {
  const { client, socket } = setup();
  const board = client.canvas("c1");
  socket().open();
  socket().push(welcome("c1", 2, { objects: { a: { id: "a" } } }));
  await board.ready;
  const changes = [];
  const resets = [];
  board.on("change", (change) => changes.push(change.reason));
  board.on("reset", (reset) => resets.push(reset));

  const pending = board.create({ id: "p" });
  socket().push({ type: "reset", canvas: "c1", epoch: "e2", seq: 0 });
  assert.deepEqual(resets, [{ reason: "reset", epoch: "e2", seq: 0 }]);
  assert.deepEqual([...board.objects.keys()], ["p"], "confirmed state gone, the pending op on top");
  const [sent] = socket().sentOf("object-create");
  socket().push({ type: "ack", canvas: "c1", seq: 1, ref: sent.ref });
  assert.equal(await pending, 1);

  // Away, then back without a resume: reload, "reset" with reason reload, pending ops re-sent on top.
  const offline = board.update({ id: "p", x: 5 });
  socket().drop(1006);
  const refused = board.delete("a");
  await waitFor("a new socket", () => FakeSocket.made.length === 2);
  socket().open();
  socket().push(welcome("c1", 7, { epoch: "e2", objects: { p: { id: "p" }, q: { id: "q" } } }));
  assert.equal(resets.at(-1).reason, "reload");
  assert.deepEqual(board.objects.get("p"), { id: "p", x: 5 });
  const [update, del] = [socket().sentOf("object-update")[0], socket().sentOf("object-delete")[0]];
  socket().push({ type: "ack", canvas: "c1", seq: 8, ref: update.ref });
  socket().push({ type: "error", canvas: "c1", code: "invalid_frame", message: "object \"a\" does not exist", ref: del.ref });
  assert.equal(await offline, 8);
  await assert.rejects(refused, (error) => error.code === "invalid_frame");
  assert.deepEqual(changes.slice(-3), ["reload", "ack", "rollback"]);

  // An error frame tied to no op goes to "error".
  const errors = [];
  board.on("error", (error) => errors.push(error.code));
  socket().push({ type: "error", canvas: "c1", code: "rate_limited", message: "slow down" });
  assert.deepEqual(errors, ["rate_limited"]);
  client.close();
  assert.equal(client.status, "closed");
});

test("user messages, leave then join again, and what closes the client", async () => {
  const { client, socket } = setup();
  const [a, b] = [client.canvas("a"), client.canvas("b")];
  socket().open();
  socket().push(welcome("a", 0));
  socket().push(welcome("b", 0));
  await Promise.all([a.ready, b.ready]);

  const got = [];
  client.on("message", (frame) => got.push(["client", frame.type]));
  a.on("message", (frame) => got.push(["a", frame.type]));
  b.on("message", (frame) => got.push(["b", frame.type]));
  socket().push({ type: "nudge", to: "u", data: {}, ts: 1 });
  socket().push({ type: "comment", seq: 1, canvas: "a", from: "v", data: { text: "hi" }, ts: 1 });
  assert.deepEqual(got, [["client", "nudge"], ["a", "nudge"], ["b", "nudge"], ["a", "comment"]]);

  // Leave b and open it again before the server's `left`: the new join waits for it.
  const op = b.publish("note", 1);
  b.leave();
  await assert.rejects(op, (error) => error.code === "left");
  const b2 = client.canvas("b");
  assert.notEqual(b2, b);
  assert.deepEqual(socket().sent.at(-1), { type: "leave", canvas: "b" });
  assert.equal(socket().sentOf("join").filter((f) => f.canvas === "b").length, 1, "no second join yet");
  socket().push({ type: "ack", canvas: "b", seq: 1, ref: "x" }); // the old board's tail: ignored
  socket().push({ type: "left", canvas: "b" });
  assert.equal(socket().sentOf("join").filter((f) => f.canvas === "b").length, 2);
  socket().push(welcome("b", 1));
  await b2.ready;
  // Acks of the old board's ops may still trail in (a duplicate ack can follow `left`): not b2's business.
  const [note] = socket().sentOf("note");
  socket().push({ type: "ack", canvas: "b", seq: 1, ref: note.ref, duplicate: true });
  socket().push({ type: "ack", canvas: "b", seq: 2, ref: note.ref });
  assert.equal(b2.seq, 1);
  assert.equal(FakeSocket.made.length, 1, "no resync");

  // Removal through the API closes that board only.
  socket().push({ type: "left", canvas: "a", code: 4003, reason: "removed from the canvas" });
  assert.equal(a.status, "closed");
  assert.equal(a.closedBy?.code, "removed");
  assert.equal(client.status, "connected");

  // 4008: the client closes; nothing reconnects.
  const pending = b2.create({ id: "z" });
  socket().drop(4008, "rate limit abuse");
  await assert.rejects(pending, (error) => error.code === "rate_limit_abuse");
  assert.equal(client.status, "closed");
  await sleep(20);
  assert.equal(FakeSocket.made.length, 1);
});

test("the rate limiter queues in order; cursors are throttled, the latest always sent", async () => {
  const { client, socket } = setup({ rateLimit: { rate: 50, burst: 5 }, cursorRate: 20 });
  const board = client.canvas("c");
  socket().open();
  socket().push(welcome("c", 0));
  await board.ready;
  for (let i = 0; i < 12; i++) board.create({ id: `o${i}` });
  assert.equal(socket().sentOf("object-create").length, 4, "the burst, less the join's token, goes out at once");
  await waitFor("the rest, later", () => socket().sentOf("object-create").length === 12);
  assert.deepEqual(socket().sentOf("object-create").map((f) => f.data.id), Array.from({ length: 12 }, (_, i) => `o${i}`));

  for (let x = 0; x < 10; x++) board.moveCursor({ x, y: 0 });
  assert.equal(socket().sentOf("cursor").length, 1, "the first at once");
  await waitFor("the trailing cursor", () => socket().sentOf("cursor").at(-1)?.data.x === 9);
  assert.equal(socket().sentOf("cursor").length, 2, "the ones in between coalesced");

  board.setPresence({ color: "red" });
  socket().drop(4009);
  await waitFor("a new socket", () => FakeSocket.made.length === 2);
  socket().open();
  socket().push(welcome("c", 12, { resumed: true, objects: undefined }));
  assert.deepEqual(socket().sentOf("presence").at(-1), { type: "presence", canvas: "c", data: { color: "red" } }, "presence again after a rejoin");
  client.close();
});

test("closing a client whose socket is still connecting is quiet (ws would throw an unheard error)", async () => {
  const client = new RelayClient({ url: "ws://127.0.0.1:9", user: "u", WebSocket });
  const board = client.canvas("c");
  client.close();
  await assert.rejects(board.ready, (error) => error.code === "closed");
  await sleep(50);
  assert.equal(client.status, "closed");
});

test("heartbeat: pings; a ping unanswered at the next beat drops the socket and resumes", async () => {
  const { client, socket } = setup({ heartbeatInterval: 20 });
  const board = client.canvas("c");
  const first = socket();
  // The fake server answers each ping as it is sent (a microtask: before any later beat can run), while
  // `answering`; no poll has to catch a ping between two beats.
  let answering = true;
  const send = first.send.bind(first);
  first.send = (text) => {
    send(text);
    if (answering && JSON.parse(text).type === "ping") queueMicrotask(() => first.push({ type: "pong" }));
  };
  first.open();
  first.push(welcome("c", 3));
  await board.ready;
  // Answered: beat after beat, the socket stays.
  await waitFor("five pings, each answered", () => first.sentOf("ping").length >= 5);
  assert.equal(FakeSocket.made.length, 1, "answered pings keep the socket");
  // Unanswered: the next ping goes out, and the beat after it gives up on the socket; the board rejoins.
  answering = false;
  const answered = first.sentOf("ping").length;
  await waitFor("a new socket", () => FakeSocket.made.length === 2);
  assert.equal(first.sentOf("ping").length, answered + 1, "dropped at the beat after one unanswered ping");
  socket().open();
  assert.deepEqual(socket().sentOf("join"), [{ type: "join", canvas: "c", since: 3, epoch: "e1" }]);
  client.close();
});

test("a relay that never answers a leave (or a join): the client reconnects, and the canvas opened again is ready", async () => {
  const { client, socket } = setup({ answerTimeout: 50 });
  const first = client.canvas("c");
  socket().open();
  socket().push(welcome("c", 4));
  await first.ready;
  first.leave();
  const again = client.canvas("c");
  assert.deepEqual(socket().sent.at(-1), { type: "leave", canvas: "c" });
  assert.equal(again.status, "joining");
  // No `left`: past answerTimeout the socket is dropped. The new one owes nothing: the board joins afresh.
  await waitFor("a new socket", () => FakeSocket.made.length === 2);
  assert.equal(client.status, "reconnecting");
  socket().open();
  assert.deepEqual(socket().sentOf("join"), [{ type: "join", canvas: "c" }]);
  socket().push(welcome("c", 5, { objects: { a: { id: "a" } } }));
  assert.equal(await again.ready, again);
  assert.deepEqual([...again.objects.keys()], ["a"]);

  // A join that is never answered: the same.
  const other = client.canvas("d");
  assert.deepEqual(socket().sentOf("join").at(-1), { type: "join", canvas: "d" });
  await waitFor("a third socket", () => FakeSocket.made.length === 3);
  socket().open();
  assert.deepEqual(socket().sentOf("join").map((frame) => frame.canvas).sort(), ["c", "d"]);
  socket().push(welcome("d", 1));
  await other.ready;
  client.close();
});

test("a leave refused is sent again: after a second for rate_limited, after the welcome for an older relay's invalid_frame", async () => {
  const { client, socket } = setup({ answerTimeout: 5000 });
  const board = client.canvas("c");
  socket().open();
  socket().push(welcome("c", 1));
  await board.ready;
  board.leave();
  const again = client.canvas("c");
  socket().push({ type: "error", canvas: "c", code: "rate_limited", message: "slow down" });
  assert.equal(again.status, "joining", "the refusal is the leave's, not the new board's");
  await waitFor("the leave again", () => socket().sentOf("leave").length === 2);
  socket().push({ type: "left", canvas: "c" });
  assert.equal(socket().sentOf("join").length, 2, "the new board joins once the leave is answered");
  socket().push(welcome("c", 2));
  await again.ready;

  // An older relay refuses a leave of a canvas still joining, then welcomes it: the leave goes again.
  const late = client.canvas("d");
  late.leave();
  const lateAgain = client.canvas("d");
  socket().push({ type: "error", canvas: "d", code: "invalid_frame", message: "canvas d is not joined" });
  assert.equal(socket().sentOf("leave").filter((frame) => frame.canvas === "d").length, 1);
  socket().push(welcome("d", 7));
  assert.equal(socket().sentOf("leave").filter((frame) => frame.canvas === "d").length, 2, "sent again once joined");
  assert.equal(lateAgain.status, "joining", "that welcome was the left board's");
  socket().push({ type: "left", canvas: "d" });
  socket().push(welcome("d", 8));
  await lateAgain.ready;
  assert.equal(lateAgain.seq, 8);
  assert.equal(FakeSocket.made.length, 1, "no reconnect");
  client.close();
});

test("a board left before its join went out tells the relay nothing", async () => {
  const { client, socket } = setup({ rateLimit: { rate: 1, burst: 1 } });
  const first = client.canvas("a");
  const queued = client.canvas("b"); // waits for a token
  socket().open();
  assert.deepEqual(socket().sentOf("join"), [{ type: "join", canvas: "a" }]);
  queued.leave();
  assert.equal(socket().sentOf("leave").length, 0, "its join never went out: no leave");
  const marker = client.canvas("m"); // queued behind where b's join was
  socket().push(welcome("a", 0));
  await first.ready;
  await waitFor("the next join in the queue", () => socket().sentOf("join").length === 2);
  assert.deepEqual(socket().sentOf("join").map((frame) => frame.canvas), ["a", "m"], "nor b's join later");
  assert.equal(marker.status, "joining");
  client.close();
});

test("every frame over maxFrameSize is refused before it is sent; a 1009 blames no op", async () => {
  const { client, socket } = setup({ maxFrameSize: 2048 });
  const board = client.canvas("c");
  socket().open();
  socket().push(welcome("c", 1));
  await board.ready;
  const sentBefore = socket().sent.length;
  const wide = "€".repeat(700); // 700 characters, 2,100 bytes: over the limit in bytes, not in characters
  const tooLarge = (error) => error instanceof RelayError && error.code === "too_large" && /maxFrameSize/.test(error.message);
  assert.throws(() => board.emit("reaction", { text: wide }), tooLarge);
  assert.throws(() => board.moveCursor({ x: 1, y: 2, label: wide }), tooLarge);
  board.setPresence({ color: "red" });
  assert.throws(() => board.setPresence({ color: "blue", note: wide }), tooLarge);
  await assert.rejects(board.create({ id: "big", text: wide }), tooLarge);
  assert.equal(board.objects.has("big"), false, "a refused op is never shown");
  assert.deepEqual(socket().sent.slice(sentBefore), [{ type: "presence", canvas: "c", data: { color: "red" } }]);
  assert.equal(board.emit("reaction", { text: "€".repeat(100) }), true, "a frame within the limit goes");

  // A 1009 is a reconnect like any other: every unacked op stays pending and goes again with its key.
  const pending = [board.create({ id: "a", text: "€".repeat(600) }), board.create({ id: "b" })];
  const keys = socket().sentOf("object-create").map((frame) => frame.idempotency_key);
  socket().drop(1009, "frame too large");
  assert.equal(client.status, "reconnecting");
  assert.equal(board.pendingCount, 2, "no op blamed");
  await waitFor("a new socket", () => FakeSocket.made.length === 2);
  socket().open();
  socket().push(welcome("c", 1, { resumed: true, objects: undefined }));
  assert.deepEqual(socket().sentOf("object-create").map((frame) => frame.idempotency_key), keys);
  await waitFor("the presence state again", () => socket().sentOf("presence").length > 0);
  assert.deepEqual(socket().sentOf("presence"), [{ type: "presence", canvas: "c", data: { color: "red" } }],
    "the state as it was before the refused one");
  socket().push({ type: "ack", canvas: "c", seq: 2, ref: socket().sentOf("object-create")[0].ref });
  socket().push({ type: "ack", canvas: "c", seq: 3, ref: socket().sentOf("object-create")[1].ref });
  assert.deepEqual(await Promise.all(pending), [2, 3]);
  client.close();
});

test("a board removed through the API while joining leaves no wait behind", async () => {
  const { client, socket } = setup({ answerTimeout: 50, heartbeatInterval: 120 });
  const board = client.canvas("r");
  socket().open();
  socket().push({ type: "left", canvas: "r", code: 4003, reason: "removed from the canvas" });
  assert.equal(board.closedBy?.code, "removed");
  // Past answerTimeout (the first heartbeat comes later still), the socket is still the first one.
  await waitFor("a heartbeat", () => socket().sentOf("ping").length === 1);
  socket().push({ type: "pong" });
  assert.equal(FakeSocket.made.length, 1, "no reconnect for the join the removal answered");
  client.close();
});
