// Scenario 1: three clients on two instances edit one canvas at once (creates, updates, deletes; some promises
// awaited, most not) while one instance is SIGKILLed and restarted on the same port. In the end every promise
// has resolved, every client's objects equal the server's state, and the log holds each create exactly once
// (the ops re-sent after the crash carried their idempotency keys). Then a graceful restart (SIGTERM: close
// 1001): the client reconnects and resumes (no reload), and the op made meanwhile goes through.

import assert from "node:assert/strict";
import test from "node:test";
import { BUSES, WebSocket, canonical, sleep, waitFor, withCluster } from "./harness.js";

const CANVAS = "crash-edits";
const OPS_PER_CLIENT = 90;

/** One client's edits: creates; updates of anyone's "keep-" objects (nobody deletes those: the server refuses
 *  an op on a missing object, rightly); updates and deletes of its own "tmp-" objects. */
async function edit(board, name, promises, created) {
  const mine = [];
  for (let i = 0; i < OPS_PER_CLIENT; i++) {
    let op;
    const keep = [...board.objects.keys()].filter((id) => id.startsWith("keep-"));
    if (i % 6 === 2 && keep.length > 0) op = board.update({ id: keep[(i * 7) % keep.length], x: i, by: name });
    else if (i % 6 === 4 && mine.length > 0) op = board.update({ id: mine[mine.length - 1], w: i });
    else if (i % 6 === 5 && mine.length > 0) op = board.delete(/** @type {string} */ (mine.shift()));
    else {
      const id = `${i % 2 === 0 ? "keep" : "tmp"}-${name}-${i}`;
      op = board.create({ id, kind: "rect", x: i, y: 0, by: name });
      if (id.startsWith("tmp-")) mine.push(id);
      created.push(id);
    }
    promises.push(op);
    if (i % 4 === 0) await op; // some awaited, the rest in flight together
    if (i % 10 === 0) await sleep(15);
  }
}

for (const bus of BUSES) {
  test(`three clients on two instances, one instance SIGKILLed mid-way (${bus})`, { timeout: 90000 }, async () => {
    await withCluster({ bus, instances: 2 }, async (cluster) => {
      const clients = [cluster.client(0, { user: "ann" }), cluster.client(0, { user: "bob" }), cluster.client(1, { user: "cy" })];
      const boards = clients.map((client) => client.canvas(CANVAS));
      await Promise.all(boards.map((board) => board.ready));

      const promises = [];
      let acked = 0;
      const counted = (list) => ({ push: (p) => (list.push(p), p.then(() => acked++, () => {})) });
      const created = [];
      const work = boards.map((board, i) => edit(board, clients[i].options.user, counted(promises), created));

      // Mid-way, instance 0 (ann's and bob's) dies without a goodbye, and comes back on the same port.
      await waitFor("a third of the ops acked", () => acked >= OPS_PER_CLIENT);
      await cluster.kill(0);
      const ackedBeforeCrash = acked;
      await waitFor("ann and bob to notice", () => clients[0].status === "reconnecting" && clients[1].status === "reconnecting");
      await sleep(300);
      await cluster.start(0);

      await Promise.all(work);
      assert.ok(ackedBeforeCrash < boards.length * OPS_PER_CLIENT, "the crash came mid-way");
      console.log(`acked before the crash ${ackedBeforeCrash} of ${boards.length * OPS_PER_CLIENT}`);
      const results = await Promise.allSettled(promises);
      const failed = results.filter((r) => r.status === "rejected");
      assert.deepEqual(failed, [], "every op resolves");
      const seqs = results.map((r) => /** @type {PromiseFulfilledResult<number>} */ (r).value);
      assert.ok(seqs.every((seq) => Number.isInteger(seq) && seq > 0), "each resolves with its seq");

      const server = await cluster.state(CANVAS, 1);
      await waitFor("every client at the server's seq with nothing pending", async () => {
        const now = await cluster.state(CANVAS, 1);
        return boards.every((board) => board.pendingCount === 0 && board.seq === now.seq) && now;
      });
      const final = await cluster.state(CANVAS, 1);
      assert.ok(final.seq >= server.seq);
      for (const [i, board] of boards.entries()) {
        assert.equal(board.epoch, final.epoch, `client ${i}'s epoch`);
        assert.equal(canonical(board.objects), canonical(final.objects), `client ${i}'s objects equal the server's`);
      }
      assert.ok(Object.keys(final.objects).length > 0);

      // Exactly once: every id this test created is in exactly one object-create of the log, and no other is.
      const log = await cluster.log(CANVAS, 1);
      assert.equal(log[0]?.seq, 1, "the whole log is retained");
      const creates = new Map();
      for (const message of log) {
        if (message.type === "object-create") creates.set(message.data.id, (creates.get(message.data.id) ?? 0) + 1);
      }
      assert.deepEqual([...creates.keys()].sort(), [...created].sort(), "the log's creates are the ones sent");
      assert.deepEqual([...creates].filter(([, n]) => n !== 1), [], "no create logged twice");
    });
  });
}

for (const bus of BUSES) {
  test(`a graceful restart (close 1001): the board resumes, nothing reloads (${bus})`, { timeout: 30000 }, async () => {
    await withCluster({ bus, instances: 2 }, async (cluster) => {
      const codes = [];
      class Recording extends WebSocket {
        constructor(...args) {
          super(...args);
          this.addEventListener("close", (event) => codes.push(event.code));
        }
      }
      const client = cluster.client(0, { user: "ann", WebSocket: Recording });
      const board = client.canvas("restarted");
      const other = cluster.client(1, { user: "bob" }).canvas("restarted");
      await Promise.all([board.ready, other.ready]);
      await board.create({ id: "a" });
      const closes = [];
      client.on("status", (status) => closes.push(status));
      const changes = [];
      board.on("change", (change) => changes.push(change.reason));

      await cluster.kill(0, "SIGTERM");
      await waitFor("the client to reconnect", () => closes.includes("reconnecting"));
      assert.equal(codes[0], 1001, "the server said it was shutting down");
      const pending = board.update({ id: "a", x: 1 });
      await other.create({ id: "b" }); // while ann is away
      await cluster.start(0);
      assert.ok((await pending) > 0);
      await waitFor("ann to have bob's create", () => board.objects.has("b") && board.pendingCount === 0);
      assert.ok(changes.includes("resume") && !changes.includes("reload"), `resumed, not reloaded: ${changes}`);
      assert.equal(canonical(board.objects), canonical((await cluster.state("restarted", 1)).objects));
    });
  });
}
