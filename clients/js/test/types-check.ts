// Type-level checks, run by `tsc --noEmit -p .` (never executed): the hand-written index.d.ts must describe
// what the JavaScript really defines (each implementation is assigned to its declared type), and the API
// must type the way the README uses it.

import * as declared from "../src/index.js"; // resolves to index.d.ts
import * as clientJs from "../src/client.js";
import * as boardJs from "../src/board.js";
import * as emitterJs from "../src/emitter.js";

// The implementations against their declarations.
export const relayClient: new (options: declared.RelayClientOptions) => declared.RelayClient = clientJs.RelayClient;
export const relayError: new (code: string, message: string) => declared.RelayError = boardJs.RelayError;
export const applyOp: typeof declared.applyOp = boardJs.applyOp;
export const emitter: new () => declared.Emitter = emitterJs.Emitter;
export function boardMatches(board: boardJs.Board): declared.Board {
  return board;
}
export function clientOptionsMatch(options: declared.RelayClientOptions): clientJs.RelayClientOptions {
  return options;
}

// The README's usage.
export async function usage(WebSocket: declared.WebSocketConstructor) {
  const client = new declared.RelayClient({ url: "ws://127.0.0.1:8080", user: "ann", name: "Ann", WebSocket });
  const board = client.canvas("team-1");
  const same: declared.Board = await board.ready;
  const seq: number = await board.create({ id: "r1", kind: "rect", x: 1 });
  await board.update({ id: "r1", x: 2 });
  await board.delete("r1");
  const comment: number = await board.publish("comment", { text: "hi" });
  const sent: boolean = board.emit("reaction", { emoji: "tada" });
  board.setPresence({ color: "#0af", selection: ["r1"] });
  board.moveCursor({ x: 10, y: 20 });
  board.on("change", (change) => change.reason satisfies declared.ChangeReason);
  board.on("presence", (peer) => peer.data);
  board.on("reset", (reset) => reset.epoch);
  board.on("error", (error) => error.code satisfies string);
  const x: unknown = board.objects.get("r1")?.x;
  const users: number = board.users.size + board.peers.size;
  const status: declared.ClientStatus = client.status;
  client.on("status", (next) => next satisfies declared.ClientStatus);
  try {
    await board.create({ id: "r2" });
  } catch (error) {
    if (error instanceof declared.RelayError) error.code satisfies string;
  }
  const past: declared.HistoryState = await board.history({ at: 3 });
  const shape: string | undefined = past.objects.get("r1")?.kind;
  const page: declared.VersionPage = await board.versions({ limit: 10 });
  const older = page.next === null ? null : await board.versions({ before: page.next });
  const name: string | null | undefined = page.versions[0]?.name;
  const named: { seq: number; name: string } = await board.nameVersion("before-review");
  const restored: { seq: number; ops: number } = await board.restore(named.seq);
  try {
    await board.history({ at: 1e9 });
  } catch (error) {
    if (error instanceof declared.RelayError && error.code === "seq_ahead") error.httpStatus satisfies number | null | undefined;
  }
  board.leave();
  client.close();
  return [same, seq, comment, sent, x, users, status, board.seq, board.epoch, board.role, board.connection,
    shape, older, name, restored.ops];
}

// The HTTP API's options: where it is, which credential, which fetch.
export function historyOptions(WebSocket: declared.WebSocketConstructor, fetch: typeof globalThis.fetch) {
  return new declared.RelayClient({ url: "wss://relay.example", WebSocket, apiKey: "k", httpUrl: "https://api.example/relay", fetch });
}
