// The canvas app's history panel end to end in real headless Chromium: pages on two canvas-relay instances that
// share one SQLite file (the shape of two-pages.mjs). Run by tests/browser.rs (`cargo test`), or by hand:
//
//   RELAY_BIN=target/debug/canvas-relay node tests/browser/history.mjs
//
// Env: RELAY_BIN, CHROMIUM (default /usr/bin/chromium), SCREENSHOTS (default target/browser).
//
// A and B draw a rectangle each; A opens the history panel, names the live state, and goes back to the live
// board; both draw and move more. A opens the panel again, drags the slider to the named seq, and the board shows
// exactly the named state (read-only: a drag on it draws nothing) while A's live board is unchanged underneath.
// A restores it: the panel closes and both pages converge on the named state, by the ops the relay logs. A page
// error or console error fails the test; any failure saves a screenshot of each page and exits 1.

import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";

const RELAY_BIN = process.env.RELAY_BIN ?? "target/debug/canvas-relay";
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const SCREENSHOTS = resolve(process.env.SCREENSHOTS ?? "target/browser");
const STEP_TIMEOUT_MS = 15000;
const CANVAS = "history-e2e";

const dir = mkdtempSync(join(tmpdir(), "canvas-relay-history-"));
const relays = [];
const pages = [];
let browser;

