// The history calls' HTTP side against a scripted fetch (no relay): where each request goes (the API's base from
// the socket's address, or `httpUrl`), which credential it carries (the API key, else the token, else none), what
// it sends, what the board makes of the answers, and how the contract's JSON errors, bodies without a code,
// answers that are not JSON and a network that never answers become RelayErrors with `.code` and `.httpStatus`.

import assert from "node:assert/strict";
import test from "node:test";
import { RelayClient, RelayError } from "../src/index.js";

/** A WebSocket that never opens: these calls do not need the socket. */
class IdleSocket {
  constructor() {
    this.readyState = 0;
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
  }
  send() {}
  close() {}
}

/** A fetch that records each request and answers with the next scripted `[status, body]` (a body that is not a
 *  string is sent as JSON; a function is called instead, e.g. to throw). */
function scriptedFetch(...answers) {
  const calls = [];
  const fetch = async (url, init) => {
    calls.push({ url, method: init.method, headers: init.headers, body: init.body === undefined ? undefined : JSON.parse(init.body) });
    const next = answers.shift();
    if (typeof next === "function") return next();
    const [status, body] = next;
    return new Response(typeof body === "string" ? body : JSON.stringify(body), { status });
  };
  return { fetch, calls };
}

function boardWith(options, ...answers) {
  const { fetch, calls } = scriptedFetch(...answers);
  const client = new RelayClient({ url: "ws://relay.test:8080/", user: "u", WebSocket: IdleSocket, fetch, ...options });
  return { board: client.canvas("team:1"), calls, client };
}

test("each call's method, URL, credential and body, and what the board makes of the answer", async () => {
  const { board, calls, client } = boardWith(
    { token: "jwt-1" },
    [200, { seq: 7, epoch: "e1", objects: { a: { id: "a", x: 1 }, b: { id: "b" } } }],
    [200, { versions: [{ seq: 9, ts: 1700000000000, name: "before-review", bytes: 120 }], next: 4 }],
    [200, { versions: [], next: null }],
    [201, { seq: 12, name: "after" }],
    [200, { seq: 15, ops: 3 }],
    [200, { seq: 0, epoch: "e1", objects: {} }],
  );
  const past = await board.history({ at: 7 });
  assert.deepEqual(past, { seq: 7, epoch: "e1", objects: new Map([["a", { id: "a", x: 1 }], ["b", { id: "b" }]]) });
  assert.deepEqual(await board.versions({ limit: 5, before: 40 }), {
    versions: [{ seq: 9, ts: 1700000000000, name: "before-review", bytes: 120 }], next: 4,
  });
  assert.deepEqual(await board.versions(), { versions: [], next: null });
  assert.deepEqual(await board.nameVersion("after"), { seq: 12, name: "after" });
  assert.deepEqual(await board.restore(9), { seq: 15, ops: 3 });

  const base = "http://relay.test:8080/api/v1/canvases/team:1";
  assert.deepEqual(calls.map(({ method, url, body }) => [method, url, body]), [
    ["GET", `${base}?at=7`, undefined],
    ["GET", `${base}/versions?limit=5&before=40`, undefined],
    ["GET", `${base}/versions`, undefined],
    ["POST", `${base}/versions`, { name: "after" }],
    ["POST", `${base}/restore`, { seq: 9 }],
  ]);
  for (const { headers, body } of calls) {
    assert.equal(headers.authorization, "Bearer jwt-1");
    assert.equal(headers["content-type"], body === undefined ? undefined : "application/json");
  }
  // The socket never opened, and has closed: history does not need it.
  client.close();
  assert.equal((await board.history({ at: 0 })).objects.size, 0);
  assert.equal(calls.length, 6);
});

