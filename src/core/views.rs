//! What the bus reports, whichever bus it is: a canvas's log page and state for the HTTP API, and who is
//! connected (and, for a welcome, with which presence states). The figures behind `/health` are the
//! stores' (`crate::store::figures`).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::hub::RoomState;
use crate::protocol::{to_json, ConnId};

/// A page of a canvas's log: the frames (as relayed) after some seq, and where the log stands.
#[derive(Debug, Clone)]
pub struct CanvasLog {
    pub epoch: String,
    pub seq: u64,
    pub messages: Vec<String>,
}

/// A canvas at its head: objects and presence as of exactly `seq`.
#[derive(Debug, Clone)]
pub struct CanvasState {
    pub epoch: String,
    pub seq: u64,
    /// The objects as one JSON object.
    pub objects: bytes::Bytes,
    /// Who is on the canvas, as a JSON array of [`Present`].
    pub presence: Box<RawValue>,
}

/// One user on a canvas, as `welcome.presence` and `GET /api/v1/canvases/{canvas}` list it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Present {
    pub user: String,
    /// The display name of the user's most recent connection, when it gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub connections: u64,
}

/// A live connection of a canvas with its presence state (v1.1), as `welcome.peers` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Peer {
    pub connection: String,
    pub user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its latest presence state; `null` until it sets one.
    pub data: Option<Box<serde_json::value::RawValue>>,
}

/// A connected user across instances, as the users API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserPresence {
    pub user: String,
    pub connections: u64,
    /// The canvases the user is on, sorted.
    pub canvases: Vec<String>,
}

/// One canvas as `GET /api/v1/canvases` lists it; counts are across instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CanvasSummary {
    pub canvas: String,
    pub seq: u64,
    pub epoch: String,
    pub connections: u64,
    pub users: u64,
    pub objects: u64,
}

/// A page of canvases in id order, and the id to list after for the next page (`None` at the end).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CanvasPage {
    pub canvases: Vec<CanvasSummary>,
    pub next: Option<String>,
}

/// `welcome.peers`: every other connection of the canvas with its presence state, as the store kept it,
/// overlaid with this instance's connections as their room knows them now (a state set a moment ago may
/// not have reached the store yet, and a connection just placed may not be in the snapshot), sorted by
/// connection id.
pub fn peers_json(stored: Vec<Peer>, room: &RoomState, own: ConnId) -> Box<RawValue> {
    let own_id = own.to_string();
    let mut peers: BTreeMap<String, Peer> = stored
        .into_iter()
        .filter(|peer| peer.connection != own_id)
        .map(|peer| (peer.connection.clone(), peer))
        .collect();
    for (conn, user, name, data) in room.peers().filter(|(conn, ..)| *conn != own) {
        let connection = conn.to_string();
        let peer = peers.entry(connection.clone()).or_insert_with(|| Peer {
            connection,
            user: user.as_str().to_owned(),
            name: name.map(str::to_owned),
            data: None,
        });
        if let Some(data) = data {
            peer.data = Some(data.to_owned());
        }
    }
    let peers: Vec<&Peer> = peers.values().collect();
    RawValue::from_string(to_json(&peers)).expect("serde_json writes valid JSON")
}
