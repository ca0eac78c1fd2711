// Scenario 9: the client and the relay agree on what is too large. With `--max-frame-size 2048` on the relay and
// `maxFrameSize: 2048` on the client, a cursor, a presence state, an ephemeral event and an op whose frame is
// exactly 2,048 bytes (UTF-8) all reach the other board; one byte more and each is refused locally with
// "too_large" (a throw, or a rejected promise). The socket is never closed with 1009: no reconnect.

import assert from "node:assert/strict";
import test from "node:test";
import { BUSES, WebSocket, waitFor, withCluster } from "./harness.js";

const LIMIT = 2048;

/** `build(pad)` with `pad` a string of "é" (2 bytes each) and "a" that makes `frame(built)` exactly `bytes` long. */
function sized(bytes, build, frame) {
  const base = Buffer.byteLength(JSON.stringify(frame(build(""))));
  const missing = bytes - base;
  return build("é".repeat(Math.floor(missing / 2)) + "a".repeat(missing % 2));
}

for (const bus of BUSES) {
  test(`frames at the relay's size limit, and one byte over (${bus})`, { timeout: 30000 }, async () => {
    await withCluster({ bus, flags: ["--max-frame-size", String(LIMIT)] }, async (cluster) => {
      let sockets = 0;
      class CountingWebSocket extends WebSocket {
        constructor(...args) {
          super(...args);
          sockets += 1;
        }
      }
      const sender = cluster.client(0, { user: "ann", maxFrameSize: LIMIT, WebSocket: CountingWebSocket });
      const ann = sender.canvas("sizes");
      const bob = cluster.client(0, { user: "bob" }).canvas("sizes");
      await Promise.all([ann.ready, bob.ready]);
      const seen = { cursor: [], presence: [], event: [] };
      bob.on("cursor", (frame) => seen.cursor.push(frame.data));
      bob.on("presence", (peer) => seen.presence.push(peer.data));
      bob.on("event", (frame) => seen.event.push(frame.data));
      const tooLarge = (error) => error.code === "too_large";

      for (const bytes of [LIMIT, LIMIT + 1]) {
        const fits = bytes <= LIMIT;
        const cursor = sized(bytes, (pad) => ({ x: 1, y: 2, pad }), (data) => ({ type: "cursor", canvas: "sizes", data }));
        const state = sized(bytes, (pad) => ({ pad }), (data) => ({ type: "presence", canvas: "sizes", data }));
        const event = sized(bytes, (pad) => ({ pad }), (data) => ({ type: "reaction", canvas: "sizes", data, ephemeral: true }));
        if (fits) {
          ann.moveCursor(cursor);
          ann.setPresence(state);
          assert.equal(ann.emit("reaction", event), true);
        } else {
          assert.throws(() => ann.moveCursor(cursor), tooLarge);
          assert.throws(() => ann.setPresence(state), tooLarge);
          assert.throws(() => ann.emit("reaction", event), tooLarge);
        }
      }
      // An op's frame carries a ref and an idempotency key the client picks: sized by trying, a byte at a time
      // from a little under the limit, until the client refuses one; the ones before it were acked.
      const estimate = { type: "object-create", canvas: "sizes", data: { id: "op", pad: "" }, ref: "99.999", idempotency_key: "0123456789abcdef-999" };
      const start = LIMIT - Buffer.byteLength(JSON.stringify(estimate)) - 8;
      const outcomes = [];
      for (let pad = start; outcomes.at(-1) !== "too_large"; pad++) {
        outcomes.push(await ann.create({ id: "op", pad: "a".repeat(pad) }).then(() => "acked", (error) => error.code));
      }
      assert.ok(outcomes.length > 1 && outcomes.slice(0, -1).every((outcome) => outcome === "acked"), `${outcomes}`);
      await waitFor("the frames at the limit on bob's board", () =>
        seen.cursor.length === 1 && seen.presence.length === 1 && seen.event.length === 1);
      assert.equal(seen.cursor[0].pad.length > 0 && seen.event[0].pad.length > 0, true);
      assert.equal(sender.status, "connected");
      assert.equal(sockets, 1, "never closed with 1009: no reconnect");
    });
  });
}
