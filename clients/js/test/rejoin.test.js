// Scenario 8: a canvas opened, left before its welcome and opened again, as React StrictMode's mount, unmount,
// mount does, or a quick navigation: `client.canvas(id)`, `leave()` after 0, 1 and 5 ms, `client.canvas(id)`,
// on a canvas of 30,000 objects (its join takes a while). The second board becomes ready, on the same socket,
// with the server's state; the first one's `ready` rejects with "left"; the user is on the canvas once.

import assert from "node:assert/strict";
import test from "node:test";
import { BUSES, WebSocket, canonical, sleep, waitFor, withCluster } from "./harness.js";

const OBJECTS = 30000;

/** `promise`, or a failure saying what never settled (a board's `ready` used to stay pending forever). */
function settled(promise, what, timeout = 60000) {
  let timer;
  const expired = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} never settled`)), timeout);
  });
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}

for (const bus of BUSES) {
  test(`canvas, leave, canvas again before the welcome (${bus})`, { timeout: 240000 }, async () => {
    await withCluster({ bus, flags: ["--rate-limit", "0"] }, async (cluster) => {
      const seeder = cluster.client(0, { user: "seeder", rateLimit: false });
      const seed = seeder.canvas("big");
      await seed.ready;
      await Promise.all(Array.from({ length: OBJECTS }, (_, n) => seed.create({ id: `o${n}`, kind: "rect", n })));

      for (const delay of [0, 1, 5]) {
        // A new version of the state each time, so that no join finds it built already.
        await seed.update({ id: "o0", delay });
        let sockets = 0;
        class CountingWebSocket extends WebSocket {
          constructor(...args) {
            super(...args);
            sockets += 1;
          }
        }
        const user = `ui-${delay}`;
        const client = cluster.client(0, { user, WebSocket: CountingWebSocket });
        await client.canvas("small").ready; // the socket is open: the big canvas's join goes out at once

        const first = client.canvas("big");
        if (delay > 0) await sleep(delay);
        first.leave();
        const second = client.canvas("big");
        assert.notEqual(second, first);
        await assert.rejects(first.ready, (error) => error.code === "left");
        await settled(second.ready, `the second board's ready after ${delay} ms`);
        assert.equal(second.status, "joined", `after ${delay} ms`);
        const state = await cluster.state("big");
        assert.equal(second.objects.size, OBJECTS);
        assert.equal(canonical(second.objects), canonical(state.objects), `after ${delay} ms: the server's state`);
        assert.equal(sockets, 1, `after ${delay} ms: on the same socket, with no reconnect`);
        await waitFor(`${user} on the canvas once`, async () => {
          const presence = (await cluster.state("big")).presence;
          return presence.find((entry) => entry.user === user)?.connections === 1;
        });
        client.close();
      }
    });
  });
}
