// Scenario 5: a board whose history is gone. (a) The canvas is deleted through the API while clients are on
// it: each board emits "reset", is empty at the new epoch, and later ops work. (b) A client is away longer
// than the message TTL (its instance killed) while another writes: on its return the server cannot resume
// it (resumed:false), so it reloads, emits "reset", ends equal to the server's state, and the op it made
// while away is applied exactly once.

import assert from "node:assert/strict";
import test from "node:test";
import { BUSES, canonical, sleep, waitFor, withCluster } from "./harness.js";

for (const bus of BUSES) {
  test(`a canvas deleted through the API resets every board (${bus})`, { timeout: 30000 }, async () => {
    await withCluster({ bus, instances: 2 }, async (cluster) => {
      const ann = cluster.client(0, { user: "ann" }).canvas("doomed");
      const bob = cluster.client(1, { user: "bob" }).canvas("doomed");
      await Promise.all([ann.ready, bob.ready]);
      await ann.create({ id: "a1" });
      await bob.create({ id: "b1" });
      await waitFor("both objects on both boards", () => ann.objects.size === 2 && bob.objects.size === 2);
      const oldEpoch = ann.epoch;
      const resets = [];
      ann.on("reset", (reset) => resets.push(["ann", reset]));
      bob.on("reset", (reset) => resets.push(["bob", reset]));

      await cluster.api("DELETE", "/api/v1/canvases/doomed");
      await waitFor("both boards reset", () => resets.length === 2);
      for (const [, reset] of resets) assert.equal(reset.reason, "reset");
      for (const board of [ann, bob]) {
        assert.equal(board.objects.size, 0);
        assert.notEqual(board.epoch, oldEpoch);
        assert.equal(board.seq, 0);
      }
      const { epoch } = await cluster.state("doomed");
      assert.equal(ann.epoch, epoch);

      assert.equal(await ann.create({ id: "after" }), 1, "the new epoch starts at seq 1");
      await waitFor("bob to see it", () => bob.objects.has("after") && bob.seq === 1);
      await bob.update({ id: "after", x: 1 });
      await waitFor("ann to see the update", () => ann.objects.get("after")?.x === 1);
    });
  });

  test(`back after the message TTL: reload, reset event, pending op once (${bus})`, { timeout: 40000 }, async () => {
    const flags = ["--message-ttl", "1s", "--cleanup-interval", "200ms"];
    await withCluster({ bus, instances: 2, flags }, async (cluster) => {
      const away = cluster.client(0, { user: "away" }).canvas("long-gone");
      const stay = cluster.client(1, { user: "stay" }).canvas("long-gone");
      await Promise.all([away.ready, stay.ready]);
      await away.create({ id: "before", x: 0 });
      await waitFor("stay to see it", () => stay.objects.has("before"));
      const resets = [];
      away.on("reset", (reset) => resets.push(reset));
      // Stay sees every seq exactly once: its count of "offline" creates is the log's.
      let offlineCreates = 0;
      stay.on("change", ({ frame }) => {
        if (frame?.type === "object-create" && frame.data.id === "offline") offlineCreates += 1;
      });

      await cluster.kill(0);
      await waitFor("the away client to notice", () => away.status === "joining");
      const offline = away.create({ id: "offline", by: "away" }); // pending while disconnected
      const offlineUpdate = away.update({ id: "before", x: 1 });
      assert.ok(away.objects.has("offline") && away.objects.get("before")?.x === 1, "shown at once");
      for (let i = 0; i < 10; i++) await stay.create({ id: `meanwhile-${i}` });
      await sleep(2500); // past the TTL and a few cleanups: what it missed is gone from the log

      await cluster.start(0);
      const [seq, updateSeq] = await Promise.all([offline, offlineUpdate]);
      assert.ok(seq > 0 && updateSeq > seq);
      await waitFor("a reload", () => resets.length > 0);
      assert.equal(resets[0].reason, "reload");
      await waitFor("the away board at the server's state", async () => {
        const server = await cluster.state("long-gone", 1);
        return away.pendingCount === 0 && away.seq === server.seq && canonical(away.objects) === canonical(server.objects);
      });
      assert.equal(away.objects.get("offline")?.by, "away");
      assert.equal(away.objects.get("before")?.x, 1);
      assert.ok(away.objects.has("meanwhile-9"));

      // Exactly once: the one create, which stay saw; later ops of both sides still flow.
      await stay.update({ id: "offline", seen: true });
      await waitFor("away still follows", () => away.objects.get("offline")?.seen === true);
      await away.create({ id: "later" });
      await waitFor("stay to see it", () => stay.objects.has("later"));
      assert.equal(offlineCreates, 1, "the op made while away was logged once");
    });
  });
}
