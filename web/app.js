// The canvas app served at `/`: rectangles, cursors, presence and the connection state of one canvas, drawn
// with SVG. All protocol work is in relay-client.js; this file is UI only.
//
//   /?canvas=team-1&name=Ann            (optional: &user=ann, &token=<JWT> when the relay requires one,
//                                        &role=viewer for a read-only page)

import { CanvasSession } from "./relay-client.js";

const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#e8590c", "#1971c2", "#2f9e44", "#ae3ec9", "#f08c00", "#0c8599", "#c2255c", "#5f3dc4"];
const SEND_EVERY_MS = 40; // drags and cursors: 25 updates/s, well inside the relay's rate limit
const CURSOR_STALE_MS = 15000;
const REACTION_SHOWN_MS = 2500;

const params = new URLSearchParams(location.search);
const canvas = params.get("canvas") || "lobby";
const name = params.get("name") || `guest-${Math.random().toString(36).slice(2, 6)}`;
// One user per tab unless the URL names one: sessionStorage survives reloads, not new tabs.
const user = params.get("user") || sessionStorage.getItem("canvas-relay-user") || `u-${crypto.randomUUID().slice(0, 8)}`;
sessionStorage.setItem("canvas-relay-user", user);

const $ = (selector) => document.querySelector(selector);
const board = $("#board");
const objectLayer = $("#objects");
const cursorLayer = $("#cursors");

/** A stable colour per user id. */
function colorOf(id) {
  let hash = 0;
  for (const c of id) hash = (hash * 31 + c.charCodeAt(0)) >>> 0;
  return COLORS[hash % COLORS.length];
}

function svg(tag, attributes = {}) {
  const element = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  return element;
}

/** Pointer position in board coordinates. */
function point(event) {
  const box = board.getBoundingClientRect();
  return { x: Math.round(event.clientX - box.left), y: Math.round(event.clientY - box.top) };
}

/** Calls `f` at most once per `ms`, always with the latest arguments, and once more after the last call. */
function throttle(f, ms) {
  let last = 0, timer = null, latest = null;
  return (...args) => {
    latest = args;
    const wait = last + ms - Date.now();
    if (wait <= 0) {
      last = Date.now();
      f(...latest);
    } else if (!timer) {
      timer = setTimeout(() => { timer = null; last = Date.now(); f(...latest); }, wait);
    }
  };
}

const session = new CanvasSession({
  canvas, user, name, token: params.get("token") ?? undefined, role: params.get("role") ?? undefined,
});
const isViewer = () => session.role === "viewer";
let selected = null;

// ---- rendering -------------------------------------------------------------------------------------------

const rects = new Map(); // object id -> <rect>

function renderObjects() {
  const objects = session.objects();
  for (const [id, element] of rects) {
    if (!objects.has(id)) { element.remove(); rects.delete(id); }
  }
  for (const [id, object] of objects) {
    if (object.kind !== "rect") continue;
    let element = rects.get(id);
    if (!element) {
      element = svg("rect", { class: "object", "data-id": id });
      rects.set(id, element);
      objectLayer.append(element);
    }
    element.setAttribute("x", object.x);
    element.setAttribute("y", object.y);
    element.setAttribute("width", object.w);
    element.setAttribute("height", object.h);
    element.setAttribute("fill", object.color ?? "#adb5bd");
    element.classList.toggle("selected", id === selected);
  }
}

function renderPresence() {
  const list = $("#presence");
  list.replaceChildren(...[...session.presence.values()].map((p) => {
    const item = document.createElement("li");
    item.dataset.user = p.user;
    const dot = document.createElement("span");
    dot.className = "dot";
    dot.style.background = colorOf(p.user);
    item.append(dot, `${p.name ?? p.user}${p.user === session.user ? " (you)" : ""}`);
    return item;
  }));
  for (const [id, cursor] of cursors) {
    if (!session.presence.has(id)) { cursor.element.remove(); cursors.delete(id); }
  }
}

const cursors = new Map(); // user -> {element, seen}

function showCursor(from, data) {
  if (from === session.user || typeof data?.x !== "number") return;
  let cursor = cursors.get(from);
  if (!cursor) {
    const element = svg("g", { "data-user": from });
    const label = svg("text", { x: 12, y: 24, fill: colorOf(from) });
    label.textContent = session.presence.get(from)?.name ?? from;
    element.append(svg("path", { d: "M0 0 L0 16 L4 12 L8 20 L11 19 L7 11 L12 11 Z", fill: colorOf(from) }), label);
    cursorLayer.append(element);
    cursor = { element };
    cursors.set(from, cursor);
  }
  cursor.seen = Date.now();
  cursor.element.style.transform = `translate(${data.x}px, ${data.y}px)`;
}

