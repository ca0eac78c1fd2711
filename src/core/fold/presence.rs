//! Who is on a canvas, across instances, and when that is logged: the one place these rules are written,
//! for every store. Every open connection of the canvas is a [`Conn`]. A `user-connected` is logged by the
//! commit that adds a user's first connection to the canvas, a `user-disconnected` by the one that removes
//! its last; the stores keep the connections as rows, and only the commit that adds or removes a row
//! decides, so several instances racing over one connection (a survivor expiring a dead instance's, say)
//! log each change once.
//!
//! The name shown for a user (`welcome.presence`, `GET /api/v1/canvases/{canvas}`) is the name of its most
//! recently opened connection that has one: a nameless connection never erases it (contract v1.2).
//!
//! The maps are persistent (`imbl`), so staging a batch against a clone costs nothing until it changes.

use std::sync::Arc;

use imbl::{OrdMap, OrdSet};
use serde_json::value::RawValue;

use crate::core::Present;
use crate::protocol::{to_json, ConnId};
pub use crate::store::records::Conn;

/// The connections of one canvas.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presence {
    conns: OrdMap<ConnId, Conn>,
    /// Each present user's connections: a user's count and name without a scan of the canvas.
    by_user: OrdMap<Arc<str>, OrdSet<ConnId>>,
}

/// What registering or removing a connection did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing: the connection was registered already, or removed already (by a survivor that took its
    /// instance for dead, or the other way round).
    None,
    /// Registered or removed; `logged` when it was the user's first (or last) connection to the canvas, so
    /// the commit logs `user-connected` (or `user-disconnected`).
    Done { logged: bool },
}

impl Presence {
    /// The connections a store's rows hold.
    pub fn from_rows(rows: impl IntoIterator<Item = (ConnId, Conn)>) -> Presence {
        let mut presence = Presence::default();
        for (id, conn) in rows {
            presence.insert(id, conn);
        }
        presence
    }

    /// Registers connection `id`.
    pub fn connect(&mut self, id: ConnId, conn: Conn) -> Change {
        if self.conns.contains_key(&id) {
            return Change::None;
        }
        let first = !self.by_user.contains_key(&conn.user);
        self.insert(id, conn);
        Change::Done { logged: first }
    }

    /// Removes connection `id`.
    pub fn disconnect(&mut self, id: ConnId) -> Change {
        let Some(conn) = self.conns.remove(&id) else { return Change::None };
        let last = match self.by_user.get_mut(&conn.user) {
            Some(conns) => {
                conns.remove(&id);
                conns.is_empty()
            }
            None => true,
        };
        if last {
            self.by_user.remove(&conn.user);
        }
        Change::Done { logged: last }
    }

    fn insert(&mut self, id: ConnId, conn: Conn) {
        self.by_user.entry(conn.user.clone()).or_default().insert(id);
        self.conns.insert(id, conn);
    }

    /// Connection `id`, if it is registered.
    pub fn get(&self, id: &ConnId) -> Option<&Conn> {
        self.conns.get(id)
    }

    /// Every connection, in id order.
    #[cfg(test)]
    pub fn conns(&self) -> impl Iterator<Item = (&ConnId, &Conn)> {
        self.conns.iter()
    }

    /// How many connections the canvas has.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// How many users the canvas has.
    pub fn users(&self) -> usize {
        self.by_user.len()
    }

    /// How many connections `user` has to the canvas.
    #[cfg(test)]
    pub fn user_connections(&self, user: &str) -> usize {
        self.by_user.get(user).map_or(0, OrdSet::len)
    }

    /// The name `user` is shown with: its most recently opened connection's that has one.
    pub fn name_of(&self, user: &str) -> Option<&str> {
        let conns = self.by_user.get(user)?;
        conns
            .iter()
            .filter_map(|id| self.conns.get(id))
            .filter(|c| c.name.is_some())
            .max_by_key(|c| c.opened)?
            .name
            .as_deref()
    }

    /// Who is on the canvas, by user id: what a welcome and the API show.
    pub fn present(&self) -> Vec<Present> {
        self.by_user
            .iter()
            .map(|(user, conns)| Present {
                user: user.to_string(),
                name: self.name_of(user).map(str::to_owned),
                connections: conns.len() as u64,
            })
            .collect()
    }

    /// [`Presence::present`] as the JSON array a welcome embeds.
    pub fn present_json(&self) -> Box<RawValue> {
        RawValue::from_string(to_json(&self.present())).expect("serde_json writes valid JSON")
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn conn(user: &str, name: Option<&str>, opened: u64) -> Conn {
        Conn { user: user.into(), name: name.map(Arc::from), instance: "i1".into(), opened }
    }

    #[test]
    fn only_a_users_first_and_last_connection_are_logged_and_repeats_change_nothing() {
        let mut presence = Presence::default();
        let (tab1, tab2) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(presence.connect(tab1, conn("ann", Some("Ann"), 1)), Change::Done { logged: true });
        assert_eq!(presence.connect(tab2, conn("ann", None, 2)), Change::Done { logged: false });
        assert_eq!(presence.connect(tab2, conn("ann", None, 3)), Change::None, "registered already");
        assert_eq!((presence.connections(), presence.users(), presence.user_connections("ann")), (2, 1, 2));
        assert_eq!(presence.disconnect(tab1), Change::Done { logged: false });
        assert_eq!(presence.disconnect(tab2), Change::Done { logged: true });
        assert_eq!(presence.disconnect(tab2), Change::None, "removed already");
        assert_eq!(presence, Presence::default());
    }

    /// Contract v1.2, "Presence names": Ann opens a tab named "Ann", then a nameless one, then closes it.
    #[test]
    fn a_user_is_named_by_its_newest_named_connection_and_a_nameless_one_never_erases_it() {
        let mut presence = Presence::default();
        let (named, nameless, renamed) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        presence.connect(named, conn("ann", Some("Ann"), 1));
        presence.connect(nameless, conn("ann", None, 2));
        assert_eq!(presence.name_of("ann"), Some("Ann"));
        presence.disconnect(nameless);
        assert_eq!(presence.name_of("ann"), Some("Ann"));
        presence.connect(renamed, conn("ann", Some("Annie"), 3));
        assert_eq!(presence.name_of("ann"), Some("Annie"));
        presence.disconnect(renamed);
        assert_eq!(presence.name_of("ann"), Some("Ann"), "back to the newest named connection left");
        presence.connect(Uuid::new_v4(), conn("bob", None, 4));
        assert_eq!(presence.name_of("bob"), None);
        let json = presence.present_json();
        assert_eq!(
            json.get(),
            r#"[{"user":"ann","name":"Ann","connections":1},{"user":"bob","connections":1}]"#,
            "sorted by user"
        );
    }

    #[test]
    fn rows_read_back_to_the_same_presence() {
        let mut presence = Presence::default();
        for (user, opened) in [("b", 1), ("a", 2), ("b", 3)] {
            presence.connect(Uuid::new_v4(), conn(user, Some(user), opened));
        }
        let rows: Vec<(ConnId, Conn)> = presence.conns().map(|(id, c)| (*id, c.clone())).collect();
        assert_eq!(Presence::from_rows(rows), presence);
    }
}
