// The client's HTTP half: requests to the relay's HTTP API, which a board's history calls use (PROTOCOL.md, v1.2
// "History"). It owns where they go (the socket's address with ws: -> http:, wss: -> https:, unless the app
// names another), how they authenticate (`Authorization: Bearer` with the API key, else the client's JWT, else
// nothing: a relay without --jwt-secret lets anyone use history), and how the contract's JSON errors become
// RelayErrors (`.code`, `.httpStatus`); and what goes into a URL (a canvas's path, a seq or a count). Which
// routes exist and what their answers mean is board.js's business.

import { RelayError } from "./error.js";

/** Codes for an error whose body names none (a v1 body is `{"error"}` alone, and a proxy's may be anything). */
const STATUS_CODES = new Map([
  [400, "bad_request"],
  [401, "unauthorized"],
  [403, "forbidden"],
  [404, "not_found"],
  [409, "conflict"],
  [410, "gone"],
  [413, "too_large"],
  [429, "rate_limited"],
]);

/**
 * What the client was given that HTTP requests need (client.js's options, read at each request so that a
 * token the app replaces in `client.options` is the one sent).
 * @typedef {object} HttpOptions
 * @property {string} [httpUrl]   http:// or https:// base of the API; default: the socket's `url`, ws -> http
 * @property {string} [apiKey]    the relay's --api-key
 * @property {string} [token]     the client's JWT
 * @property {typeof fetch} [fetch]
 */

/** @typedef {(method: string, path: string, body?: unknown) => Promise<any>} Request */

/**
 * Sends `method path` (path from `/api/v1/...`) with `body` as JSON, and resolves with the parsed answer; rejects
 * with a RelayError for an HTTP error (the body's `code`, or one for its status; `.httpStatus`), or with code
 * "network" (and `.cause`) when no answer came.
 * @param {string} url the client's WebSocket address, without a trailing slash
 * @param {HttpOptions} options
 * @returns {Request}
 */
export function requester(url, options) {
  const base = (options.httpUrl ?? url.replace(/^ws(s?):/i, "http$1:")).replace(/\/+$/, "");
  return async (method, path, body) => {
    const fetchFunction = options.fetch ?? globalThis.fetch;
    if (typeof fetchFunction !== "function") {
      throw new TypeError("canvas-relay: no global fetch here: pass one as the `fetch` option");
    }
    /** @type {Record<string, string>} */
    const headers = {};
    const credential = options.apiKey ?? options.token;
    if (credential) headers.authorization = `Bearer ${credential}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    const init = { method, headers, body: body === undefined ? undefined : JSON.stringify(body) };
    let status, text;
    try {
      const response = await fetchFunction(`${base}${path}`, init);
      status = response.status;
      text = await response.text();
    } catch (error) {
      const message = `canvas-relay: ${method} ${base}${path} got no answer: ${error instanceof Error ? error.message : error}`;
      throw Object.assign(new RelayError("network", message), { cause: error });
    }
    const answer = parsed(text);
    if (status >= 200 && status < 300) {
      if (answer !== undefined) return answer;
      throw Object.assign(new RelayError("bad_response", `canvas-relay: ${method} ${path} answered ${status} without JSON`), { httpStatus: status });
    }
    const code = typeof answer?.code === "string" ? answer.code : STATUS_CODES.get(status) ?? (status >= 500 ? "unavailable" : "bad_request");
    const message = typeof answer?.error === "string" ? answer.error : `${method} ${path}: HTTP ${status}`;
    throw Object.assign(new RelayError(code, message, answer), { httpStatus: status });
  };
}

/** `/api/v1/canvases/{canvas}`. A valid id ([A-Za-z0-9._:-]) needs no escaping, and the relay does not decode
 *  its path, so ':' is left as it is; anything else is escaped, and refused there rather than routed elsewhere.
 *  @param {string} canvas */
export function canvasPath(canvas) {
  return `/api/v1/canvases/${encodeURIComponent(canvas).replace(/%3A/gi, ":")}`;
}

/** `value` if it is a whole number ≥ 0 (a seq or a count), else a TypeError naming `what`.
 *  @param {unknown} value @param {string} what @returns {number} */
export function count(value, what) {
  if (typeof value === "number" && Number.isSafeInteger(value) && value >= 0) return value;
  throw new TypeError(`canvas-relay: \`${what}\` must be a whole number ≥ 0, not ${JSON.stringify(value)}`);
}

/** The JSON object in `text`, or undefined when it holds none. @param {string} text @returns {Record<string, any> | undefined} */
function parsed(text) {
  try {
    const value = JSON.parse(text);
    return value && typeof value === "object" ? value : undefined;
  } catch {
    return undefined;
  }
}
