// The canvas app end to end in real headless Chromium: two pages on two canvas-relay instances that share one
// SQLite file. Run by tests/browser.rs (`cargo test`), or by hand:
//
//   RELAY_BIN=target/debug/canvas-relay node tests/browser/two-pages.mjs
//
// Env: RELAY_BIN (the binary), CHROMIUM (default /usr/bin/chromium), SCREENSHOTS (directory for the failure
// screenshots and the side-by-side picture of a passing run; default target/browser).
//
// A draws a rectangle, B sees it; B moves it, A sees the move; each sees the other's named cursor and both are
// in each other's presence list. A read-only page (?role=viewer) on B's instance sees the canvas and shows its
// cursor to A, draws nothing, and is refused (forbidden) if it sends an op anyway; a reaction from A (an
// ephemeral event) shows on B and on the viewer. Then A's instance is killed with SIGKILL; while A is away B draws and moves;
// A's instance restarts on the same port, A reconnects, resumes (no reload), and both pages end with the same
// canvas. Any failure saves a screenshot of each page and exits 1.

import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";

const RELAY_BIN = process.env.RELAY_BIN ?? "target/debug/canvas-relay";
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const SCREENSHOTS = resolve(process.env.SCREENSHOTS ?? "target/browser");
const STEP_TIMEOUT_MS = 15000;
const CANVAS = "e2e";

const dir = mkdtempSync(join(tmpdir(), "canvas-relay-browser-"));
const db = join(dir, "relay.db");
const relays = [];
let browser;

