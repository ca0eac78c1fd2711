// The canvas app end to end in real headless Chromium: pages on two canvas-relay instances that share one
// SQLite file. Run by tests/browser.rs (`cargo test`), or by hand:
//
//   RELAY_BIN=target/debug/canvas-relay node tests/browser/two-pages.mjs
//
// Env: RELAY_BIN (the binary), CHROMIUM (default /usr/bin/chromium), SCREENSHOTS (directory for the failure
// screenshots and the pictures of a passing run; default target/browser).
//
// A draws a rectangle, B sees it; B moves it, A sees the move; each sees the other's named cursor and both are
// in each other's presence list; B sees A's selection (presence state) outlined in A's colour, and sees it go.
// A read-only page (?role=viewer) on B's instance sees the canvas and shows its cursor to A, draws nothing, and
// is refused (forbidden) if it sends an op anyway; a reaction from A (an ephemeral event) shows on B and on the
// viewer. The two-canvas page (/app/two.html) on A's instance opens exactly one WebSocket (`/ws`, no canvas in
// its path) for both boards: what it draws on the left reaches a page of the left canvas on B's instance and not
// one of the right canvas, and the other way round. Then A's instance is killed with SIGKILL; while A is away B
// draws and moves; A's instance restarts on the same port, A and the two-canvas page reconnect and resume (no
// reload; the two-canvas page both boards over one new socket), and every page ends with the same canvas as its
// peer. A page error or console error (other than failed reconnects while the instance is down) fails the
// test. Any failure saves a screenshot of each page and exits 1.

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
const [LEFT, RIGHT] = ["e2e-left", "e2e-right"];

const dir = mkdtempSync(join(tmpdir(), "canvas-relay-browser-"));
const db = join(dir, "relay.db");
const relays = [];
const opened = []; // every page, for the error check and the failure screenshots
let browser;
/** While an instance is down its pages' reconnects fail, and Chromium logs each failed WebSocket. */
let instanceDown = false;

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

/** Opens `path` on `relay`; the page records its WebSockets (`page.sockets`) and its errors (`page.errors`). */
async function openPage(relay, label, path, width = 860) {
  const page = await browser.newPage({ viewport: { width, height: 500 } });
  Object.assign(page, { label, sockets: [], errors: [] });
  page.on("websocket", (socket) => page.sockets.push(socket));
  page.on("pageerror", (error) => page.errors.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() !== "error") return;
    if (instanceDown && /WebSocket connection to .* failed/.test(message.text())) return;
    page.errors.push(`console error: ${message.text()}`);
  });
  opened.push(page);
  await page.goto(`http://${relay.addr}${path}`);
  return page;
}

const single = (relay, user, name, extra = "") => openPage(relay, name, `/?canvas=${CANVAS}&name=${name}&user=${user}${extra}`);

const waitFor = (page, fn, arg) => page.waitForFunction(fn, arg, { timeout: STEP_TIMEOUT_MS });

async function waitForStatus(page, status) {
  await waitFor(page, (s) => document.querySelector("#status").dataset.status === s, status);
}

/** In a page: its board of `canvas` (`canvasRelay.board` on `/`, one of `canvasRelay.boards` on two.html). */
const BOARD = (canvas) => {
  const relay = window.canvasRelay;
  return relay.boards ? relay.boards.find((board) => board.canvas === canvas) : relay.board;
};

/** `fn(board, arg)` on `page`'s board of `canvas`. Sent as an expression, which page.evaluate runs through the
 *  DevTools protocol: the page's CSP forbids eval, so the page itself could not compile `fn` from an argument
 *  (waitForFunction with a string would). */
const onBoardOf = (page, canvas, fn, arg) =>
  page.evaluate(`(${fn})((${BOARD})(${JSON.stringify(canvas)}), ${JSON.stringify(arg ?? null)})`);

