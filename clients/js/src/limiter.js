// The socket's allowance of logged frames (ops and joins: the relay charges both to its --rate-limit), kept on
// the client's side so that the excess waits in order instead of being refused: a token bucket, and a queue of
// frames that found it empty. It writes through the function the client gives it, and knows nothing of the
// socket but that; what waits is dropped with the socket, or with the board it belongs to.

/**
 * A frame waiting for a token.
 * @typedef {object} Queued
 * @property {string} canvas   the board it belongs to: dropped if that board leaves
 * @property {string} text     the frame
 * @property {boolean} join    a join (a leave sent before it goes out drops it instead of telling the relay)
 */

export class Limiter {
  /** @type {{ rate: number, burst: number } | null} the settings (null: off, every frame goes at once) */
  #settings;
  /** @type {(queued: Queued) => void} writes a frame whose turn came */
  #write;
  /** @type {Queued[]} oldest first */
  #queue = [];
  #tokens = 0;
  #refilledAt = 0;
  /** @type {ReturnType<typeof setTimeout> | null} */
  #timer = null;

  /** @param {{ rate: number, burst: number } | null} settings @param {(queued: Queued) => void} write */
  constructor(settings, write) {
    this.#settings = settings;
    this.#write = write;
    this.#tokens = settings?.burst ?? 0;
    this.#refilledAt = Date.now();
  }

  /** A frame goes out now if a token is left and nothing waits before it; else it waits in order.
   *  @param {Queued} queued */
  push(queued) {
    if (!this.#settings) return this.#write(queued);
    this.#queue.push(queued);
    this.#drain();
  }

  /** Drops what waits for `canvas` (its board left); returns whether its join was among it. @param {string} canvas */
  drop(canvas) {
    const join = this.#queue.some((queued) => queued.canvas === canvas && queued.join);
    this.#queue = this.#queue.filter((queued) => queued.canvas !== canvas);
    return join;
  }

  /** Drops everything (the socket is gone: what waited is sent again after the next welcomes). */
  clear() {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    this.#queue = [];
  }

  #drain() {
    const limit = this.#settings;
    if (!limit) return;
    const now = Date.now();
    this.#tokens = Math.min(limit.burst, this.#tokens + ((now - this.#refilledAt) * limit.rate) / 1000);
    this.#refilledAt = now;
    while (this.#queue.length > 0 && this.#tokens >= 1) {
      this.#tokens -= 1;
      this.#write(/** @type {Queued} */ (this.#queue.shift()));
    }
    if (this.#queue.length > 0 && this.#timer === null) {
      const wait = Math.max(1, ((1 - this.#tokens) * 1000) / limit.rate);
      this.#timer = setTimeout(() => {
        this.#timer = null;
        this.#drain();
      }, wait);
    }
  }
}
