// What a board sends, prepared before it goes: JSON copies of the app's data (the app may go on mutating its own),
// the frame's text checked against the relay's limit (a frame over its --max-frame-size would get the whole socket
// closed with 1009: it is refused here instead, with "too_large"), the trailing throttle of cursors and presence
// states, and op promises that never become unhandled rejections. Nothing here knows about sockets or canvases.

import { RelayError } from "./error.js";

/** The text of `frame`, or a RelayError "too_large" thrown when it is over `limit` bytes (UTF-8).
 *  @param {Record<string, unknown>} frame @param {number} limit @returns {string} */
export function fitting(frame, limit) {
  const text = JSON.stringify(frame);
  const bytes = byteLength(text, limit);
  if (bytes > limit) {
    const what = `a ${frame.type} frame of ${bytes} bytes`;
    throw new RelayError("too_large", `canvas-relay: ${what} is over the ${limit} the relay takes (maxFrameSize)`);
  }
  return text;
}

/** Trailing-edge throttle: at most one call per `interval` ms; the latest value always goes out.
 *  @param {number} interval @param {(value: any) => void} send */
export function throttle(interval, send) {
  let last = -Infinity;
  /** @type {ReturnType<typeof setTimeout> | null} */
  let timer = null;
  /** @type {unknown} */
  let latest;
  const flush = () => {
    timer = null;
    last = Date.now();
    send(latest);
  };
  return {
    /** @param {unknown} value */
    push(value) {
      latest = value;
      if (timer !== null) return;
      const wait = last + interval - Date.now();
      if (wait <= 0) flush();
      else timer = setTimeout(flush, wait);
    },
    cancel() {
      if (timer !== null) clearTimeout(timer);
      timer = null;
    },
  };
}

/** @template T @param {T & { id: string }} data @returns {T & { id: string }} */
export function requireId(data) {
  if (!data || typeof data.id !== "string") throw new TypeError("canvas-relay: an object op needs a string `id`");
  return data;
}

/** @param {unknown} value */
export function copy(value) {
  return value === undefined ? null : JSON.parse(JSON.stringify(value));
}

/** UTF-8 bytes of `text`, counted exactly only when it could pass `limit`. @param {string} text @param {number} limit */
export function byteLength(text, limit) {
  return text.length * 3 <= limit ? text.length : new TextEncoder().encode(text).length;
}

/** Op promises may be left un-awaited (fire and forget): the rollback is a "change" either way, and Node must
 *  not die of an unhandled rejection. @template T @param {Promise<T>} promise */
export function handled(promise) {
  promise.catch(() => {});
  return promise;
}
