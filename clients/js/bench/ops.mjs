// Measures the SDK against a real relay: (1) acked ops per second, with N clients (each its own RelayClient,
// socket and canvas) keeping up to W creates in flight for D seconds; (2) what the SDK adds to one round trip,
// sequential create -> ack, a raw `ws` socket on /ws/{canvas} against `board.create` on the same relay.
//
//   node bench/ops.mjs --url ws://127.0.0.1:8080 [--clients 4] [--duration 5] [--window 32] [--rounds 500]
//   node bench/ops.mjs --relay-bin /work/bin/canvas-relay-release [...]   # starts its own relay first
//
// The relay should run with `--rate-limit 0` (its default of 200 logged messages/s per connection would be the
// figure measured); --relay-bin starts it so. The SDK's own limiter is off here for the same reason.

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { WebSocket } from "ws";
import { RelayClient } from "../src/index.js";

const { values: args } = parseArgs({
  options: {
    url: { type: "string", default: "ws://127.0.0.1:8080" },
    clients: { type: "string", default: "4" },
    duration: { type: "string", default: "5" },
    window: { type: "string", default: "32" },
    rounds: { type: "string", default: "500" },
    "relay-bin": { type: "string" },
  },
});
const CLIENTS = Number(args.clients);
const DURATION_MS = Number(args.duration) * 1000;
const WINDOW = Number(args.window);
const ROUNDS = Number(args.rounds);
const RUN = Date.now().toString(36); // canvases of their own on every run

/** Starts a relay on a free port with --rate-limit 0; resolves with its ws origin and a stop function. */
function startRelay(bin) {
  const dir = mkdtempSync(join(tmpdir(), "canvas-relay-bench-"));
  const child = spawn(bin, ["serve", "--listen", "127.0.0.1:0", "--db", join(dir, "relay.db"), "--rate-limit", "0"], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let log = "";
  return new Promise((resolve, reject) => {
    child.on("exit", (code) => reject(new Error(`the relay exited (${code}):\n${log}`)));
    child.stderr.on("data", (chunk) => {
      log += chunk;
      const match = /listening on (\S+)/.exec(log.replace(/\x1b\[[0-9;]*m/g, ""));
      if (match) {
        child.stderr.removeAllListeners("data").resume();
        resolve({ url: `ws://${match[1]}`, stop: () => (child.kill("SIGTERM"), rmSync(dir, { recursive: true, force: true })) });
      }
    });
  });
}

/** Phase 1: every client keeps WINDOW creates in flight until the deadline; counts the acked ones. */
async function throughput(url) {
  const clients = Array.from({ length: CLIENTS }, (_, i) =>
    new RelayClient({ url, user: `bench-${i}`, WebSocket, rateLimit: false }));
  const boards = clients.map((client, i) => client.canvas(`bench-${RUN}-${i}`));
  await Promise.all(boards.map((board) => board.ready));
  const acked = boards.map(() => 0);
  const failed = boards.map(() => 0);
  const started = Date.now();
  const cpu = process.cpuUsage();
  const deadline = started + DURATION_MS;
  let next = 0;
  const lane = async (board, i) => {
    while (Date.now() < deadline) {
      try {
        await board.create({ id: `o${next++}`, kind: "rect", x: 1, y: 2, w: 3, h: 4 });
        acked[i] += 1;
      } catch {
        failed[i] += 1;
      }
    }
  };
  await Promise.all(boards.flatMap((board, i) => Array.from({ length: WINDOW }, () => lane(board, i))));
  const seconds = (Date.now() - started) / 1000;
  const { user, system } = process.cpuUsage(cpu);
  for (const client of clients) client.close();
  const total = acked.reduce((a, b) => a + b, 0) / seconds;
  return { perClient: acked.map((n) => n / seconds), total, failed: failed.reduce((a, b) => a + b, 0), cpu: (user + system) / 1e4 / seconds };
}

/** Phase 2a: a bare socket, one create at a time: send, wait for its ack. */
async function rawRoundTrips(url, rounds) {
  const socket = new WebSocket(`${url}/ws/bench-raw-${RUN}?user=bench-raw`);
  const frames = [];
  let wake = () => {};
  socket.on("message", (data) => {
    frames.push(JSON.parse(String(data)));
    wake();
  });
  const next = (type) => new Promise((resolve) => {
    const look = () => {
      const at = frames.findIndex((frame) => frame.type === type);
      if (at >= 0) return resolve(frames.splice(at, 1)[0]);
      wake = look;
    };
    look();
  });
  await new Promise((resolve, reject) => (socket.once("open", resolve), socket.once("error", reject)));
  await next("welcome");
  const times = [];
  for (let i = 0; i < rounds; i++) {
    const t0 = performance.now();
    socket.send(JSON.stringify({ type: "object-create", data: { id: `r${i}`, kind: "rect", x: 1 }, ref: `r${i}`, idempotency_key: `raw-${RUN}-${i}` }));
    await next("ack");
    times.push(performance.now() - t0);
  }
  socket.close();
  return times;
}

/** Phase 2b: the same through the SDK. */
async function sdkRoundTrips(url, rounds) {
  const client = new RelayClient({ url, user: "bench-sdk", WebSocket, rateLimit: false });
  const board = client.canvas(`bench-sdk-${RUN}`);
  await board.ready;
  const times = [];
  for (let i = 0; i < rounds; i++) {
    const t0 = performance.now();
    await board.create({ id: `s${i}`, kind: "rect", x: 1 });
    times.push(performance.now() - t0);
  }
  client.close();
  return times;
}

const quantile = (sorted, q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
const ms = (value) => `${value.toFixed(3)} ms`;

async function main() {
  const relay = args["relay-bin"] ? await startRelay(args["relay-bin"]) : null;
  const url = relay?.url ?? args.url;
  try {
    console.log(`relay ${url}; ${CLIENTS} clients x ${WINDOW} in flight for ${DURATION_MS / 1000} s; ${ROUNDS} round trips each way`);
    const result = await throughput(url);
    console.log("\nacked creates per second (SDK, each client its own socket and canvas)");
    result.perClient.forEach((rate, i) => console.log(`  client ${i}   ${rate.toFixed(0).padStart(8)}`));
    console.log(`  total      ${result.total.toFixed(0).padStart(8)}${result.failed ? `   (${result.failed} refused)` : ""}`);
    console.log(`  (this process, all ${CLIENTS} clients: ${result.cpu.toFixed(0)}% of one core)`);

    const warm = 50;
    const [raw, sdk] = [(await rawRoundTrips(url, ROUNDS + warm)).slice(warm), (await sdkRoundTrips(url, ROUNDS + warm)).slice(warm)];
    const rows = [["raw ws", raw.sort((a, b) => a - b)], ["SDK", sdk.sort((a, b) => a - b)]];
    console.log("\nsequential create -> ack round trip     p50          p99          mean");
    for (const [name, times] of rows) {
      const mean = times.reduce((a, b) => a + b, 0) / times.length;
      console.log(`  ${name.padEnd(36)} ${ms(quantile(times, 0.5)).padEnd(12)} ${ms(quantile(times, 0.99)).padEnd(12)} ${ms(mean)}`);
    }
    const [r, s] = [rows[0][1], rows[1][1]];
    console.log(`  ${"SDK extra".padEnd(36)} ${ms(quantile(s, 0.5) - quantile(r, 0.5)).padEnd(12)} ${ms(quantile(s, 0.99) - quantile(r, 0.99))}`);
  } finally {
    relay?.stop();
  }
}

await main();
