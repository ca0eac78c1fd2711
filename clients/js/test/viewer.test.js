// Scenario 2: a viewer (role "viewer") sees the canvas, and its create is refused with code "forbidden":
// the optimistic object disappears again and a "change" says so (reason "rollback").

import assert from "node:assert/strict";
import test from "node:test";
import { BUSES, waitFor, withCluster } from "./harness.js";

for (const bus of BUSES) {
  test(`a viewer's create is refused (forbidden) and rolled back (${bus})`, { timeout: 30000 }, async () => {
    await withCluster({ bus }, async (cluster) => {
      const editor = cluster.client(0, { user: "ed" }).canvas("viewed");
      const viewer = cluster.client(0, { user: "vi", role: "viewer" }).canvas("viewed");
      await Promise.all([editor.ready, viewer.ready]);
      assert.equal(viewer.role, "viewer");
      assert.equal(editor.role, "editor");

      await editor.create({ id: "shared", kind: "rect", x: 1 });
      await waitFor("the viewer to see the editor's object", () => viewer.objects.has("shared"));

      const changes = [];
      viewer.on("change", (change) => changes.push(change.reason));
      const refused = viewer.create({ id: "mine", kind: "rect" });
      assert.ok(viewer.objects.has("mine"), "shown at once, before the server answers");
      await assert.rejects(refused, (error) => error.code === "forbidden" && error.name === "RelayError");
      assert.ok(!viewer.objects.has("mine"), "rolled back");
      assert.ok(viewer.objects.has("shared"));
      assert.deepEqual(changes, ["local", "rollback"]);
      assert.equal(viewer.pendingCount, 0);

      // Nothing was logged, and the viewer still follows the canvas.
      assert.ok(!("mine" in (await cluster.state("viewed")).objects));
      await editor.update({ id: "shared", x: 2 });
      await waitFor("the viewer to see the update", () => viewer.objects.get("shared")?.x === 2);
      assert.equal(viewer.seq, editor.seq);
    });
  });
}
