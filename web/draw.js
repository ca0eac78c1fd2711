// One board of the canvas app, drawn with SVG; a page may mount any number of them. `mountBoard` builds the
// board's panel inside an element and owns everything about that one canvas on screen: its rectangles (drag on
// empty space draws one, drag moves one, select + Delete removes it), the named cursors and selections of the
// other connections (their presence state: `{ selection: [ids], color }`), who is here, the 🎉 reaction (an
// ephemeral event), the viewer badge and the problem text. It can show a past state of the canvas instead of the
// live one, read-only (`view.showPast`: what the history panel, history.js, picked). It talks only to the SDK
// Board it is given (clients/js, served at /app/sdk/); the socket, the status badge and the address are the
// page's (page.js).

const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#e8590c", "#1971c2", "#2f9e44", "#ae3ec9", "#f08c00", "#0c8599", "#c2255c", "#5f3dc4"];
const SEND_EVERY_MS = 40; // drags and cursors: 25 updates/s, well inside the relay's rate limits
const CURSOR_STALE_MS = 15000;
const REACTION_SHOWN_MS = 2500;
const JOINS = new Set(["welcome", "resume", "reload"]);

const PANEL = `
  <div class="toolbar">
    <span class="canvas-name" title="canvas"></span>
    <button class="react" type="button" title="send a reaction to everyone here">🎉</button>
    <span class="role" hidden>viewer: read-only</span>
  </div>
  <div class="body">
    <div class="stage">
      <svg class="board" aria-label="shared canvas"><g class="objects"></g><g class="selections"></g><g class="cursors"></g></svg>
      <div class="reactions" aria-live="polite"></div>
    </div>
    <aside>
      <h2>here now</h2>
      <ul class="presence"></ul>
      <p class="problem" hidden></p>
    </aside>
  </div>`;

/** A stable colour per user id. */
export function colorOf(id) {
  let hash = 0;
  for (const c of String(id)) hash = (hash * 31 + c.charCodeAt(0)) >>> 0;
  return COLORS[hash % COLORS.length];
}

