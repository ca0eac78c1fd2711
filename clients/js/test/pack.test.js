// Scenario 6: the package as npm ships it. `npm pack`, install the tarball into a fresh folder, import
// "@canvas-relay/client" from a script there (with `ws` from this package's devDependencies), connect to a
// relay on each bus, create an object and get its seq. The tarball carries the .d.ts, and a TypeScript file
// in that folder type-checks against it through the package's "exports".

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import test from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { BUSES, withCluster } from "./harness.js";

const run = promisify(execFile);
const PACKAGE = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const npm = process.platform === "win32" ? "npm.cmd" : "npm";

test("the packed tarball installs, imports, types and talks to a relay", { timeout: 90000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "canvas-relay-pack-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const { stdout } = await run(npm, ["pack", "--json", "--pack-destination", dir], { cwd: PACKAGE });
  const [packed] = JSON.parse(stdout);
  const files = packed.files.map((file) => file.path).sort();
  assert.deepEqual(files, ["LICENSE", "README.md", "package.json", "src/answers.js", "src/board.js", "src/client.js", "src/emitter.js", "src/error.js", "src/frames.js", "src/http.js", "src/index.d.ts", "src/index.js", "src/limiter.js"]);
  assert.equal(packed.name, "@canvas-relay/client");

  const app = join(dir, "app");
  await run("mkdir", ["-p", app]);
  writeFileSync(join(app, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }));
  await run(npm, ["install", "--no-audit", "--no-fund", "--offline", join(dir, packed.filename)], { cwd: app });
  const installed = JSON.parse(readFileSync(join(app, "node_modules/@canvas-relay/client/package.json"), "utf8"));
  assert.equal(installed.version, "0.1.0");
  assert.deepEqual(installed.dependencies ?? {}, {}, "no runtime dependencies");

  writeFileSync(join(app, "main.mjs"), `
    import { RelayClient } from "@canvas-relay/client";
    import { WebSocket } from ${JSON.stringify(join(PACKAGE, "node_modules/ws/wrapper.mjs"))};
    const client = new RelayClient({ url: process.argv[2], user: "packed", WebSocket });
    const board = client.canvas("packed");
    await board.ready;
    const seq = await board.create({ id: "from-tarball", kind: "rect" });
    console.log(JSON.stringify({ seq, objects: [...board.objects.keys()] }));
    client.close();
  `);
  writeFileSync(join(app, "check.ts"), `
    import { RelayClient, RelayError, type Board, type ChangeEvent } from "@canvas-relay/client";
    const client = new RelayClient({ url: "ws://127.0.0.1:1", user: "u" });
    const board: Board = client.canvas("c");
    const seq: Promise<number> = board.create({ id: "x" });
    board.on("change", (change: ChangeEvent) => change.reason);
    export const checks = [seq, RelayError];
  `);
  const tsc = join(PACKAGE, "node_modules/typescript/bin/tsc");
  const compilerOptions = { noEmit: true, strict: true, module: "nodenext", moduleResolution: "nodenext", target: "es2022", lib: ["es2022", "dom"], types: [] };
  writeFileSync(join(app, "tsconfig.json"), JSON.stringify({ compilerOptions, files: ["check.ts"] }));
  await run(process.execPath, [tsc, "-p", "."], { cwd: app }).catch((error) => {
    throw new Error(`the installed package does not type-check:\n${error.stdout}${error.stderr}`);
  });

  for (const bus of BUSES) {
    await withCluster({ bus }, async (cluster) => {
      const { stdout: out } = await run(process.execPath, ["main.mjs", cluster.instances[0].url], { cwd: app, timeout: 20000 });
      const result = JSON.parse(out);
      assert.ok(Number.isInteger(result.seq) && result.seq >= 1, `${bus}: a seq`);
      assert.deepEqual(result.objects, ["from-tarball"]);
      assert.ok("from-tarball" in (await cluster.state("packed")).objects);
    });
  }
});
