//! What a connection may do on its canvas (v1.1 "Roles"): an editor publishes; a viewer receives everything
//! and may send cursors and pings, but its logged messages are refused with `forbidden`.

use serde::Deserialize;

/// A connection's role. Ordered: `Viewer < Editor`, so the lesser of two grants is their `min`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Editor,
}

impl Role {
    /// `"editor"` or `"viewer"`, as `welcome.role`, the `role` claim and `?role` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "viewer" => Some(Role::Viewer),
            "editor" => Some(Role::Editor),
            _ => None,
        }
    }

    /// Whether logged messages (object ops, custom types) from this role are taken.
    pub fn may_publish(self) -> bool {
        self == Role::Editor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lesser_of_two_grants_is_their_min() {
        assert_eq!(Role::Editor.min(Role::Viewer), Role::Viewer);
        assert_eq!(Role::Viewer.min(Role::Editor), Role::Viewer, "a request cannot raise a grant");
        assert_eq!(Role::parse(Role::Viewer.as_str()), Some(Role::Viewer));
        assert_eq!(Role::parse("admin"), None);
        assert!(Role::Editor.may_publish() && !Role::Viewer.may_publish());
    }
}
