//! Joins under way on this process, from before their block check until their subscriber is placed in its
//! room: what a removal through the API (`DELETE /api/v1/canvases/{c}/users/{u}`) does to a connection that
//! is not in its room yet.
//!
//! A removal reaches every instance's hub once it is committed (the taking instance at once, the others
//! through the store), and closes the subscribers it finds there. A join that read "not blocked" before the
//! removal committed, and is placed only after the removal reached this hub, would be in no room to be
//! found: so the removal also marks every join of that user to that canvas in flight here, and the join's
//! placement, under its room's lock, refuses a marked join. Either the placement comes first (the removal
//! finds the subscriber and closes it) or the mark does (the placement is refused): there is no third way.
//! This holds on every store and across instances without one more store read per join.
//!
//! This module knows nothing of rooms or storage: a set of marks, each held by one join's [`JoinTicket`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::protocol::{CanvasId, ConnId, UserId};

/// Every join in flight on this process.
#[derive(Default)]
pub struct Joins {
    /// By connection id. Held only to add, remove or mark entries (a removal walks them all: removals are
    /// rare, and joins in flight are at most the joins under way).
    in_flight: Mutex<HashMap<ConnId, InFlight>>,
}

/// A join in flight, as a removal looks for it.
struct InFlight {
    canvas: CanvasId,
    user: UserId,
    /// Shared with the join's ticket.
    removed: Arc<AtomicBool>,
}

/// One join's place among the joins in flight; dropping it (the join was placed, refused, failed or
/// cancelled) takes it out.
pub struct JoinTicket {
    joins: Arc<Joins>,
    conn: ConnId,
    /// Set by a removal of the join's user from its canvas; read by its placement.
    removed: Arc<AtomicBool>,
}

impl Joins {
    fn in_flight(&self) -> MutexGuard<'_, HashMap<ConnId, InFlight>> {
        self.in_flight.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a join of `user` to `canvas` (connection `conn`) in flight until the ticket is dropped. Taken
    /// before the join reads the block, so that a removal committed after that read finds it.
    pub fn start(self: &Arc<Self>, canvas: &CanvasId, user: &UserId, conn: ConnId) -> JoinTicket {
        let removed = Arc::new(AtomicBool::new(false));
        let entry = InFlight { canvas: canvas.clone(), user: user.clone(), removed: removed.clone() };
        self.in_flight().insert(conn, entry);
        JoinTicket { joins: self.clone(), conn, removed }
    }

    /// Marks every join of `user` to `canvas` in flight: each is refused when it comes to be placed. Called
    /// before the removal closes the room's subscribers (see the module's doc for why the order matters).
    pub fn remove_user(&self, canvas: &CanvasId, user: &str) {
        for join in self.in_flight().values().filter(|join| &join.canvas == canvas && join.user.as_str() == user) {
            join.removed.store(true, Ordering::Release);
        }
    }

    /// Whether no join is in flight.
    pub fn is_empty(&self) -> bool {
        self.in_flight().is_empty()
    }
}

impl JoinTicket {
    /// Whether a removal of the join's user from its canvas reached this process since the ticket was
    /// taken. Read under the room's lock, after the removal's mark if the removal's close came first.
    pub fn removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }
}

impl Drop for JoinTicket {
    fn drop(&mut self) {
        self.joins.in_flight().remove(&self.conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removal_marks_the_joins_of_its_user_and_canvas_in_flight_and_no_other() {
        let joins = Arc::new(Joins::default());
        let (c1, c2) = (CanvasId::parse("c1").unwrap(), CanvasId::parse("c2").unwrap());
        let (ann, bob) = (UserId::parse("ann").unwrap(), UserId::parse("bob").unwrap());
        let tickets = [(&c1, &ann), (&c1, &ann), (&c2, &ann), (&c1, &bob)]
            .map(|(canvas, user)| joins.start(canvas, user, uuid::Uuid::new_v4()));
        joins.remove_user(&c1, "ann");
        assert_eq!(tickets.each_ref().map(JoinTicket::removed), [true, true, false, false]);
        let later = joins.start(&c1, &ann, uuid::Uuid::new_v4());
        assert!(!later.removed(), "a join that starts after the removal is not marked by it");
        drop(tickets);
        drop(later);
        assert!(joins.is_empty(), "a dropped ticket leaves");
    }
}
