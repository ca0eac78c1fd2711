// Scenario: history through the SDK (PROTOCOL.md v1.2 "History"), on two instances of each bus. Boards on both
// instances edit; one names a version, which both list; `history({at})` answers, on either instance and for
// every seq from the named one to the head, exactly the state the log folds to at that seq; a restore from one
// instance brings both boards (and both instances' state) back to the named version, by ops logged as user
// `server`, and a second restore of the same seq logs nothing. Past the head is `seq_ahead` (400); a seq the
// relay no longer keeps (--history-retention 0) is `history_expired` (410). With --jwt-secret, the client's own
// token is what authorizes it: editor may, viewer is forbidden (403), no token is unauthorized (401).

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import test from "node:test";
import { applyOp } from "../src/index.js";
import { BUSES, canonical, waitFor, withCluster } from "./harness.js";

const SECRET = "sdk-history-secret";

/** An HS256 JWT. */
function token(claims) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const body = `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}`;
  return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
}

/** The state the retained log folds to after each seq: `states[s]`, canonical JSON. */
function foldedStates(log) {
  const objects = new Map();
  const states = [canonical(objects)];
  for (const message of log) {
    applyOp(objects, message.type, message.data);
    states[message.seq] = canonical(objects);
  }
  return states;
}

/** The RelayError `promise` rejects with. */
const refusal = (promise) => promise.then(() => assert.fail("it resolved"), (error) => error);

/** Both boards at the server's head, with nothing pending, showing the same objects. */
async function converged(cluster, canvas, boards) {
  return waitFor("both boards at the head", async () => {
    const server = await cluster.state(canvas, 1);
    return boards.every((b) => b.pendingCount === 0 && b.seq === server.seq && canonical(b.objects) === canonical(server.objects)) && server;
  });
}

