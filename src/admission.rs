//! Who may open another WebSocket on this instance: at most `--max-connections` in all and at most
//! `--max-connections-per-user` for one user (a client opening thousands of canvases). Checked after the
//! request is authenticated and before the upgrade, so a refused client gets a plain HTTP error with a JSON
//! body and costs nothing more. The limits are per instance: behind a load balancer a flood spreads over the
//! instances and each one protects itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::protocol::UserId;

/// The connection counts of this instance.
#[derive(Debug)]
pub struct Admission {
    max_total: usize,
    max_per_user: usize,
    /// (open connections, per user). A std mutex: held for a map update, never across an await.
    counts: Mutex<(usize, HashMap<UserId, usize>)>,
}

/// Why a connection was not admitted; the text is for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAdmitted {
    #[error("this instance is at its connection limit ({0}, --max-connections); retry later or elsewhere")]
    Full(usize),
    #[error("this user already has {0} connections on this instance (--max-connections-per-user)")]
    UserFull(usize),
}

/// One admitted connection; the counts go down when it is dropped.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    user: UserId,
}

impl Admission {
    pub fn new(max_total: usize, max_per_user: usize) -> Arc<Self> {
        Arc::new(Admission { max_total, max_per_user, counts: Mutex::default() })
    }

    /// Counts a new connection of `user`, or says which limit it would pass.
    pub fn admit(self: &Arc<Self>, user: &UserId) -> Result<Ticket, NotAdmitted> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let (total, users) = &mut *counts;
        if *total >= self.max_total {
            return Err(NotAdmitted::Full(self.max_total));
        }
        let mine = users.entry(user.clone()).or_default();
        if *mine >= self.max_per_user {
            return Err(NotAdmitted::UserFull(*mine));
        }
        *mine += 1;
        *total += 1;
        Ok(Ticket { admission: self.clone(), user: user.clone() })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut counts = self.admission.counts.lock().unwrap_or_else(|p| p.into_inner());
        let (total, users) = &mut *counts;
        *total -= 1;
        if let Some(mine) = users.get_mut(&self.user) {
            *mine -= 1;
            if *mine == 0 {
                users.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    #[test]
    fn limits_apply_in_all_and_per_user_and_free_up_on_drop() {
        let admission = Admission::new(3, 2);
        let a1 = admission.admit(&user("a")).unwrap();
        let _a2 = admission.admit(&user("a")).unwrap();
        assert_eq!(admission.admit(&user("a")).unwrap_err(), NotAdmitted::UserFull(2));
        let _b1 = admission.admit(&user("b")).unwrap();
        assert_eq!(admission.admit(&user("c")).unwrap_err(), NotAdmitted::Full(3));
        drop(a1);
        assert_eq!(admission.counts.lock().unwrap().0, 2);
        let _c1 = admission.admit(&user("c")).unwrap();
        assert_eq!(admission.admit(&user("a")).unwrap_err(), NotAdmitted::Full(3));
    }

    #[test]
    fn a_user_with_no_connections_left_is_forgotten() {
        let admission = Admission::new(10, 10);
        drop(admission.admit(&user("a")).unwrap());
        assert!(admission.counts.lock().unwrap().1.is_empty());
    }
}
