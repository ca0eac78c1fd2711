// @canvas-relay/client: the JavaScript SDK of canvas-relay. This file only re-exports; the API is documented in
// README.md and typed in index.d.ts. client.js owns the socket, board.js one canvas, emitter.js the listeners,
// limiter.js the socket's allowance of logged frames, answers.js the waits for the answers to joins and leaves,
// frames.js what a board prepares to send, http.js the requests of the history calls, error.js RelayError.

export { RelayClient } from "./client.js";
export { Board, RelayError, applyOp } from "./board.js";
export { Emitter } from "./emitter.js";
