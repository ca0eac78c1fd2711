// Scenario 3: two canvases over one socket. Both boards get ready on the client's single WebSocket (counted
// with a wrapper class), each board gets its own canvas's edits only, each is its own connection in presence,
// and leaving one leaves the other untouched (and the canvas can be joined again).

import assert from "node:assert/strict";
import test from "node:test";
import { BUSES, WebSocket, canonical, waitFor, withCluster } from "./harness.js";

for (const bus of BUSES) {
  test(`two canvases on one socket (${bus})`, { timeout: 30000 }, async () => {
    await withCluster({ bus, instances: 2 }, async (cluster) => {
      let sockets = 0;
      class CountingWebSocket extends WebSocket {
        constructor(...args) {
          super(...args);
          sockets += 1;
        }
      }
      const client = cluster.client(0, { user: "multi", WebSocket: CountingWebSocket });
      const [a, b] = [client.canvas("canvas-a"), client.canvas("canvas-b")];
      assert.equal(client.canvas("canvas-a"), a, "the same board on a second call");
      await Promise.all([a.ready, b.ready]);
      assert.equal(sockets, 1, "one WebSocket for both canvases");
      assert.equal(client.status, "connected");
      assert.notEqual(a.connection, b.connection, "each canvas is its own connection");

      const peer = cluster.client(1, { user: "peer" });
      const [pa, pb] = [peer.canvas("canvas-a"), peer.canvas("canvas-b")];
      await Promise.all([pa.ready, pb.ready]);

      await pa.create({ id: "only-a", kind: "rect" });
      await pb.create({ id: "only-b", kind: "ellipse" });
      await a.create({ id: "mine-a" });
      await b.create({ id: "mine-b" });
      await waitFor("each board to have its own canvas's objects", () =>
        a.objects.has("only-a") && b.objects.has("only-b") && pa.objects.has("mine-a") && pb.objects.has("mine-b"));
      assert.deepEqual([...a.objects.keys()].sort(), ["mine-a", "only-a"]);
      assert.deepEqual([...b.objects.keys()].sort(), ["mine-b", "only-b"]);
      assert.deepEqual([...pa.objects.keys()].sort(), ["mine-a", "only-a"]);
      assert.deepEqual([...pb.objects.keys()].sort(), ["mine-b", "only-b"]);

      // Leaving b: its pending op rejects with "left", the peer sees the user go from b only, a carries on.
      const cut = b.create({ id: "never" });
      b.leave();
      await assert.rejects(cut, (error) => error.code === "left");
      assert.equal(b.status, "closed");
      assert.equal(client.boards.has("canvas-b"), false);
      await waitFor("the peer to see multi leave canvas-b", () => !pb.users.has("multi"));
      assert.ok(pa.users.has("multi"));
      await a.update({ id: "mine-a", x: 5 });
      await waitFor("the update on a", () => pa.objects.get("mine-a")?.x === 5);

      // Joined again: a new board, on the same socket, with the state.
      const again = client.canvas("canvas-b");
      assert.notEqual(again, b);
      await again.ready;
      // ("never" went out before the leave, so the server may have logged it: "left" says only that this
      // board will not know.)
      await waitFor("the server's state", async () => canonical(again.objects) === canonical((await cluster.state("canvas-b")).objects));
      assert.ok(again.objects.has("mine-b") && again.objects.has("only-b"));
      assert.equal(sockets, 1);
    });
  });
}
