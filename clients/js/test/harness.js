// What the SDK's tests share: real relay instances (the binary in RELAY_BIN) on ports picked here, so that an
// instance can be SIGKILLed and restarted on the same port; a redis-server of the test's own for the Redis bus;
// the HTTP API; and polling helpers with generous deadlines (tests assert behaviour, never timings).
// `node --test test/` also runs this file as a test file: it only defines things, so that is a no-op.

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { WebSocket } from "ws";
import { RelayClient } from "../src/index.js";

const PACKAGE = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const RELAY_BIN = resolve(PACKAGE, process.env.RELAY_BIN ?? "../../target/debug/canvas-relay");
export const API_KEY = "sdk-test-key";
/** Every scenario runs on both buses. */
export const BUSES = ["sqlite", "redis"];
const DEADLINE_MS = 20000;

export { WebSocket };

/** A loopback port nobody listens on now. */
export function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = /** @type {import("node:net").AddressInfo} */ (server.address());
      server.close(() => resolvePort(port));
    });
  });
}

/** Polls `check` until it returns something truthy (returned), or fails with `what` after the deadline. */
export async function waitFor(what, check, timeout = DEADLINE_MS) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${describe(last)})`);
    await sleep(25);
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function describe(value) {
  if (value instanceof Error) return value.stack ?? value.message;
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}

/** A redis-server of our own (no persistence), on a free port. */
async function startRedis(dir) {
  const port = await freePort();
  const args = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir];
  const child = spawn("redis-server", args, { stdio: "ignore" });
  const started = new Promise((_, reject) =>
    child.on("error", (error) =>
      reject(new Error(`redis-server could not start (${error.message}): the Redis-bus tests need it ` +
        "(apt-get install redis-server; scripts/test.sh installs it)"))));
  const up = waitFor("redis-server to answer PING", () => ping(port), 10000);
  await Promise.race([up, started]);
  return { port, url: `redis://127.0.0.1:${port}/0`, child };
}

function ping(port) {
  return new Promise((resolvePing) => {
    const socket = createConnection({ port, host: "127.0.0.1" });
    socket.on("error", () => resolvePing(false));
    socket.on("data", (data) => {
      socket.destroy();
      resolvePing(String(data).startsWith("+PONG"));
    });
    socket.on("connect", () => socket.write("PING\r\n"));
  });
}

/**
 * Relay instances that share one store: a SQLite file, or a redis-server started here. `cluster.instances[i]`
 * has `port`, `url` (ws origin) and `http`; `kill(i)` is a SIGKILL, `start(i)` (re)starts on the same port.
 */
export class Cluster {
  static async start({ bus, instances = 1, flags = [] }) {
    const cluster = new Cluster(bus, flags);
    if (bus === "redis") cluster.redis = await startRedis(cluster.dir);
    for (let i = 0; i < instances; i++) {
      const port = await freePort();
      cluster.instances.push({ port, url: `ws://127.0.0.1:${port}`, http: `http://127.0.0.1:${port}`, child: null, log: "" });
    }
    await Promise.all(cluster.instances.map((_, i) => cluster.start(i)));
    return cluster;
  }

  constructor(bus, flags) {
    this.bus = bus;
    this.flags = flags;
    this.dir = mkdtempSync(join(tmpdir(), `canvas-relay-sdk-${bus}-`));
    this.instances = [];
    this.clients = [];
    this.redis = null;
  }

  /** Starts (or restarts) instance `i` on its port; resolves once it logs "listening on". */
  start(i) {
    const instance = this.instances[i];
    const args = ["serve", "--listen", `127.0.0.1:${instance.port}`, "--db", join(this.dir, "relay.db"),
      "--api-key", API_KEY, "--heartbeat-interval", "500ms", "--presence-timeout", "2s", ...this.flags];
    if (this.redis) args.push("--bus", this.redis.url);
    const child = spawn(RELAY_BIN, args, { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, RUST_LOG: "warn,canvas_relay=info" } });
    instance.child = child;
    instance.log = "";
    return new Promise((resolveStart, reject) => {
      child.on("error", (error) => reject(new Error(`cannot run the relay ${RELAY_BIN} (${error.message}): set RELAY_BIN`)));
      child.on("exit", (code, signal) => {
        if (!instance.listening) reject(new Error(`relay ${i} exited early (${code ?? signal}):\n${instance.log}`));
      });
      instance.listening = false;
      child.stderr.on("data", (chunk) => {
        instance.log += chunk;
        if (!instance.listening && /listening on/.test(instance.log.replace(/\x1b\[[0-9;]*m/g, ""))) {
          instance.listening = true;
          resolveStart(instance);
        }
      });
    });
  }

