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
  board.leave();
  client.close();
  return [same, seq, comment, sent, x, users, status, board.seq, board.epoch, board.role, board.connection];
}