/** Starts an instance on the shared file; resolves with its address once it logs "listening on". */
function startRelay(listen = "127.0.0.1:0") {
  const args = ["serve", "--listen", listen, "--db", db, "--heartbeat-interval", "1s", "--presence-timeout", "3s"];
  const child = spawn(RELAY_BIN, args, { stdio: ["ignore", "ignore", "pipe"] });
  const relay = { child, log: "" };
  relays.push(relay);
  return new Promise((resolveAddr, reject) => {
    child.on("error", reject);
    child.on("exit", (code) => reject(new Error(`relay exited early (${code}):\n${relay.log}`)));
    child.stderr.on("data", (chunk) => {
      relay.log += chunk;
      const match = /listening on (\S+)/.exec(relay.log.replace(/\x1b\[[0-9;]*m/g, ""));
      if (match && !relay.addr) {
        relay.addr = match[1];
        resolveAddr(relay);
      }
    });
  });
}

async function openPage(relay, user, name, extra = "") {
  const page = await browser.newPage({ viewport: { width: 860, height: 500 } });
  page.on("pageerror", (error) => console.error(`[${name}] page error: ${error.message}`));
  page.on("console", (message) => message.type() === "error" && console.error(`[${name}] ${message.text()}`));
  await page.goto(`http://${relay.addr}/?canvas=${CANVAS}&name=${name}&user=${user}${extra}`);
  page.label = name;
  return page;
}

const waitFor = (page, fn, arg) => page.waitForFunction(fn, arg, { timeout: STEP_TIMEOUT_MS });

async function waitForStatus(page, status) {
  await waitFor(page, (s) => document.querySelector("#status").dataset.status === s, status);
}

/** Waits until `page` has the object `id` at (x, y) confirmed by the server (a drag's last update is sent up
 *  to 40 ms after the mouse is released). */
async function waitForConfirmed(page, id, x, y) {
  await waitFor(page, ({ id, x, y }) => {
    const { session } = window.canvasRelay;
    const object = session.confirmed.get(id);
    return session.pending.size === 0 && object?.x === x && object?.y === y;
  }, { id, x, y });
}

/** Both pages' canvas as JSON (sorted by id), once neither has an op waiting for its ack. */
const canvasOf = (page) =>
  page.evaluate(() => {
    const { session } = window.canvasRelay;
    if (session.pending.size > 0) return null;
    return JSON.stringify([...session.objects().entries()].sort(([a], [b]) => a.localeCompare(b)));
  });

async function waitForSameCanvas(a, b, count) {
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  for (;;) {
    const [left, right] = [await canvasOf(a), await canvasOf(b)];
    if (left !== null && left === right && JSON.parse(left).length === count) return JSON.parse(left);
    if (Date.now() > deadline) throw new Error(`the pages disagree:\n  A ${left}\n  B ${right}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function drag(page, from, to) {
  await page.mouse.move(from.x, from.y);
  await page.mouse.down();
  await page.mouse.move(to.x, to.y, { steps: 8 });
  await page.mouse.up();
}

/** Board coordinates to page coordinates. */
async function onBoard(page, x, y) {
  const box = await page.locator("#board").boundingBox();
  return { x: box.x + x, y: box.y + y };
}

async function rectOf(page, id) {
  const rect = page.locator(`#objects rect[data-id="${id}"]`);
  return { x: Number(await rect.getAttribute("x")), y: Number(await rect.getAttribute("y")) };
}

async function step(name, f) {
  process.stdout.write(`- ${name} ... `);
  await f();
  console.log("ok");
}

async function main() {
  const [relayA, relayB] = [await startRelay(), await startRelay()];
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
  });
  const a = await openPage(relayA, "ann", "Ann");
  const b = await openPage(relayB, "bob", "Bob");
  const pages = [a, b];
  try {
    await step("both pages connect, each to its own instance", async () => {
      await Promise.all(pages.map((page) => waitForStatus(page, "connected")));
      const instances = await Promise.all(pages.map((p) => p.evaluate(() => window.canvasRelay.session.socket.url)));
      if (instances[0] === instances[1]) throw new Error(`both pages on ${instances[0]}`);
    });
    await step("presence shows both users on both pages", async () => {
      for (const page of pages) {
        for (const user of ["ann", "bob"]) await page.locator(`#presence li[data-user="${user}"]`).waitFor();
      }
    });
    let id;
    await step("a rectangle drawn in A appears in B", async () => {
      await drag(a, await onBoard(a, 60, 60), await onBoard(a, 180, 140));
      await b.locator("#objects rect.object").first().waitFor({ timeout: STEP_TIMEOUT_MS });
      id = await b.locator("#objects rect.object").first().getAttribute("data-id");
      const objects = await waitForSameCanvas(a, b, 1);
      const rect = objects[0][1];
      if (rect.kind !== "rect" || rect.w !== 120 || rect.h !== 80) throw new Error(`unexpected ${JSON.stringify(rect)}`);
    });
    await step("a move in B shows in A", async () => {
      await drag(b, await onBoard(b, 120, 100), await onBoard(b, 320, 260));
      await waitForConfirmed(b, id, 260, 220);
      await waitForSameCanvas(a, b, 1);
      const [inA, inB] = [await rectOf(a, id), await rectOf(b, id)];
      if (inA.x !== 260 || inA.y !== 220 || inB.x !== 260 || inB.y !== 220) {
        throw new Error(`moved to A ${JSON.stringify(inA)}, B ${JSON.stringify(inB)}; expected (260, 220)`);
      }
    });
    await step("each page shows the other's named cursor", async () => {
      await a.mouse.move(...Object.values(await onBoard(a, 400, 300)));
      await b.locator('#cursors g[data-user="ann"] text', { hasText: "Ann" }).waitFor({ timeout: STEP_TIMEOUT_MS });
      await b.mouse.move(...Object.values(await onBoard(b, 500, 100)));
      await a.locator('#cursors g[data-user="bob"] text', { hasText: "Bob" }).waitFor({ timeout: STEP_TIMEOUT_MS });
    });
    const viewer = await openPage(relayB, "vic", "Vic", "&role=viewer");
    pages.push(viewer);
    await step("a viewer page on B's instance sees the canvas, shows its cursor to A, and draws nothing", async () => {
      await waitForStatus(viewer, "connected");
      await viewer.locator("#role").waitFor({ state: "visible", timeout: STEP_TIMEOUT_MS });
      await viewer.locator(`#objects rect[data-id="${id}"]`).waitFor({ timeout: STEP_TIMEOUT_MS });
      await drag(viewer, await onBoard(viewer, 500, 60), await onBoard(viewer, 600, 140));
      await viewer.mouse.move(...Object.values(await onBoard(viewer, 450, 200)));
      await a.locator('#cursors g[data-user="vic"] text', { hasText: "Vic" }).waitFor({ timeout: STEP_TIMEOUT_MS });
      if ((await viewer.locator("#objects rect.object").count()) !== 1) throw new Error("the viewer page drew");
      // Sent anyway, past the page's own guard: the relay refuses it and nothing is logged.
      await viewer.evaluate(() => window.canvasRelay.session.send("object-create", { id: "sneaky", kind: "rect", x: 500, y: 60, w: 40, h: 40 }));
      await viewer.locator("#problem", { hasText: "forbidden" }).waitFor({ timeout: STEP_TIMEOUT_MS });
      await waitForSameCanvas(a, b, 1);
    });
    await step("a reaction from A shows on B and on the viewer (an ephemeral event across instances)", async () => {
      await a.locator("#react").click();
      for (const page of [b, viewer]) {
        await page.locator('#reactions .reaction[data-from="ann"]').waitFor({ timeout: STEP_TIMEOUT_MS });
      }
    });
    await viewer.close();
    pages.pop();
    await step("A's instance is killed (SIGKILL): A shows reconnecting", async () => {
      relayA.child.removeAllListeners("exit");
      relayA.child.kill("SIGKILL");
      await waitForStatus(a, "reconnecting");
    });
    await step("B keeps editing while A is away", async () => {
      await drag(b, await onBoard(b, 40, 300), await onBoard(b, 140, 380));
      await drag(b, await onBoard(b, 300, 250), await onBoard(b, 400, 200));
      await waitForConfirmed(b, id, 360, 170);
      // The drag's trailing update may still be in flight: wait for its ack rather than sample once.
      await waitFor(b, () => window.canvasRelay.session.pending.size === 0 && window.canvasRelay.session.confirmed.size === 2);
    });
    await step("A's instance restarts on its port; A resumes with no reload and no gap", async () => {
      await startRelay(relayA.addr);
      await waitForStatus(a, "resumed");
      const objects = await waitForSameCanvas(a, b, 2);
      const moved = objects.find(([key]) => key === id)[1];
      if (moved.x !== 360 || moved.y !== 170) throw new Error(`A missed the move made while away: ${JSON.stringify(moved)}`);
      for (const page of pages) {
        for (const user of ["ann", "bob"]) await page.locator(`#presence li[data-user="${user}"]`).waitFor();
      }
    });
    await sideBySide(pages, join(SCREENSHOTS, "two-pages.png"));
    console.log(`passed; picture of both pages in ${join(SCREENSHOTS, "two-pages.png")}`);
  } catch (error) {
    mkdirSync(SCREENSHOTS, { recursive: true });
    for (const page of pages) await page.screenshot({ path: join(SCREENSHOTS, `failure-${page.label}.png`) });
    console.log("FAILED");
    console.error(error.stack ?? error);
    console.error(`screenshots: ${SCREENSHOTS}/failure-*.png`);
    for (const [i, relay] of relays.entries()) console.error(`--- relay ${i} log (tail)\n${relay.log.slice(-3000)}`);
    process.exitCode = 1;
  }
}

/** One picture of both pages next to each other (the README's), composed in a third page. */
async function sideBySide(pages, path) {
  const shots = await Promise.all(pages.map((page) => page.screenshot()));
  const composer = await browser.newPage({ viewport: { width: 1736, height: 500 } });
  const images = shots.map((png) => `<img src="data:image/png;base64,${png.toString("base64")}">`).join("");
  await composer.setContent(`<body style="margin:0;display:flex;gap:16px;background:#d0d7de">${images}</body>`);
  mkdirSync(SCREENSHOTS, { recursive: true });
  writeFileSync(path, await composer.screenshot());
}

const overall = setTimeout(() => {
  console.error("FAILED: the browser test took over 3 minutes");
  process.exit(1);
}, 180000);

try {
  await main();
} finally {
  clearTimeout(overall);
  await browser?.close();
  for (const relay of relays) relay.child.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
}
