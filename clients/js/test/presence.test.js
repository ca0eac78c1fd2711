// Scenario 4: presence and ephemeral events across two instances. `users` shows another user join and leave;
// cursors and `emit` events reach a board on the other instance; presence state (setPresence) shows up in
// the other side's `peers` and "presence" events, in a late joiner's welcome.peers, and goes (data null)
// when that connection leaves.

import assert from "node:assert/strict";
import test from "node:test";
import { BUSES, waitFor, withCluster } from "./harness.js";

for (const bus of BUSES) {
  test(`users, cursors and ephemeral events across instances (${bus})`, { timeout: 30000 }, async () => {
    await withCluster({ bus, instances: 2 }, async (cluster) => {
      const ann = cluster.client(0, { user: "ann", name: "Ann" }).canvas("gathering");
      await ann.ready;
      const bob = cluster.client(1, { user: "bob", name: "Bob" }).canvas("gathering");
      await bob.ready;
      await waitFor("ann to see bob arrive", () => ann.users.get("bob")?.name === "Bob");
      assert.ok(bob.users.has("ann"), "bob's welcome lists ann");

      const events = [];
      ann.on("event", (frame) => events.push(frame));
      const cursors = [];
      ann.on("cursor", (frame) => cursors.push(frame));
      assert.equal(bob.emit("reaction", { emoji: "tada" }), true);
      for (let x = 0; x <= 50; x += 10) bob.moveCursor({ x, y: 1 });
      await waitFor("bob's reaction on ann's board", () => events.length === 1);
      assert.equal(events[0].type, "reaction");
      assert.deepEqual(events[0].data, { emoji: "tada" });
      assert.equal(events[0].from, "bob");
      assert.equal(events[0].ephemeral, true);
      // Throttled, but the latest always goes out.
      await waitFor("bob's last cursor", () => cursors.at(-1)?.data?.x === 50);
      assert.equal(cursors.at(-1).from, "bob");
      assert.ok(cursors.length <= 6);
      assert.equal(ann.seq, bob.seq, "nothing ephemeral took a seq");

      bob.leave();
      await waitFor("ann to see bob go", () => !ann.users.has("bob"));
    });
  });

  test(`presence state across instances: peers and presence events (${bus})`, { timeout: 30000 }, async () => {
    await withCluster({ bus, instances: 2 }, async (cluster) => {
      const ann = cluster.client(0, { user: "ann", name: "Ann" }).canvas("states");
      const bob = cluster.client(1, { user: "bob", name: "Bob" }).canvas("states");
      await Promise.all([ann.ready, bob.ready]);
      const seen = [];
      ann.on("presence", (peer) => seen.push(peer));
      bob.setPresence({ color: "#0af", selection: ["r1"] });
      await waitFor("bob's presence state on ann's board", () =>
        ann.peers.get(/** @type {string} */ (bob.connection))?.data?.color === "#0af", 10000);
      assert.deepEqual(seen.at(-1), { connection: bob.connection, user: "bob", name: "Bob", data: { color: "#0af", selection: ["r1"] } });

      // A late joiner gets it in its welcome.
      const cy = cluster.client(0, { user: "cy" }).canvas("states");
      await cy.ready;
      assert.deepEqual(cy.peers.get(/** @type {string} */ (bob.connection))?.data, { color: "#0af", selection: ["r1"] });
      assert.equal(cy.peers.get(/** @type {string} */ (ann.connection))?.data, null, "ann never set one");

      // Bob leaves: his connection's state goes, once.
      const bobConnection = bob.connection;
      bob.leave();
      await waitFor("ann to drop bob's peer", () => !ann.peers.has(/** @type {string} */ (bobConnection)));
      assert.equal(seen.at(-1).data, null);
      assert.equal(seen.filter((peer) => peer.connection === bobConnection && peer.data === null).length, 1);
    });
  });
}
