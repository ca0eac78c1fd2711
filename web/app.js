// The canvas app served at `/`: one canvas, drawn by draw.js over the SDK's RelayClient (page.js makes it),
// with its history panel (history.js). This file only wires the page: the address, the join form, the status
// badge and the board's panel.
//
//   /?canvas=team-1&name=Ann            (optional: &user=ann, &token=<JWT> when the relay requires one,
//                                        &role=viewer for a read-only page)
//
// Two canvases over one socket: /app/two.html?canvases=a,b (two.js).

import { connect, identity, joinForm, params, showStatus } from "./page.js";
import { mountBoard } from "./draw.js";
import { mountHistory } from "./history.js";

const canvas = params.get("canvas") || "lobby";
const who = identity();
const client = connect(who);
const board = client.canvas(canvas);

joinForm(document.querySelector("#join"), { canvas, name: who.name });
document.querySelector("#two").href = `/app/two.html?${new URLSearchParams({ canvases: `${canvas},${canvas}-2`, name: who.name })}`;
showStatus(document.querySelector("#status"), client, [board]);
const view = mountBoard(document.querySelector("main"), board, {
  user: who.user,
  role: who.role,
  aside: [document.querySelector("#how")],
});
mountHistory(view, { readOnly: () => (board.role ?? who.role) === "viewer" });

// For tests and the curious: `canvasRelay.board` in the console.
window.canvasRelay = { client, board, view };
