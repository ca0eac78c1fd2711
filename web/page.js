// What every page of the canvas app shares, and nothing about drawing (that is draw.js): who this tab is (from
// the address: &name, &user, &token, &role), the page's one RelayClient (one WebSocket, `GET /ws`, for every
// canvas the page shows), the connection-state badge derived from the client and its boards, and the join form.

import { RelayClient } from "./sdk/index.js";

export const params = new URLSearchParams(location.search);

/** Who this tab is. One user per tab unless the address names one: sessionStorage survives reloads, not new
 *  tabs. */
export function identity() {
  const name = params.get("name") || `guest-${Math.random().toString(36).slice(2, 6)}`;
  const user = params.get("user") || sessionStorage.getItem("canvas-relay-user") || `u-${crypto.randomUUID().slice(0, 8)}`;
  sessionStorage.setItem("canvas-relay-user", user);
  return { user, name, token: params.get("token") || undefined, role: params.get("role") || undefined };
}

/** The page's client: its socket goes to the page's own origin. */
export function connect(who) {
  const url = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}`;
  return new RelayClient({ url, ...who });
}

/** How the join of a board ended, as its "change" events say. */
const JOINS = new Set(["welcome", "resume", "reload"]);

/**
 * Shows the page's connection state in `badge` (`data-status` and text), for `client` and the `boards` it
 * shows: "connecting" until every board has its first welcome, "connected", "reconnecting" from a lost socket
 * until every board has rejoined, then "resumed" (every board replayed what it missed) or "reloaded" (at least
 * one could not resume and loaded the state again), and "closed" when the client or every board is closed.
 */
export function showStatus(badge, client, boards) {
  let reconnected = false;
  const joins = new Map(); // board -> how its latest join on the current socket ended
  const derive = () => {
    const live = boards.filter((board) => board.status !== "closed");
    if (client.status === "closed" || live.length === 0) return "closed";
    if (client.status !== "connected") return client.status; // "connecting" or "reconnecting"
    if (live.some((board) => board.status !== "joined" || !joins.has(board))) {
      return reconnected ? "reconnecting" : "connecting";
    }
    if (!reconnected) return "connected";
    return live.some((board) => joins.get(board) === "reload") ? "reloaded" : "resumed";
  };
  const render = () => {
    const status = derive();
    badge.dataset.status = status;
    badge.textContent = status;
    badge.title = client.closedBy ? `${client.closedBy.code}: ${client.closedBy.message}` : "";
  };
  client.on("status", (status) => {
    if (status === "reconnecting") {
      reconnected = true;
      joins.clear(); // every board joins again on the next socket
    }
    render();
  });
  for (const board of boards) {
    board.on("status", render);
    board.on("change", ({ reason }) => {
      if (!JOINS.has(reason)) return;
      joins.set(board, reason);
      render();
    });
  }
  render();
}

/** Fills `form` from the address and, on submit, loads the page again with the form's fields (only those:
 *  the user id stays in sessionStorage). */
export function joinForm(form, defaults) {
  for (const [field, value] of Object.entries(defaults)) form.elements[field].value = value;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    for (const field of Object.keys(defaults)) next.set(field, form.elements[field].value);
    location.search = next.toString();
  });
}