test("the API's base and credential: wss -> https, httpUrl, the API key before the token, none without either", async () => {
  const answer = () => [200, { seq: 0, epoch: "e", objects: {} }];
  const secure = boardWith({ url: "wss://relay.example/canvas-relay", apiKey: "key-1", token: "jwt-1" }, answer());
  await secure.board.history({ at: 0 });
  assert.equal(secure.calls[0].url, "https://relay.example/canvas-relay/api/v1/canvases/team:1?at=0");
  assert.equal(secure.calls[0].headers.authorization, "Bearer key-1");

  const elsewhere = boardWith({ httpUrl: "https://api.example/relay/" }, answer());
  await elsewhere.board.history({ at: 0 });
  assert.equal(elsewhere.calls[0].url, "https://api.example/relay/api/v1/canvases/team:1?at=0");
  assert.equal("authorization" in elsewhere.calls[0].headers, false, "no credential, no header");

  // Anything but the id's own characters is escaped, so that it cannot name another route.
  const { fetch, calls } = scriptedFetch(answer());
  const odd = new RelayClient({ url: "ws://relay.test", WebSocket: IdleSocket, fetch }).canvas("a/restore?x");
  await odd.history({ at: 1 });
  assert.equal(calls[0].url, "http://relay.test/api/v1/canvases/a%2Frestore%3Fx?at=1");
});

test("HTTP errors become RelayErrors with the contract's code and the status", async () => {
  const { board } = boardWith(
    {},
    [400, { error: "seq 90 is past the head 12", code: "seq_ahead" }],
    [410, { error: "seq 3 is older than the history kept", code: "history_expired" }],
    [409, { error: "canvas b has seqs", code: "canvas_exists" }],
    [401, { error: "missing or wrong API key: send Authorization: Bearer KEY" }],
    [403, { error: "the token does not grant editor on team:1" }],
    [404, { error: "no such route" }],
    [502, "<html>Bad Gateway</html>"],
    () => Promise.reject(new TypeError("fetch failed")),
    [201, "created"],
  );
  const refusal = async (call) => {
    const error = await call().then(() => assert.fail("resolved"), (e) => e);
    assert.ok(error instanceof RelayError, `a RelayError, not ${error}`);
    return error;
  };
  const ahead = await refusal(() => board.history({ at: 90 }));
  assert.deepEqual([ahead.code, ahead.httpStatus, ahead.message], ["seq_ahead", 400, "seq 90 is past the head 12"]);
  assert.deepEqual(ahead.frame, { error: "seq 90 is past the head 12", code: "seq_ahead" });
  const expired = await refusal(() => board.history({ at: 3 }));
  assert.deepEqual([expired.code, expired.httpStatus], ["history_expired", 410]);
  const exists = await refusal(() => board.restore(1));
  assert.deepEqual([exists.code, exists.httpStatus], ["canvas_exists", 409]);
  // Bodies without a code: one for the status.
  const unauthorized = await refusal(() => board.versions());
  assert.deepEqual([unauthorized.code, unauthorized.httpStatus], ["unauthorized", 401]);
  assert.match(unauthorized.message, /API key/);
  const forbidden = await refusal(() => board.nameVersion("x"));
  assert.deepEqual([forbidden.code, forbidden.httpStatus], ["forbidden", 403]);
  const missing = await refusal(() => board.versions());
  assert.deepEqual([missing.code, missing.httpStatus], ["not_found", 404]);
  const proxy = await refusal(() => board.restore(2));
  assert.deepEqual([proxy.code, proxy.httpStatus, proxy.frame], ["unavailable", 502, undefined]);
  assert.match(proxy.message, /HTTP 502/);
  const network = await refusal(() => board.history({ at: 1 }));
  assert.equal(network.code, "network");
  assert.equal(network.httpStatus, undefined);
  assert.ok(network.cause instanceof TypeError);
  const notJson = await refusal(() => board.nameVersion("y"));
  assert.deepEqual([notJson.code, notJson.httpStatus], ["bad_response", 201]);
});

test("a seq or count that is not a whole number is refused before any request", async () => {
  const { board, calls } = boardWith({});
  for (const call of [
    () => board.history({ at: -1 }),
    () => board.history({ at: "3" }),
    () => board.history(/** @type {any} */ ({})),
    () => board.restore(1.5),
    () => board.versions({ limit: 0.5 }),
    () => board.versions({ before: Number.NaN }),
    () => board.nameVersion(/** @type {any} */ (42)),
  ]) {
    await assert.rejects(call, TypeError);
  }
  assert.equal(calls.length, 0);
});