setInterval(() => {
  for (const [id, cursor] of cursors) {
    if (Date.now() - cursor.seen > CURSOR_STALE_MS) { cursor.element.remove(); cursors.delete(id); }
  }
}, 1000);

/** A reaction floating up over the board for a moment, labelled with who sent it. */
function showReaction(from, emoji) {
  const element = document.createElement("div");
  element.className = "reaction";
  element.dataset.from = from;
  element.textContent = `${emoji} ${session.presence.get(from)?.name ?? from}`;
  element.style.left = `${10 + Math.random() * 70}%`;
  $("#reactions").append(element);
  setTimeout(() => element.remove(), REACTION_SHOWN_MS);
}

function showStatus(status) {
  const badge = $("#status");
  badge.dataset.status = status;
  badge.textContent = status;
}

function showProblem(text) {
  const problem = $("#problem");
  problem.hidden = !text;
  problem.textContent = text ?? "";
}

session.onchange = () => { renderObjects(); renderPresence(); };
session.onstatus = (status) => {
  showStatus(status);
  if (status !== "reconnecting") showProblem(null);
  $("#role").hidden = !isViewer();
};
session.onevent = (frame) => {
  if (frame.type === "reaction" && typeof frame.data?.emoji === "string") showReaction(frame.from, frame.data.emoji);
};
session.oncursor = showCursor;
session.onerror = (frame) => showProblem(`${frame.code}: ${frame.message}`);

// ---- input -----------------------------------------------------------------------------------------------

const sendCursor = throttle((p) => session.cursor(p), SEND_EVERY_MS);
const sendMove = throttle((id, x, y) => session.send("object-update", { id, x, y }), SEND_EVERY_MS);
let gesture = null; // {kind: "draw", start, ghost} or {kind: "move", id, offset}

$("#react").addEventListener("click", () => {
  session.emit("reaction", { emoji: "🎉" });
  showReaction(session.user, "🎉");
});

board.addEventListener("pointerdown", (event) => {
  if (isViewer()) return; // a viewer's page shows cursors and presence, and edits nothing
  board.setPointerCapture(event.pointerId);
  const p = point(event);
  const id = event.target.dataset?.id;
  if (id) {
    const object = session.objects().get(id);
    selected = id;
    gesture = { kind: "move", id, offset: { x: p.x - object.x, y: p.y - object.y } };
  } else {
    selected = null;
    const ghost = svg("rect", { class: "ghost", x: p.x, y: p.y, width: 0, height: 0 });
    objectLayer.append(ghost);
    gesture = { kind: "draw", start: p, ghost };
  }
  renderObjects();
});

board.addEventListener("pointermove", (event) => {
  const p = point(event);
  sendCursor(p);
  if (gesture?.kind === "draw") {
    const box = boxOf(gesture.start, p);
    for (const [key, value] of Object.entries({ x: box.x, y: box.y, width: box.w, height: box.h })) {
      gesture.ghost.setAttribute(key, value);
    }
  } else if (gesture?.kind === "move") {
    sendMove(gesture.id, p.x - gesture.offset.x, p.y - gesture.offset.y);
  }
});

board.addEventListener("pointerup", (event) => {
  const p = point(event);
  if (gesture?.kind === "draw") {
    gesture.ghost.remove();
    const box = boxOf(gesture.start, p);
    if (box.w >= 4 && box.h >= 4) {
      const id = `rect-${crypto.randomUUID().slice(0, 8)}`;
      session.send("object-create", { id, kind: "rect", ...box, color: colorOf(session.user) });
      selected = id;
    }
  } else if (gesture?.kind === "move") {
    sendMove(gesture.id, p.x - gesture.offset.x, p.y - gesture.offset.y);
  }
  gesture = null;
  renderObjects();
});

function boxOf(a, b) {
  return { x: Math.min(a.x, b.x), y: Math.min(a.y, b.y), w: Math.abs(a.x - b.x), h: Math.abs(a.y - b.y) };
}

document.addEventListener("keydown", (event) => {
  if (isViewer()) return;
  if ((event.key === "Delete" || event.key === "Backspace") && selected && event.target === document.body) {
    session.send("object-delete", { id: selected });
    selected = null;
  }
});

// ---- joining ---------------------------------------------------------------------------------------------

const form = $("#join");
form.canvas.value = canvas;
form.name.value = name;
form.addEventListener("submit", (event) => {
  event.preventDefault();
  const next = new URLSearchParams({ canvas: form.canvas.value, name: form.name.value });
  location.search = next.toString();
});

showStatus(session.status);
session.connect();
// For tests and the curious: `canvasRelay.session` in the console.
window.canvasRelay = { session };
