// Scenario 7: a listener that throws breaks nothing: the other listeners still get every event, later events
// still come, promises still resolve; the exception goes to the "error" listeners (code "listener"), or to
// console.error when there are none.

import assert from "node:assert/strict";
import test from "node:test";
import { BUSES, waitFor, withCluster } from "./harness.js";

for (const bus of BUSES) {
  test(`a throwing listener does not break the client (${bus})`, { timeout: 30000 }, async (t) => {
    await withCluster({ bus }, async (cluster) => {
      const logged = [];
      t.mock.method(console, "error", (...args) => logged.push(args.map(String).join(" ")));

      const client = cluster.client(0, { user: "thrower" });
      client.on("status", () => {
        throw new Error("status listener boom");
      });
      const board = client.canvas("throwing");
      board.on("change", () => {
        throw new Error("change listener boom");
      });
      const changes = [];
      board.on("change", (change) => changes.push(change.reason));
      await board.ready;
      assert.ok(logged.some((line) => line.includes("status listener boom")), "reported on console.error");
      assert.ok(logged.some((line) => line.includes("change listener boom")));

      const reports = [];
      board.on("error", (error) => reports.push(error));
      assert.equal(typeof (await board.create({ id: "a", x: 1 })), "number");
      assert.ok(reports.some((error) => error.code === "listener" && error.cause.message === "change listener boom"));

      // Another client's ops still arrive, after many throws.
      const other = cluster.client(0, { user: "other" }).canvas("throwing");
      await other.ready;
      for (let i = 0; i < 20; i++) other.create({ id: `o${i}` });
      await other.update({ id: "a", x: 2 });
      await waitFor("every op from the other client", () => board.objects.get("a")?.x === 2 && board.objects.size === 21);
      assert.ok(changes.filter((reason) => reason === "remote").length >= 21);

      // An "error" listener that throws too is reported on console.error, without recursion.
      board.on("error", () => {
        throw new Error("error listener boom");
      });
      await board.update({ id: "a", x: 3 });
      assert.ok(logged.some((line) => line.includes("error listener boom")));
      assert.equal(await board.delete("a"), board.seq);
    });
  });
}
