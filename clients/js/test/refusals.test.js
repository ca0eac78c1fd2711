// What the server refuses, as the SDK reports it: a join outside the token's scope or past
// --max-canvases-per-connection rejects `ready` with the code; removal through the API closes that board
// only (code "removed", never rejoined, the socket's other boards carry on); a bad token (HTTP 401) and an
// expired one (close 1008) close the client (codes "unauthorized", "token_expired"; no reconnect).

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import test from "node:test";
import { BUSES, sleep, waitFor, withCluster } from "./harness.js";

const SECRET = "sdk-test-secret";

/** An HS256 JWT. */
function token(claims) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const body = `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}`;
  return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
}

for (const bus of BUSES) {
  test(`refused joins, removal by the API, an expired token (${bus})`, { timeout: 40000 }, async () => {
    const flags = ["--jwt-secret", SECRET, "--max-canvases-per-connection", "3"];
    await withCluster({ bus, flags }, async (cluster) => {
      const now = Math.floor(Date.now() / 1000);
      const client = cluster.client(0, { token: token({ sub: "scoped", exp: now + 600, canvases: ["mine", "also", "third", "fourth"] }) });
      const [mine, also] = [client.canvas("mine"), client.canvas("also")];
      await Promise.all([mine.ready, also.ready]);
      assert.equal(mine.user, "scoped");

      const outside = client.canvas("not-mine");
      await assert.rejects(outside.ready, (error) => error.code === "forbidden");
      assert.equal(outside.status, "closed");
      await client.canvas("third").ready;
      const fourth = client.canvas("fourth");
      await assert.rejects(fourth.ready, (error) => error.code === "too_many_canvases");
      assert.equal(client.boards.has("fourth"), false, "a refused board is forgotten: canvas() tries again");

      // Removed from "also" through the API: that board closes for good, "mine" carries on.
      const errors = [];
      also.on("error", (error) => errors.push(error));
      const removed = await cluster.api("DELETE", "/api/v1/canvases/also/users/scoped");
      assert.equal(removed.connections, 1);
      await waitFor("the board to close", () => also.status === "closed");
      assert.equal(errors[0]?.code, "removed");
      assert.equal(also.closedBy?.code, "removed");
      await assert.rejects(also.create({ id: "late" }), (error) => error.code === "removed");
      assert.ok(await mine.create({ id: "still-here" }) > 0);
      assert.equal(client.status, "connected");
      await sleep(300);
      assert.equal(client.boards.has("also"), false, "never rejoined");

      // A bad token: HTTP 401 before the upgrade, which Node's `ws` reports; the client stops.
      const forged = cluster.client(0, { token: `${token({ sub: "x", exp: now + 600 })}x` });
      const refused = forged.canvas("mine");
      await assert.rejects(refused.ready, (error) => error.code === "unauthorized" && error.httpStatus === 401);
      assert.equal(forged.status, "closed");

      // A token that expires mid-session: close 1008, the client stops.
      const brief = cluster.client(0, { token: token({ sub: "brief", exp: now + 2 }) });
      const board = brief.canvas("mine");
      await board.ready;
      const pending = new Promise((resolve) => brief.on("status", (status) => status === "closed" && resolve(status)));
      await pending;
      assert.equal(brief.closedBy?.code, "token_expired");
      assert.equal(board.status, "closed");
      await sleep(500);
      assert.equal(brief.status, "closed", "no reconnect");
    });
  });
}