for (const bus of BUSES) {
  test(`name, list, read the past and restore across two instances (${bus})`, { timeout: 60000 }, async () => {
    await withCluster({ bus, instances: 2 }, async (cluster) => {
      const ann = cluster.client(0, { user: "ann" }).canvas("hist");
      const bob = cluster.client(1, { user: "bob" }).canvas("hist");
      await Promise.all([ann.ready, bob.ready]);
      await ann.create({ id: "a1", kind: "rect", x: 1 });
      await ann.create({ id: "a2", kind: "rect", x: 2 });
      await bob.update({ id: "a1", x: 10, color: "#0af" });
      const atVersion = await converged(cluster, "hist", [ann, bob]);

      const named = await ann.nameVersion("before-review");
      assert.deepEqual(named, { seq: atVersion.seq, name: "before-review" });
      await bob.create({ id: "b1", kind: "rect", x: 3 });
      await bob.delete("a2");
      await ann.update({ id: "a1", x: 99 });
      const head = await converged(cluster, "hist", [ann, bob]);
      assert.notEqual(canonical(head.objects), canonical(atVersion.objects));

      // Listed on both instances, newest first, with its name.
      for (const board of [ann, bob]) {
        const { versions, next } = await board.versions();
        const version = versions.find((v) => v.seq === named.seq);
        assert.equal(version?.name, "before-review", JSON.stringify(versions));
        assert.ok(Number.isInteger(version.ts) && version.ts > Date.now() - 120000, `ts ${version.ts}`);
        assert.ok(Number.isInteger(version.bytes) && version.bytes > 0);
        assert.deepEqual(versions.map((v) => v.seq), versions.map((v) => v.seq).sort((a, b) => b - a));
        assert.ok(next === null || next < versions.at(-1).seq);
      }

      // The exact state at every seq from the version to the head, on either instance.
      const states = foldedStates(await cluster.log("hist"));
      assert.equal(states[named.seq], canonical(atVersion.objects), "the log folds to the named state");
      for (let seq = named.seq; seq <= head.seq; seq++) {
        const past = await (seq % 2 ? ann : bob).history({ at: seq });
        assert.equal(past.seq, seq);
        assert.equal(past.epoch, ann.epoch);
        assert.ok(past.objects instanceof Map);
        assert.equal(canonical(past.objects), states[seq], `the state at ${seq}`);
      }

      const ahead = await refusal(ann.history({ at: head.seq + 5 }));
      assert.deepEqual([ahead.code, ahead.httpStatus], ["seq_ahead", 400]);

      // Restore from B's instance: both boards converge on the named state through the ops it logs.
      const restored = await bob.restore(named.seq);
      assert.ok(restored.ops > 0 && restored.seq === head.seq + restored.ops, JSON.stringify(restored));
      const after = await converged(cluster, "hist", [ann, bob]);
      assert.equal(after.seq, restored.seq);
      assert.equal(canonical(ann.objects), canonical(atVersion.objects));
      assert.equal(canonical((await cluster.state("hist", 0)).objects), canonical(atVersion.objects));
      const logged = (await cluster.log("hist")).filter((m) => m.seq > head.seq);
      assert.equal(logged.length, restored.ops);
      for (const message of logged) {
        assert.equal(message.from, "server");
        assert.ok(["object-create", "object-delete"].includes(message.type), message.type);
      }
      // Nothing differs now: nothing is logged.
      assert.deepEqual(await ann.restore(named.seq), { seq: restored.seq, ops: 0 });
      assert.equal(canonical((await ann.history({ at: restored.seq })).objects), canonical(atVersion.objects));
      await ann.create({ id: "after-restore" });
      await waitFor("B to see an op after the restore", () => bob.objects.has("after-restore"));
    });
  });

  test(`a seq no longer kept is history_expired (${bus})`, { timeout: 60000 }, async () => {
    const flags = ["--history-retention", "0", "--snapshot-every", "5", "--cleanup-interval", "200ms"];
    await withCluster({ bus, instances: 2, flags }, async (cluster) => {
      const board = cluster.client(0, { user: "ann" }).canvas("short");
      const other = cluster.client(1, { user: "bob" }).canvas("short");
      await Promise.all([board.ready, other.ready]);
      for (let i = 0; i < 40; i++) await board.create({ id: `o${i % 3}`, n: i });
      const expired = await waitFor("seq 1 to expire", async () => {
        const error = await other.history({ at: 1 }).then(() => null, (e) => e);
        return error?.code === "history_expired" && error;
      });
      assert.equal(expired.httpStatus, 410);
      assert.equal(expired.name, "RelayError");
      const head = await board.history({ at: board.seq });
      assert.equal(canonical(head.objects), canonical(board.objects), "the head is always kept");
    });
  });

  test(`with --jwt-secret the client's token decides (${bus})`, { timeout: 40000 }, async () => {
    await withCluster({ bus, flags: ["--jwt-secret", SECRET] }, async (cluster) => {
      const exp = Math.floor(Date.now() / 1000) + 600;
      const editor = cluster.client(0, { token: token({ sub: "ed", exp, canvases: ["team"] }) }).canvas("team");
      await editor.ready;
      await editor.create({ id: "x" });
      const named = await editor.nameVersion("v1");
      assert.equal(named.seq, editor.seq);
      assert.ok((await editor.versions({ limit: 10 })).versions.some((v) => v.name === "v1"));

      const viewerClient = cluster.client(0, { token: token({ sub: "vi", exp, canvases: { team: "viewer" } }) });
      const viewer = viewerClient.canvas("team");
      await viewer.ready;
      const forbidden = await refusal(viewer.restore(named.seq));
      assert.deepEqual([forbidden.code, forbidden.httpStatus], ["forbidden", 403]);

      // No credential at all: the relay refuses this client's socket too, and its board closes; history needs
      // no socket, so the relay's answer to the request is what shows.
      const anonymous = cluster.client(0, {}).canvas("team");
      const unauthorized = await refusal(anonymous.versions());
      assert.deepEqual([unauthorized.code, unauthorized.httpStatus], ["unauthorized", 401]);
    });
  });
}