/** Starts an instance on the shared file; resolves once it logs "listening on". */
function startRelay() {
  const args = ["serve", "--listen", "127.0.0.1:0", "--db", join(dir, "relay.db"), "--heartbeat-interval", "1s"];
  const child = spawn(RELAY_BIN, args, { stdio: ["ignore", "ignore", "pipe"] });
  const relay = { child, log: "" };
  relays.push(relay);
  return new Promise((resolveAddr, reject) => {
    child.on("error", reject);
    child.on("exit", (code) => reject(new Error(`relay exited early (${code}):\n${relay.log}`)));
    child.stderr.on("data", (chunk) => {
      relay.log += chunk;
      const match = /listening on (\S+)/.exec(relay.log.replace(/\x1b\[[0-9;]*m/g, ""));
      if (match && !relay.addr) resolveAddr(Object.assign(relay, { addr: match[1] }));
    });
  });
}

/** Ann's or Bob's page of the canvas on `relay`; it records its errors (`page.errors`). */
async function openPage(relay, user, name) {
  const page = await browser.newPage({ viewport: { width: 1000, height: 560 } });
  Object.assign(page, { label: name, errors: [] });
  page.on("pageerror", (error) => page.errors.push(`page error: ${error.message}`));
  page.on("console", (message) => message.type() === "error" && page.errors.push(`console error: ${message.text()}`));
  pages.push(page);
  await page.goto(`http://${relay.addr}/?canvas=${CANVAS}&name=${name}&user=${user}`);
  return page;
}

/** Polls `check` until it returns something truthy (returned), or throws `what` after the deadline. */
async function until(what, check) {
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The page's live board as JSON (objects sorted by id, fields by name), with its seq; null while an op waits. */
const live = (page) =>
  page.evaluate(() => {
    const board = window.canvasRelay.board;
    if (board.pendingCount > 0) return null;
    const sorted = (object) => Object.fromEntries(Object.entries(object).sort(([a], [b]) => a.localeCompare(b)));
    const objects = [...board.objects.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([id, o]) => [id, sorted(o)]);
    return { seq: board.seq, objects: JSON.stringify(objects) };
  });

/** Waits until both pages' live boards hold the same `count` objects; returns that state. */
async function sameBoard(a, b, count) {
  let last;
  try {
    return await until(`${count} objects on both pages`, async () => {
      last = [await live(a), await live(b)];
      const [left, right] = last;
      return left && right && left.objects === right.objects && JSON.parse(left.objects).length === count && left;
    });
  } catch (error) {
    throw new Error(`${error.message}: ${JSON.stringify(last)}`);
  }
}

/** What the page's SVG shows: each rectangle's id and geometry, sorted by id. */
const drawn = (page) =>
  page.$$eval(".objects rect.object", (rects) =>
    JSON.stringify(rects.map((r) => [r.dataset.id, ["x", "y", "width", "height", "fill"].map((k) => r.getAttribute(k))])
      .sort(([a], [b]) => a.localeCompare(b))));

/** The SVG geometry the objects in `state` (live()'s JSON) must be drawn with. */
const geometryOf = (state) =>
  JSON.stringify(JSON.parse(state.objects).map(([id, o]) => [id, [o.x, o.y, o.w, o.h, o.color].map(String)]));

async function drag(page, from, to, steps = 8) {
  await page.mouse.move(from.x, from.y);
  await page.mouse.down();
  await page.mouse.move(to.x, to.y, { steps });
  await page.mouse.up();
}

/** Board coordinates to page coordinates. */
async function onBoard(page, x, y) {
  const box = await page.locator(".board").boundingBox();
  return { x: box.x + x, y: box.y + y };
}

/** Opens the page's history panel; resolves once it shows the head and lists the versions. */
async function openHistory(page) {
  await page.locator(".history-toggle").click();
  const { seq } = await live(page);
  await page.locator(`.history[data-shown="${seq}"]`).waitFor({ timeout: STEP_TIMEOUT_MS });
}

async function step(name, f) {
  process.stdout.write(`- ${name} ... `);
  await f();
  const errors = pages.flatMap((page) => page.errors.map((e) => `[${page.label}] ${e}`));
  if (errors.length) throw new Error(`errors in the pages:\n  ${errors.join("\n  ")}`);
  console.log("ok");
}

async function main() {
  const [relayA, relayB] = [await startRelay(), await startRelay()];
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking"] });
  const a = await openPage(relayA, "ann", "Ann");
  const b = await openPage(relayB, "bob", "Bob");
  try {
    let named; // { seq, state }
    await step("A and B, on two instances, draw a rectangle each", async () => {
      await Promise.all([a, b].map((page) => page.waitForFunction(() => document.querySelector("#status").dataset.status === "connected")));
      await drag(a, await onBoard(a, 40, 40), await onBoard(a, 140, 120));
      await drag(b, await onBoard(b, 300, 60), await onBoard(b, 380, 200));
      await sameBoard(a, b, 2);
    });
    await step("A names the live state in the history panel, then goes back to the live board", async () => {
      await openHistory(a);
      const state = await live(a);
      await a.locator(".history-name input").fill("two rectangles");
      await a.locator(".history-name button").click();
      const version = a.locator(".versions button.named", { hasText: "two rectangles" });
      await version.waitFor({ timeout: STEP_TIMEOUT_MS });
      named = { seq: Number(await version.getAttribute("data-seq")), state };
      if (named.seq !== state.seq) throw new Error(`named seq ${named.seq}, the head was ${state.seq}`);
      await a.locator(".history-live").click();
      await a.locator(".history").waitFor({ state: "hidden", timeout: STEP_TIMEOUT_MS });
      if (await a.locator(".panel.past").count()) throw new Error("still showing the past");
    });
    await step("both draw and move more", async () => {
      await drag(a, await onBoard(a, 60, 300), await onBoard(a, 200, 400));
      await drag(b, await onBoard(b, 90, 80), await onBoard(b, 490, 280)); // moves A's first rectangle by (400, 200)
      // A drag's last update goes out up to 40 ms after the release: wait for it, confirmed.
      await until("the move confirmed", async () => JSON.parse((await live(b))?.objects ?? "[]").some(([, o]) => o.x === 440 && o.y === 240));
      await sameBoard(a, b, 3);
    });
    let head;
    await step("A's slider, dragged to the named seq, shows exactly that state, read-only", async () => {
      head = await sameBoard(a, b, 3);
      await openHistory(a);
      await a.locator(".versions button.named").waitFor({ timeout: STEP_TIMEOUT_MS }); // the slider's range is set
      const slider = a.locator(".history-slider");
      const [min, max] = [Number(await slider.getAttribute("min")), Number(await slider.getAttribute("max"))];
      if (max !== head.seq || min > named.seq) throw new Error(`the slider spans ${min}..${max}; head ${head.seq}, named ${named.seq}`);
      // Drag the thumb from the head (the right end) to about the named seq, then nudge it there with the keys.
      const box = await slider.boundingBox();
      const at = (seq) => ({ x: box.x + 8 + ((seq - min) / Math.max(1, max - min)) * (box.width - 16), y: box.y + box.height / 2 });
      await drag(a, at(max), at(named.seq), 12);
      for (let i = 0; i < 100 && Number(await slider.inputValue()) !== named.seq; i++) {
        await slider.press(Number(await slider.inputValue()) > named.seq ? "ArrowLeft" : "ArrowRight");
      }
      await a.locator(`.history[data-shown="${named.seq}"]`).waitFor({ timeout: STEP_TIMEOUT_MS });
      await until("the named state drawn", async () => (await drawn(a)) === geometryOf(named.state));
      if (!(await a.locator(".history-at").textContent()).includes("two rectangles")) throw new Error("the version is not named at the slider");
      await drag(a, await onBoard(a, 600, 60), await onBoard(a, 700, 160)); // on the past: draws nothing
      if ((await drawn(a)) !== geometryOf(named.state)) throw new Error("the past changed under a drag");
      if ((await live(a)).objects !== head.objects) throw new Error("the live board changed while A looked at the past");
      mkdirSync(SCREENSHOTS, { recursive: true });
      await a.screenshot({ path: join(SCREENSHOTS, "history-panel.png") });
    });
    await step("A restores it: the panel closes and both pages converge on the named state", async () => {
      await a.locator(".history-restore").click();
      await a.locator(".history").waitFor({ state: "hidden", timeout: STEP_TIMEOUT_MS });
      const restored = await sameBoard(a, b, 2);
      if (restored.objects !== named.state.objects) throw new Error(`restored ${restored.objects}, named ${named.state.objects}`);
      if (restored.seq <= head.seq) throw new Error(`the restore logged nothing (seq ${restored.seq})`);
      for (const page of [a, b]) await until(`${page.label} to draw it`, async () => (await drawn(page)) === geometryOf(named.state));
    });
    await a.screenshot({ path: join(SCREENSHOTS, "history-restored.png") });
    console.log(`passed; pictures in ${join(SCREENSHOTS, "history-panel.png")} and history-restored.png`);
  } catch (error) {
    mkdirSync(SCREENSHOTS, { recursive: true });
    for (const page of pages) await page.screenshot({ path: join(SCREENSHOTS, `history-failure-${page.label}.png`) });
    console.log("FAILED");
    console.error(error.stack ?? error);
    for (const [i, relay] of relays.entries()) console.error(`--- relay ${i} log (tail)\n${relay.log.slice(-3000)}`);
    process.exitCode = 1;
  }
}

const overall = setTimeout(() => {
  console.error("FAILED: the history browser test took over 2 minutes");
  process.exit(1);
}, 120000);

try {
  await main();
} finally {
  clearTimeout(overall);
  await browser?.close();
  for (const relay of relays) relay.child.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
}