function svg(tag, attributes = {}) {
  const element = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  return element;
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

function boxOf(a, b) {
  return { x: Math.min(a.x, b.x), y: Math.min(a.y, b.y), w: Math.abs(a.x - b.x), h: Math.abs(a.y - b.y) };
}

/** A colour another connection chose for itself, if it is one (presence state is anyone's input). */
function safeColor(value) {
  return typeof value === "string" && /^#[0-9a-f]{3,8}$/i.test(value) ? value : null;
}

/** The board the user touched last: the one Delete applies to. */
let active = null;

/**
 * Draws `board` (an SDK Board) in a new panel appended to `root`.
 * @param {Element} root
 * @param {import("/app/sdk/index.js").Board} board
 * @param {{ user?: string, role?: string, aside?: Node[] }} [options] `user`/`role`: what this page asked for,
 *   until the board's welcome says; `aside`: more nodes for the side column (e.g. help text)
 * @returns {{ board, element, create, update, remove, select, showPast }} the panel; `create`/`update`/`remove`
 *   are the board's ops with their refusals shown in the panel (the UI calls them too); `showPast(objects)`
 *   draws `objects` (a Map id -> object) read-only instead of the live board, `showPast(null)` the live board
 */
export function mountBoard(root, board, options = {}) {
  const panel = document.createElement("section");
  panel.className = "panel";
  panel.dataset.canvas = board.canvas;
  panel.innerHTML = PANEL;
  const $ = (selector) => panel.querySelector(selector);
  const [surface, objectLayer, selectionLayer, cursorLayer] = [".board", ".objects", ".selections", ".cursors"].map($);
  $(".canvas-name").textContent = board.canvas;
  $("aside").append(...(options.aside ?? []));
  root.append(panel);

  const me = () => board.user ?? options.user;
  const isViewer = () => (board.role ?? options.role) === "viewer";
  const nameOf = (user) => board.users.get(user)?.name ?? user;
  const rects = new Map(); // object id -> <rect>
  const cursors = new Map(); // connection -> { element, user, seen }
  // This board's connection ids, one per join: after a reconnect the relay lists the one that died as a peer
  // until it expires it (--presence-timeout), and that is not somebody else.
  const mine = new Set();
  let selected = null; // the id this connection selected
  let shared = null; // the selection as last published in presence (JSON)
  let gesture = null; // { kind: "draw", start, ghost } or { kind: "move", id, offset, moved }
  let past = null; // the past state shown read-only instead of the live board (a Map), or null
  const shown = () => past ?? board.objects;
  const readOnly = () => isViewer() || past !== null;

  // ---- ops: the board's, with a refusal (its optimistic change already rolled back) shown as the problem ---

  const showProblem = (text) => {
    const problem = $(".problem");
    problem.hidden = !text;
    problem.textContent = text ?? "";
  };
  const reportRefusal = (error) => showProblem(`${error.code}: ${error.message}`);
  const view = {
    board,
    element: panel,
    create: (object) => board.create(object).catch(reportRefusal),
    update: (changes) => board.update(changes).catch(reportRefusal),
    remove: (id) => board.delete(id).catch(reportRefusal),
    select,
    showPast,
  };

  function showPast(objects) {
    past = objects;
    panel.classList.toggle("past", past !== null);
    if (past !== null) gesture?.ghost?.remove();
    gesture = null;
    renderObjects();
  }

  /** Selects `id` (or nothing) and tells the others through presence state. */
  function select(id) {
    selected = id;
    publishSelection();
    renderObjects();
  }

  function publishSelection() {
    const state = { selection: selected ? [selected] : [], color: colorOf(me()) };
    const json = JSON.stringify(state);
    if (json === shared) return;
    shared = json;
    board.setPresence(state);
  }

  // ---- rendering -----------------------------------------------------------------------------------------

  function renderObjects() {
    const objects = shown();
    if (selected && !board.objects.has(selected)) {
      selected = null; // deleted (by anyone) or rolled back
      publishSelection();
    }
    for (const [id, element] of rects) {
      if (objects.get(id)?.kind !== "rect") { element.remove(); rects.delete(id); }
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
      element.classList.toggle("selected", id === selected && past === null);
    }
    renderSelections();
  }

  /** Every other connection's selection, outlined in its colour (its presence state). */
  function renderSelections() {
    const objects = board.objects;
    const outlines = [];
    if (past !== null) return selectionLayer.replaceChildren(); // they are about the live board
    for (const peer of board.peers.values()) {
      if (mine.has(peer.connection)) continue;
      const ids = Array.isArray(peer.data?.selection) ? peer.data.selection : [];
      const color = safeColor(peer.data?.color) ?? colorOf(peer.user);
      for (const id of ids.slice(0, 100)) {
        const object = objects.get(id);
        if (object?.kind !== "rect") continue;
        const outline = svg("g", { class: "peer-selection", "data-id": id, "data-user": peer.user, "data-connection": peer.connection });
        const label = svg("text", { x: object.x, y: object.y - 7, fill: color });
        label.textContent = peer.name ?? nameOf(peer.user);
        outline.append(svg("rect", { x: object.x - 4, y: object.y - 4, width: object.w + 8, height: object.h + 8, stroke: color }), label);
        outlines.push(outline);
      }
    }
    selectionLayer.replaceChildren(...outlines);
  }

  function renderPresence() {
    $(".presence").replaceChildren(...[...board.users.values()].map((p) => {
      const item = document.createElement("li");
      item.dataset.user = p.user;
      const dot = document.createElement("span");
      dot.className = "dot";
      dot.style.background = colorOf(p.user);
      item.append(dot, `${p.name ?? p.user}${p.user === me() ? " (you)" : ""}`);
      return item;
    }));
    for (const [connection, cursor] of cursors) {
      if (!board.users.has(cursor.user)) dropCursor(connection);
    }
  }

  function showCursor(frame) {
    const { from, connection, data } = frame;
    if (mine.has(connection) || typeof data?.x !== "number" || typeof data?.y !== "number") return;
    const key = connection ?? from;
    let cursor = cursors.get(key);
    if (!cursor) {
      const element = svg("g", { "data-user": from, "data-connection": key });
      const label = svg("text", { x: 12, y: 24, fill: colorOf(from) });
      label.textContent = nameOf(from);
      element.append(svg("path", { d: "M0 0 L0 16 L4 12 L8 20 L11 19 L7 11 L12 11 Z", fill: colorOf(from) }), label);
      cursorLayer.append(element);
      cursor = { element, user: from };
      cursors.set(key, cursor);
    }
    cursor.seen = Date.now();
    cursor.element.style.transform = `translate(${data.x}px, ${data.y}px)`;
  }

  function dropCursor(connection) {
    cursors.get(connection)?.element.remove();
    cursors.delete(connection);
  }

  const sweep = setInterval(() => {
    for (const [connection, cursor] of cursors) {
      if (Date.now() - cursor.seen > CURSOR_STALE_MS) dropCursor(connection);
    }
  }, 1000);

  /** A reaction floating up over the board for a moment, labelled with who sent it. */
  function showReaction(from, emoji) {
    const element = document.createElement("div");
    element.className = "reaction";
    element.dataset.from = from;
    element.textContent = `${emoji.slice(0, 8)} ${nameOf(from)}`;
    element.style.left = `${10 + Math.random() * 70}%`;
    $(".reactions").append(element);
    setTimeout(() => element.remove(), REACTION_SHOWN_MS);
  }

  board.on("change", ({ reason }) => {
    if (JOINS.has(reason)) {
      if (board.connection) mine.add(board.connection);
      showProblem(null);
      $(".role").hidden = !isViewer();
      publishSelection();
    }
    renderObjects();
    renderPresence();
  });
  board.on("presence", (peer) => {
    if (peer.data === null) dropCursor(peer.connection); // that connection is gone
    renderSelections();
  });
  board.on("cursor", showCursor);
  board.on("event", (frame) => {
    if (frame.type === "reaction" && typeof frame.data?.emoji === "string") showReaction(frame.from, frame.data.emoji);
  });
  board.on("error", reportRefusal);
  board.on("status", (status) => {
    if (status === "closed") clearInterval(sweep);
  });

  // ---- input ---------------------------------------------------------------------------------------------

  /** Pointer position in board coordinates. */
  const point = (event) => {
    const box = surface.getBoundingClientRect();
    return { x: Math.round(event.clientX - box.left), y: Math.round(event.clientY - box.top) };
  };
  const sendCursor = throttle((p) => board.moveCursor(p), SEND_EVERY_MS);
  const sendMove = throttle((id, x, y) => view.update({ id, x, y }), SEND_EVERY_MS);

  $(".react").addEventListener("click", () => {
    if (board.emit("reaction", { emoji: "🎉" })) showReaction(me(), "🎉");
  });

  surface.addEventListener("pointerdown", (event) => {
    active = view;
    if (readOnly()) return; // a viewer's page, or the past, shows cursors and presence and edits nothing
    surface.setPointerCapture(event.pointerId);
    const p = point(event);
    const id = event.target.dataset?.id;
    const object = id && board.objects.get(id);
    if (object) {
      gesture = { kind: "move", id, offset: { x: p.x - object.x, y: p.y - object.y }, moved: false };
      select(id);
    } else {
      const ghost = svg("rect", { class: "ghost", x: p.x, y: p.y, width: 0, height: 0 });
      objectLayer.append(ghost);
      gesture = { kind: "draw", start: p, ghost };
      select(null);
    }
  });

  surface.addEventListener("pointermove", (event) => {
    const p = point(event);
    sendCursor(p);
    if (gesture?.kind === "draw") {
      const box = boxOf(gesture.start, p);
      for (const [key, value] of Object.entries({ x: box.x, y: box.y, width: box.w, height: box.h })) {
        gesture.ghost.setAttribute(key, value);
      }
    } else if (gesture?.kind === "move") {
      gesture.moved = true;
      sendMove(gesture.id, p.x - gesture.offset.x, p.y - gesture.offset.y);
    }
  });

  const release = (event) => {
    if (!gesture) return;
    const p = point(event);
    if (gesture.kind === "draw") {
      gesture.ghost.remove();
      const box = boxOf(gesture.start, p);
      if (event.type === "pointerup" && box.w >= 4 && box.h >= 4) {
        const id = `rect-${crypto.randomUUID().slice(0, 8)}`;
        view.create({ id, kind: "rect", ...box, color: colorOf(me()) });
        select(id);
      }
    } else if (gesture.moved) {
      sendMove(gesture.id, p.x - gesture.offset.x, p.y - gesture.offset.y); // a click alone moves nothing
    }
    gesture = null;
    renderObjects();
  };
  surface.addEventListener("pointerup", release);
  surface.addEventListener("pointercancel", release);

  document.addEventListener("keydown", (event) => {
    if (active !== view || readOnly() || !selected || event.target !== document.body) return;
    if (event.key === "Delete" || event.key === "Backspace") {
      view.remove(selected);
      select(null);
    }
  });

  publishSelection(); // sent after the welcome: the others know this connection's colour from the start
  renderObjects();
  renderPresence();
  return view;
}
