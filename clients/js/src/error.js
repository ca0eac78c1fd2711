// RelayError: what the SDK rejects with, throws and emits as "error". Its `code` is the contract's (an error frame's
// `code`) or the SDK's own; the list is in index.d.ts. Nothing else lives here, so that every module can use it.

/** An error with the contract's `code` ("forbidden", "rate_limited", ...) or the SDK's ("left", "closed"). */
export class RelayError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {Record<string, any>} [frame] the server frame that said so, if one did
   */
  constructor(code, message, frame) {
    super(message);
    this.name = "RelayError";
    /** @type {string} */
    this.code = code;
    /** @type {Record<string, any> | undefined} */
    this.frame = frame;
  }
}
