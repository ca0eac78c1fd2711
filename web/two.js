// The canvas app's page of several canvases side by side (`/app/two.html?canvases=a,b&name=Ann`, also &user,
// &token, &role as on `/`): every board is drawn by draw.js, each editable with its own presence list, and all
// of them go over ONE RelayClient, that is one WebSocket (`GET /ws`), whose state the one status badge shows.

import { connect, identity, joinForm, params, showStatus } from "./page.js";
import { mountBoard } from "./draw.js";

const canvases = [...new Set((params.get("canvases") || "a,b").split(",").map((c) => c.trim()).filter(Boolean))];
const who = identity();
const client = connect(who);
const boards = canvases.map((canvas) => client.canvas(canvas));

joinForm(document.querySelector("#join"), { canvases: canvases.join(","), name: who.name });
document.querySelector("#one").href = `/?${new URLSearchParams({ canvas: canvases[0] ?? "lobby", name: who.name })}`;
showStatus(document.querySelector("#status"), client, boards);
const main = document.querySelector("main");
const views = boards.map((board) => mountBoard(main, board, { user: who.user, role: who.role }));

// For tests and the curious: `canvasRelay.boards` in the console.
window.canvasRelay = { client, boards, views };