/** Waits until `fn(board, arg)` holds in `page`'s board of `canvas`. */
async function waitForBoard(page, canvas, fn, arg) {
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  while (!(await onBoardOf(page, canvas, fn, arg))) {
    if (Date.now() > deadline) throw new Error(`${page.label}: ${canvas} never had ${fn} (${JSON.stringify(arg)})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Waits until `page` has the object `id` at (x, y) confirmed by the server (a drag's last update is sent up
 *  to 40 ms after the mouse is released). */
async function waitForConfirmed(page, id, x, y) {
  await waitForBoard(page, CANVAS, (board, { id, x, y }) => {
    const object = board.objects.get(id);
    return board.pendingCount === 0 && object?.x === x && object?.y === y;
  }, { id, x, y });
}

/** A page's canvas as JSON (objects sorted by id, their fields by name: a page that loaded the state and one
 *  that folded the ops may hold them in another order), once it has no op waiting for its ack. */
const canvasOf = (page, canvas = CANVAS) =>
  onBoardOf(page, canvas, (board) => {
    if (board.pendingCount > 0) return null;
    const sorted = (object) => Object.fromEntries(Object.entries(object).sort(([a], [b]) => a.localeCompare(b)));
    return JSON.stringify([...board.objects.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([id, o]) => [id, sorted(o)]));
  });

async function waitForSameCanvas(a, b, count, canvas = CANVAS) {
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  for (;;) {
    const [left, right] = [await canvasOf(a, canvas), await canvasOf(b, canvas)];
    if (left !== null && left === right && JSON.parse(left).length === count) return JSON.parse(left);
    if (Date.now() > deadline) throw new Error(`${a.label} and ${b.label} disagree on ${canvas}:\n  ${left}\n  ${right}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function drag(page, from, to) {
  await page.mouse.move(from.x, from.y);
  await page.mouse.down();
  await page.mouse.move(to.x, to.y, { steps: 8 });
  await page.mouse.up();
}

/** The page's panel of `canvas` (the only one on `/`). */
const panel = (page, canvas) => (canvas ? page.locator(`.panel[data-canvas="${canvas}"]`) : page.locator(".panel"));

/** Board coordinates to page coordinates. */
async function onBoard(page, x, y, canvas) {
  const box = await panel(page, canvas).locator(".board").boundingBox();
  return { x: box.x + x, y: box.y + y };
}

async function rectOf(page, id) {
  const rect = page.locator(`.objects rect[data-id="${id}"]`);
  return { x: Number(await rect.getAttribute("x")), y: Number(await rect.getAttribute("y")) };
}

/** The pages' WebSocket URLs, each one checked to be the multiplexed `/ws?...` of `relay`. */
function oneSocketTo(page, relay) {
  const urls = page.sockets.map((socket) => socket.url());
  if (urls.length !== 1) throw new Error(`${page.label} opened ${urls.length} WebSockets: ${urls.join(", ")}`);
  const url = new URL(urls[0]);
  if (url.host !== relay.addr || url.pathname !== "/ws") throw new Error(`${page.label} opened ${urls[0]}`);
}

async function step(name, f) {
  process.stdout.write(`- ${name} ... `);
  await f();
  const errors = opened.filter((page) => !page.isClosed()).flatMap((page) => page.errors.map((e) => `[${page.label}] ${e}`));
  if (errors.length) throw new Error(`errors in the pages:\n  ${errors.join("\n  ")}`);
  console.log("ok");
}

async function main() {
  const [relayA, relayB] = [await startRelay(), await startRelay()];
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
  });
  const a = await single(relayA, "ann", "Ann");
  const b = await single(relayB, "bob", "Bob");
  const pages = [a, b];
  try {
    await step("both pages connect, each to its own instance, over the multiplexed /ws", async () => {
      await Promise.all(pages.map((page) => waitForStatus(page, "connected")));
      oneSocketTo(a, relayA);
      oneSocketTo(b, relayB);
    });
    await step("presence shows both users on both pages", async () => {
      for (const page of pages) {
        for (const user of ["ann", "bob"]) await page.locator(`.presence li[data-user="${user}"]`).waitFor();
      }
    });
    let id;
    await step("a rectangle drawn in A appears in B", async () => {
      await drag(a, await onBoard(a, 60, 60), await onBoard(a, 180, 140));
      await b.locator(".objects rect.object").first().waitFor({ timeout: STEP_TIMEOUT_MS });
      id = await b.locator(".objects rect.object").first().getAttribute("data-id");
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
      await b.locator('.cursors g[data-user="ann"] text', { hasText: "Ann" }).waitFor({ timeout: STEP_TIMEOUT_MS });
      await b.mouse.move(...Object.values(await onBoard(b, 500, 100)));
      await a.locator('.cursors g[data-user="bob"] text', { hasText: "Bob" }).waitFor({ timeout: STEP_TIMEOUT_MS });
    });
    await step("B sees A's selection outlined in A's colour (presence state across instances), and sees it go", async () => {
      const before = await canvasOf(a);
      await a.mouse.click(...Object.values(await onBoard(a, 300, 250))); // on the rectangle: selects it
      const outline = b.locator(`.selections g[data-user="ann"][data-id="${id}"]`);
      await outline.waitFor({ timeout: STEP_TIMEOUT_MS });
      const [stroke, fill] = [await outline.locator("rect").getAttribute("stroke"), await b.locator(`.objects rect[data-id="${id}"]`).getAttribute("fill")];
      if (stroke !== fill) throw new Error(`A's selection outlined in ${stroke}, A's colour is ${fill}`);
      await outline.locator("text", { hasText: "Ann" }).waitFor({ timeout: STEP_TIMEOUT_MS });
      if ((await a.locator('.selections g[data-user="ann"]').count()) !== 0) throw new Error("A outlines its own selection");
      // B selected the rectangle when it moved it: A shows that one.
      await a.locator(`.selections g[data-user="bob"][data-id="${id}"] text`, { hasText: "Bob" }).waitFor({ timeout: STEP_TIMEOUT_MS });
      await a.mouse.click(...Object.values(await onBoard(a, 30, 30))); // on empty space: selects nothing
      await outline.waitFor({ state: "detached", timeout: STEP_TIMEOUT_MS });
      if ((await canvasOf(a)) !== before) throw new Error("a click changed the canvas");
    });
    const viewer = await single(relayB, "vic", "Vic", "&role=viewer");
    pages.push(viewer);
    await step("a viewer page on B's instance sees the canvas, shows its cursor to A, and draws nothing", async () => {
      await waitForStatus(viewer, "connected");
      await viewer.locator(".role").waitFor({ state: "visible", timeout: STEP_TIMEOUT_MS });
      await viewer.locator(`.objects rect[data-id="${id}"]`).waitFor({ timeout: STEP_TIMEOUT_MS });
      await drag(viewer, await onBoard(viewer, 500, 60), await onBoard(viewer, 600, 140));
      await viewer.mouse.move(...Object.values(await onBoard(viewer, 450, 200)));
      await a.locator('.cursors g[data-user="vic"] text', { hasText: "Vic" }).waitFor({ timeout: STEP_TIMEOUT_MS });
      if ((await viewer.locator(".objects rect.object").count()) !== 1) throw new Error("the viewer page drew");
      // Sent anyway, past the page's own guard: the relay refuses it and nothing is logged.
      await viewer.evaluate(() => { window.canvasRelay.view.create({ id: "sneaky", kind: "rect", x: 500, y: 60, w: 40, h: 40 }); });
      await viewer.locator(".problem", { hasText: "forbidden" }).waitFor({ timeout: STEP_TIMEOUT_MS });
      await waitForSameCanvas(a, b, 1);
      await waitForSameCanvas(a, viewer, 1); // rolled back on the viewer's page too
    });
    await step("a reaction from A shows on B and on the viewer (an ephemeral event across instances)", async () => {
      await a.locator(".react").click();
      for (const page of [b, viewer]) {
        await page.locator('.reactions .reaction[data-from="ann"]').waitFor({ timeout: STEP_TIMEOUT_MS });
      }
    });
    await viewer.close();
    pages.pop();

    const two = await openPage(relayA, "Two", `/app/two.html?canvases=${LEFT},${RIGHT}&name=Tom&user=tom`, 1400);
    const [lou, ray] = [
      await openPage(relayB, "Lou", `/?canvas=${LEFT}&name=Lou&user=lou`),
      await openPage(relayB, "Ray", `/?canvas=${RIGHT}&name=Ray&user=ray`),
    ];
    const watchers = [[LEFT, lou], [RIGHT, ray]];
    await step("the two-canvas page joins both canvases over ONE WebSocket (/ws, no canvas in its path)", async () => {
      await Promise.all([two, lou, ray].map((page) => waitForStatus(page, "connected")));
      oneSocketTo(two, relayA);
      if ((await two.locator(".panel").count()) !== 2) throw new Error("not two boards");
      for (const [canvas, watcher] of watchers) {
        const other = watcher === lou ? "ray" : "lou";
        await panel(two, canvas).locator(`.presence li[data-user="${watcher.label.toLowerCase()}"]`).waitFor({ timeout: STEP_TIMEOUT_MS });
        await watcher.locator('.presence li[data-user="tom"]').waitFor({ timeout: STEP_TIMEOUT_MS });
        if ((await panel(two, canvas).locator(`.presence li[data-user="${other}"]`).count()) !== 0) {
          throw new Error(`${other} is listed on ${canvas}`);
        }
      }
    });
    await step("drawing on the left board reaches the left canvas's page, not the right one's; and the other way", async () => {
      await drag(two, await onBoard(two, 40, 40, LEFT), await onBoard(two, 140, 120, LEFT));
      const [left] = await waitForSameCanvas(two, lou, 1, LEFT);
      await drag(two, await onBoard(two, 200, 200, RIGHT), await onBoard(two, 260, 300, RIGHT));
      const [right] = await waitForSameCanvas(two, ray, 1, RIGHT);
      if (left[1].w !== 100 || right[1].h !== 100) throw new Error(`drawn ${JSON.stringify([left, right])}`);
      // The right board's op reached Ray, on the same instance as Lou: had it gone to the left canvas, Lou
      // would have it too. Neither page has the other side's rectangle.
      await waitForSameCanvas(two, lou, 1, LEFT);
      for (const [page, canvas, seen] of [[lou, LEFT, left], [ray, RIGHT, right]]) {
        const objects = JSON.parse(await canvasOf(page, canvas));
        if (objects.length !== 1 || objects[0][0] !== seen[0]) throw new Error(`${page.label} has ${JSON.stringify(objects)}`);
        await page.locator(`.objects rect[data-id="${seen[0]}"]`).waitFor({ timeout: STEP_TIMEOUT_MS });
      }
      await lou.mouse.move(...Object.values(await onBoard(lou, 300, 200)));
      await panel(two, LEFT).locator('.cursors g[data-user="lou"] text', { hasText: "Lou" }).waitFor({ timeout: STEP_TIMEOUT_MS });
      if ((await panel(two, RIGHT).locator(".cursors g").count()) !== 0) throw new Error("Lou's cursor on the right board");
      oneSocketTo(two, relayA);
    });

    await step("A's instance is killed (SIGKILL): A and the two-canvas page show reconnecting", async () => {
      instanceDown = true;
      relayA.child.removeAllListeners("exit");
      relayA.child.kill("SIGKILL");
      await waitForStatus(a, "reconnecting");
      await waitForStatus(two, "reconnecting");
    });
    await step("B keeps editing while A is away", async () => {
      await drag(b, await onBoard(b, 40, 300), await onBoard(b, 140, 380));
      await drag(b, await onBoard(b, 300, 250), await onBoard(b, 400, 200));
      await waitForConfirmed(b, id, 360, 170);
      // The drag's trailing update may still be in flight: wait for its ack rather than sample once.
      await waitForBoard(b, CANVAS, (board) => board.pendingCount === 0 && board.objects.size === 2);
      await drag(lou, await onBoard(lou, 300, 40), await onBoard(lou, 360, 90));
      await waitForBoard(lou, LEFT, (board) => board.pendingCount === 0 && board.objects.size === 2);
    });
    await step("A's instance restarts on its port; A resumes with no reload and no gap", async () => {
      await startRelay(relayA.addr);
      await waitForStatus(a, "resumed");
      const objects = await waitForSameCanvas(a, b, 2);
      const moved = objects.find(([key]) => key === id)[1];
      if (moved.x !== 360 || moved.y !== 170) throw new Error(`A missed the move made while away: ${JSON.stringify(moved)}`);
      for (const page of pages) {
        for (const user of ["ann", "bob"]) await page.locator(`.presence li[data-user="${user}"]`).waitFor();
      }
    });
    await step("the two-canvas page resumes both boards over one new socket", async () => {
      await waitForStatus(two, "resumed");
      instanceDown = false;
      await waitForSameCanvas(two, lou, 2, LEFT);
      await waitForSameCanvas(two, ray, 1, RIGHT);
      const live = two.sockets.filter((socket) => !socket.isClosed());
      if (live.length !== 1 || new URL(live[0].url()).pathname !== "/ws") {
        throw new Error(`live sockets: ${live.map((s) => s.url()).join(", ")}`);
      }
      await waitFor(two, () => window.canvasRelay.boards.every((board) => board.status === "joined"));
      // Its connections from before the crash are still the relay's peers until expired: not outlined as others'.
      if ((await two.locator('.selections g[data-user="tom"]').count()) !== 0) throw new Error("Tom's own old selection shown");
      await panel(two, LEFT).locator('.selections g[data-user="lou"] text', { hasText: "Lou" }).waitFor({ timeout: STEP_TIMEOUT_MS });
    });
    await sideBySide(pages, join(SCREENSHOTS, "two-pages.png"));
    mkdirSync(SCREENSHOTS, { recursive: true });
    await two.screenshot({ path: join(SCREENSHOTS, "two-canvases.png") });
    console.log(`passed; pictures in ${join(SCREENSHOTS, "two-pages.png")} and two-canvases.png`);
  } catch (error) {
    mkdirSync(SCREENSHOTS, { recursive: true });
    for (const page of opened.filter((p) => !p.isClosed())) {
      await page.screenshot({ path: join(SCREENSHOTS, `failure-${page.label}.png`) });
    }
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
