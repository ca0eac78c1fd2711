// The listener registry behind `board.on(...)` and `client.on(...)`. It owns one promise to the app: a listener
// that throws never breaks the client. The exception is caught, handed to the registry's "error" listeners as
// a RelayError-like object with code "listener", and if there are none (or an "error" listener is what threw),
// written to console.error. Nothing here knows about sockets or canvases.

/**
 * @typedef {(...args: any[]) => void} Listener
 */

export class Emitter {
  /** Listeners by event type, in registration order. @type {Map<string, Listener[]>} */
  #listeners = new Map();

  /**
   * Adds `listener` for `type`; adding the same function twice calls it twice.
   * @param {string} type
   * @param {Listener} listener
   */
  on(type, listener) {
    if (typeof listener !== "function") throw new TypeError(`canvas-relay: the "${type}" listener is not a function`);
    const list = this.#listeners.get(type) ?? [];
    this.#listeners.set(type, [...list, listener]);
  }

  /**
   * Removes one registration of `listener` for `type` (a no-op if it has none).
   * @param {string} type
   * @param {Listener} listener
   */
  off(type, listener) {
    const list = this.#listeners.get(type);
    if (!list) return;
    const at = list.lastIndexOf(listener);
    if (at >= 0) this.#listeners.set(type, [...list.slice(0, at), ...list.slice(at + 1)]);
  }

  /**
   * Whether anything listens to `type`.
   * @param {string} type
   */
  has(type) {
    return (this.#listeners.get(type)?.length ?? 0) > 0;
  }

  /**
   * Calls every listener of `type` with `args`, each in its own try/catch. Listeners added or removed while
   * dispatching take effect from the next dispatch (the list is copied on write).
   * @param {string} type
   * @param {...unknown} args
   */
  dispatch(type, ...args) {
    const list = this.#listeners.get(type);
    if (!list) return;
    for (const listener of list) {
      try {
        listener(...args);
      } catch (error) {
        this.#reportListenerError(type, error);
      }
    }
  }

  /**
   * A listener threw: tell the "error" listeners, unless an "error" listener is the one that threw (that would
   * recurse), in which case, or with none, console.error is the last resort.
   * @param {string} type
   * @param {unknown} error
   */
  #reportListenerError(type, error) {
    if (type !== "error" && this.has("error")) {
      const report = Object.assign(new Error(`a "${type}" listener threw: ${describe(error)}`), {
        code: "listener",
        cause: error,
        event: type,
      });
      for (const listener of this.#listeners.get("error") ?? []) {
        try {
          listener(report);
        } catch (again) {
          console.error(`canvas-relay: an "error" listener threw`, again);
        }
      }
      return;
    }
    console.error(`canvas-relay: a "${type}" listener threw`, error);
  }
}

/** @param {unknown} error */
function describe(error) {
  return error instanceof Error ? error.message : String(error);
}