  /** SIGKILL: the instance gets no chance to say goodbye; resolves once the process is gone. SIGTERM
   *  (`signal`) is a graceful shutdown: clients get close 1001. */
  kill(i, signal = "SIGKILL") {
    const { child } = this.instances[i];
    if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
    return new Promise((resolveKill) => {
      child.once("exit", () => resolveKill());
      child.kill(signal);
    });
  }

  /** A RelayClient on instance `i`, closed by `stop()`. */
  client(i, options = {}) {
    const client = new RelayClient({ url: this.instances[i].url, WebSocket, reconnect: { initialDelay: 100, maxDelay: 1000 }, ...options });
    this.clients.push(client);
    return client;
  }

  /** The HTTP API of instance `i` (default 0): resolves with the parsed JSON body, throws on a non-2xx. */
  async api(method, path, { instance = 0, body } = {}) {
    const response = await fetch(`${this.instances[instance].http}${path}`, {
      method,
      headers: { authorization: `Bearer ${API_KEY}`, ...(body ? { "content-type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${method} ${path}: HTTP ${response.status} ${text}`);
    return text ? JSON.parse(text) : null;
  }

  /** The canvas as the server has it: `{seq, epoch, objects, presence}`. */
  state(canvas, instance = 0) {
    return this.api("GET", `/api/v1/canvases/${canvas}`, { instance });
  }

  /** The retained log of a canvas, oldest first. */
  async log(canvas, instance = 0) {
    const body = await this.api("GET", `/api/v1/canvases/${canvas}/messages?since=0&limit=10000`, { instance });
    return Array.isArray(body) ? body : body.messages;
  }

  /** The relays' logs, for a failure message. */
  logs() {
    return this.instances.map((instance, i) => `--- relay ${i} (port ${instance.port}) ---\n${instance.log}`).join("\n");
  }

  async stop() {
    for (const client of this.clients) client.close();
    await Promise.all(this.instances.map((_, i) => this.kill(i)));
    if (this.redis) {
      const { child } = this.redis;
      await new Promise((r) => (child.exitCode !== null ? r() : (child.once("exit", r), child.kill("SIGKILL"))));
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * Runs `scenario(cluster)` on a fresh cluster; on failure, adds the relays' logs to the error.
 * @param {{ bus: string, instances?: number, flags?: string[] }} setup
 * @param {(cluster: Cluster) => Promise<void>} scenario
 */
export async function withCluster(setup, scenario) {
  const cluster = await Cluster.start(setup);
  try {
    await scenario(cluster);
  } catch (error) {
    if (process.env.RELAY_TEST_LOGS === "1" || !(error instanceof Error)) console.error(cluster.logs());
    throw Object.assign(error instanceof Error ? error : new Error(String(error)), {
      message: `${error instanceof Error ? error.message : error}\n(set RELAY_TEST_LOGS=1 for the relays' logs)`,
    });
  } finally {
    await cluster.stop();
  }
}

/** The objects of a board or of a server state, as a canonical JSON string (sorted by id, fields sorted). */
export function canonical(objects) {
  const entries = objects instanceof Map ? [...objects.entries()] : Object.entries(objects ?? {});
  return JSON.stringify(entries.sort(([a], [b]) => a.localeCompare(b)).map(([id, object]) => [id, sortKeys(object)]));
}

function sortKeys(value) {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.keys(value).sort().map((key) => [key, sortKeys(value[key])]));
  }
  return value;
}
