// The history panel of one board (PROTOCOL.md v1.2 "History", through the SDK's board.history, versions,
// nameVersion and restore): a "history" button in the board's toolbar opens it in the side column. Open, it
// lists the canvas's versions, and a slider over the seqs from 0 to the head shows the board
// as it was right after the chosen seq, read-only (draw.js's `showPast`); a version clicked moves the slider to
// it. "name" names the live state, "restore this" brings the canvas back to the state shown (every page
// converges by the ops the relay logs). Closing it, or restoring, returns to the live board. The SDK sends whatever this
// page connected with (its token, or nothing).

const PANEL = `
  <h2>history</h2>
  <input class="history-slider" type="range" min="0" max="0" step="1" aria-label="seq">
  <p class="history-at"></p>
  <div class="history-actions">
    <button class="history-restore" type="button">restore this</button>
    <button class="history-live" type="button">back to live</button>
  </div>
  <form class="history-name">
    <input name="name" required maxlength="100" placeholder="name the live state">
    <button>name</button>
  </form>
  <ul class="versions"></ul>
  <p class="history-note" hidden></p>`;

const PAGE = 100; // versions per request
const MAX_PAGES = 10; // the list shows at most this many pages (thinned snapshots keep it short)
const SLIDE_MS = 120; // while the slider moves, one request per this long

/**
 * Adds the history button and panel to a board's panel (draw.js `mountBoard`'s view).
 * @param {{ board, element, showPast: (objects: Map<string, any> | null) => void }} view
 * @param {{ readOnly: () => boolean }} options `readOnly`: a viewer's page, which may look but not name or restore
 */
export function mountHistory(view, { readOnly }) {
  const { board } = view;
  const toggle = document.createElement("button");
  toggle.type = "button";
  toggle.className = "history-toggle";
  toggle.textContent = "history";
  view.element.querySelector(".toolbar").append(toggle);
  const section = document.createElement("section");
  section.className = "history";
  section.hidden = true;
  section.innerHTML = PANEL;
  view.element.querySelector("aside").prepend(section);
  const $ = (selector) => section.querySelector(selector);
  const slider = $(".history-slider");

  let versions = []; // newest first
  let wanted = null; // the seq whose state was asked for last: an older answer that arrives later is dropped
  let shownSeq = null; // the seq whose state the board shows: what "restore this" restores
  let timer = null;

  const note = (text) => {
    $(".history-note").hidden = !text;
    $(".history-note").textContent = text ?? "";
  };

  async function open() {
    section.hidden = false;
    toggle.textContent = "back to live";
    for (const button of section.querySelectorAll(".history-restore, .history-name button")) button.disabled = readOnly();
    slider.max = String(board.seq); // before the value, which the old max would clamp
    slider.value = String(board.seq);
    view.showPast(new Map(board.objects)); // read-only from now on, until the head's state arrives
    show(board.seq);
    await loadVersions();
  }

  function close() {
    section.hidden = true;
    toggle.textContent = "history";
    wanted = shownSeq = null;
    delete section.dataset.shown;
    clearTimeout(timer);
    note(null);
    view.showPast(null);
  }

  /** The versions, every page up to MAX_PAGES; the slider starts at the oldest. */
  async function loadVersions() {
    try {
      const listed = [];
      let before;
      for (let page = 0; page < MAX_PAGES; page++) {
        const { versions: some, next } = await board.versions({ limit: PAGE, before });
        listed.push(...some);
        if (next === null) break;
        before = next;
      }
      versions = listed;
    } catch (error) {
      return note(`${error.code}: ${error.message}`);
    }
    // From seq 0: history may reach below the oldest listed snapshot (the relay keeps the ops back to its
    // floor, which it does not list); a seq no longer kept answers history_expired, and the panel says so.
    slider.min = "0";
    $(".versions").replaceChildren(...versions.map((version) => {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.seq = version.seq;
      button.className = version.name === null ? "auto" : "named";
      button.textContent = `${version.name ?? "snapshot"} · seq ${version.seq} · ${new Date(version.ts).toLocaleString()}`;
      button.addEventListener("click", () => {
        slider.value = String(version.seq);
        show(version.seq);
      });
      item.append(button);
      return item;
    }));
    label();
  }

  /** Shows the board right after `seq`, read-only. */
  async function show(seq) {
    wanted = seq;
    label();
    try {
      const past = await board.history({ at: seq });
      if (wanted !== seq) return;
      note(null);
      shownSeq = seq;
      section.dataset.shown = seq; // for tests: the seq on screen
      view.showPast(past.objects);
    } catch (error) {
      if (wanted !== seq) return;
      note(error.code === "history_expired" ? `seq ${seq} is no longer kept` : `${error.code}: ${error.message}`);
    }
  }

  function label() {
    const seq = Number(slider.value);
    const name = versions.find((v) => v.seq === seq)?.name;
    $(".history-at").textContent = `seq ${seq} of ${slider.max}${name ? ` · ${name}` : ""}`;
    $(".history-at").dataset.seq = seq;
  }

  toggle.addEventListener("click", () => (section.hidden ? open() : close()));
  $(".history-live").addEventListener("click", close);
  slider.addEventListener("input", () => {
    label();
    clearTimeout(timer);
    timer = setTimeout(() => show(Number(slider.value)), SLIDE_MS);
  });
  $(".history-restore").addEventListener("click", async () => {
    if (shownSeq === null) return;
    try {
      await board.restore(shownSeq);
      close();
    } catch (error) {
      note(`${error.code}: ${error.message}`);
    }
  });
  $(".history-name").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await board.nameVersion(event.target.elements.name.value);
      event.target.reset();
      await loadVersions();
    } catch (error) {
      note(`${error.code}: ${error.message}`);
    }
  });
  // Others keep editing while the panel is open: the slider reaches the live head.
  board.on("change", () => {
    if (section.hidden) return;
    slider.max = String(board.seq);
    label();
  });
}
