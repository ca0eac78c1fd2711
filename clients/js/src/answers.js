// What the client waits to hear from the relay about its joins and leaves on the current socket (PROTOCOL.md v1.2
// "Leaving"): a join's welcome (or refusal), a leave's `left`. Each wait is bounded by `answerTimeout`: past it
// the client drops the socket and reconnects, since a fresh socket owes nothing and rejoins every open board.
// A leave the relay refused (an older relay answers a leave of a canvas still joining with invalid_frame, and
// may refuse one with rate_limited) is sent again once it can be taken: after the join's welcome, or a second
// later. A new join of a canvas being left waits for its `left`. Everything here belongs to one socket.

/**
 * A leave waiting for its `left`.
 * @typedef {object} Leaving
 * @property {ReturnType<typeof setTimeout>} expiry  when the wait is over
 * @property {ReturnType<typeof setTimeout> | null} retry  a refused leave, sent again shortly
 * @property {boolean} refused  refused as not joined (yet): sent again after the welcome that follows
 */

export class Answers {
  /** ms an answer may take */
  #timeout;
  /** @type {(why: string) => void} gives up on the socket */
  #expired;
  /** @type {(canvas: string) => void} sends a leave again */
  #resend;
  /** joins written and not answered yet, by canvas @type {Map<string, ReturnType<typeof setTimeout>>} */
  #joins = new Map();
  /** leaves written and not answered yet, by canvas @type {Map<string, Leaving>} */
  #leaves = new Map();

  /** @param {number} timeout @param {(why: string) => void} expired @param {(canvas: string) => void} resend */
  constructor(timeout, expired, resend) {
    this.#timeout = timeout;
    this.#expired = expired;
    this.#resend = resend;
  }

  /** A join of `canvas` went out. @param {string} canvas */
  joinSent(canvas) {
    this.#answered(canvas);
    this.#joins.set(canvas, this.#expiry(`no answer to the join of canvas ${canvas}`));
  }

  /** The relay answered the join of `canvas` (a welcome or a refusal), or it no longer matters. @param {string} canvas */
  #answered(canvas) {
    const expiry = this.#joins.get(canvas);
    if (expiry !== undefined) clearTimeout(expiry);
    this.#joins.delete(canvas);
  }

  /** A leave of `canvas` went out (whatever its join was doing: the leave answers for it). @param {string} canvas */
  leaveSent(canvas) {
    this.#answered(canvas);
    this.#forget(canvas);
    const expiry = this.#expiry(`no answer to the leave of canvas ${canvas}`);
    this.#leaves.set(canvas, { expiry, retry: null, refused: false });
  }

  /** @param {string} canvas */
  isLeaving(canvas) {
    return this.#leaves.has(canvas);
  }

  /** `left` came for `canvas`: returns whether it answered a leave of ours. A removal through the API (`left` with
   *  code 4003) also answers a join still waiting. @param {string} canvas */
  left(canvas) {
    this.#answered(canvas);
    return this.#forget(canvas);
  }

  /**
   * A frame about `canvas` that the board does not see: the answer to its join (clears the wait), or, while the
   * canvas is being left, what tells whether the leave was taken. Returns whether the frame is the leave's
   * business (then no board gets it).
   * @param {string} canvas @param {Record<string, any>} frame
   */
  heard(canvas, frame) {
    const refusal = frame.type === "error" && frame.ref === undefined;
    if (frame.type === "welcome" || refusal) this.#answered(canvas);
    const leaving = this.#leaves.get(canvas);
    if (!leaving) return false;
    if (frame.type === "welcome" && leaving.refused) {
      leaving.refused = false;
      this.#resend(canvas); // joined now: the leave it refused is taken this time
    } else if (refusal && frame.code === "rate_limited" && leaving.retry === null) {
      leaving.retry = setTimeout(() => {
        leaving.retry = null;
        if (this.#leaves.get(canvas) === leaving) this.#resend(canvas);
      }, 1000);
    } else if (refusal && frame.code === "invalid_frame") {
      leaving.refused = true; // not joined yet: its welcome follows (else the wait runs out)
    }
    return true;
  }

  /** Stops every wait (the socket is gone). */
  clear() {
    for (const canvas of [...this.#joins.keys()]) this.#answered(canvas);
    for (const canvas of [...this.#leaves.keys()]) this.#forget(canvas);
  }

  /** @param {string} canvas @returns {boolean} whether a leave was waiting */
  #forget(canvas) {
    const leaving = this.#leaves.get(canvas);
    if (!leaving) return false;
    clearTimeout(leaving.expiry);
    if (leaving.retry !== null) clearTimeout(leaving.retry);
    this.#leaves.delete(canvas);
    return true;
  }

  /** @param {string} why */
  #expiry(why) {
    return setTimeout(() => this.#expired(why), this.#timeout);
  }
}
