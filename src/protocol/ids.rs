//! Ids and parameters a client puts in the connect URL: canvas and user ids, display name, resume.

use std::collections::HashMap;
use std::fmt;

use serde::Serialize;

use super::Role;

/// Identifies one WebSocket connection (one canvas of a multiplexed socket is a connection of its own):
/// the id presence, acks, cursors and removals name it by, on every instance.
pub type ConnId = uuid::Uuid;

/// Why an id in a URL or query was refused: the text of the HTTP 400 body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} must be {rule}")]
pub struct InvalidId {
    what: &'static str,
    rule: &'static str,
}

fn check_id(s: &str, what: &'static str, rule: &'static str, extra: &[u8]) -> Result<(), InvalidId> {
    let ok_len = (1..=128).contains(&s.len());
    let ok_chars = s.bytes().all(|b| b.is_ascii_alphanumeric() || extra.contains(&b));
    if ok_len && ok_chars {
        Ok(())
    } else {
        Err(InvalidId { what, rule })
    }
}

/// A canvas (room) id: 1–128 chars of `[A-Za-z0-9._:-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct CanvasId(String);

impl CanvasId {
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        check_id(s, "canvas", "1-128 characters of [A-Za-z0-9._:-]", b"._:-")?;
        Ok(CanvasId(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CanvasId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The user id of messages the HTTP API publishes.
pub const SERVER_USER: &str = "server";

/// A user id: 1–128 chars of `[A-Za-z0-9._:@-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        check_id(s, "user", "1-128 characters of [A-Za-z0-9._:@-]", b"._:@-")?;
        Ok(UserId(s.to_owned()))
    }

    /// The user the HTTP API publishes as (`from: "server"`). No client may connect as it, with or without
    /// a token: its messages would pass for the server's.
    pub fn server() -> Self {
        UserId(SERVER_USER.to_owned())
    }

    /// Whether this is the API's own user.
    pub fn is_server(&self) -> bool {
        self.0 == SERVER_USER
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A resume request: the last seq the client processed and the epoch it was in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    pub since: u64,
    pub epoch: String,
}

impl Resume {
    /// A resume from `since` in `epoch`, which must look like an epoch a welcome gave.
    pub fn new(since: u64, epoch: &str) -> Result<Self, ParamError> {
        if epoch.is_empty() || epoch.chars().count() > MAX_EPOCH_CHARS {
            return Err(ParamError::BadEpoch);
        }
        Ok(Resume { since, epoch: epoch.to_owned() })
    }
}

/// Who opens a socket, from the query of `GET /ws/{canvas}` or of a multiplexed `GET /ws` (v1.1): the
/// parameters that are not about one canvas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketParams {
    /// The `user` parameter; `None` when the user comes from a token instead.
    pub user: Option<UserId>,
    /// The `token` parameter, verified by `auth` when the server has a JWT secret.
    pub token: Option<String>,
    /// Display name shown in presence (at most 64 characters).
    pub name: Option<String>,
    /// The `role` parameter (default editor): a client may lower what it is granted, never raise it.
    pub role: Role,
}

/// The parameters of `GET /ws/{canvas}?user=..&name=..&since=..&epoch=..`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectParams {
    pub canvas: CanvasId,
    /// The `user` parameter; `None` when the user comes from a token instead.
    pub user: Option<UserId>,
    /// The `token` parameter, verified by `auth` when the server has a JWT secret.
    pub token: Option<String>,
    /// Display name shown in presence (at most 64 characters).
    pub name: Option<String>,
    pub resume: Option<Resume>,
    /// The `role` parameter (default editor): a client may lower what it is granted, never raise it.
    pub role: Role,
}

/// The refusal of a client that claims to be the API's own user.
pub const RESERVED_USER: &str = "user id \"server\" is reserved for the HTTP API";

/// Why a connect request's path or query was refused: the text of the HTTP 400 body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error(transparent)]
    Id(#[from] InvalidId),
    #[error("{}", RESERVED_USER)]
    ReservedUser,
    #[error("query parameter user is required")]
    MissingUser,
    #[error("name must be at most {MAX_NAME_CHARS} characters")]
    NameTooLong,
    #[error("since must be a non-negative integer")]
    BadSince,
    #[error("epoch must be the epoch string from a welcome")]
    BadEpoch,
    #[error("resume needs both since and epoch")]
    HalfResume,
    #[error("role must be editor or viewer")]
    BadRole,
}

/// Longest display name, in characters.
const MAX_NAME_CHARS: usize = 64;
/// Longest epoch a client may send back (ours are far shorter).
const MAX_EPOCH_CHARS: usize = 128;

impl ConnectParams {
    /// Checks the path segment and query of a connect request. With `user_from_token` (auth on) the `user`
    /// parameter is ignored; otherwise it is required.
    pub fn parse(canvas: &str, query: &HashMap<String, String>, user_from_token: bool) -> Result<Self, ParamError> {
        let canvas = CanvasId::parse(canvas)?;
        let SocketParams { user, token, name, role } = SocketParams::parse(query, user_from_token)?;
        let resume = match (query.get("since"), query.get("epoch")) {
            (None, None) => None,
            (Some(since), Some(epoch)) => Some(Resume::new(since.parse().map_err(|_| ParamError::BadSince)?, epoch)?),
            _ => return Err(ParamError::HalfResume),
        };
        Ok(ConnectParams { canvas, user, token, name, resume, role })
    }
}

impl SocketParams {
    /// Checks the socket's query. With `user_from_token` (auth on) the `user` parameter is ignored;
    /// otherwise it is required.
    pub fn parse(query: &HashMap<String, String>, user_from_token: bool) -> Result<Self, ParamError> {
        let user = match (user_from_token, query.get("user")) {
            (true, _) => None,
            (false, Some(user)) => match UserId::parse(user)? {
                user if user.is_server() => return Err(ParamError::ReservedUser),
                user => Some(user),
            },
            (false, None) => return Err(ParamError::MissingUser),
        };
        let token = query.get("token").cloned();
        let name = query.get("name").cloned();
        if name.as_ref().is_some_and(|n| n.chars().count() > MAX_NAME_CHARS) {
            return Err(ParamError::NameTooLong);
        }
        let role = match query.get("role") {
            None => Role::Editor,
            Some(role) => Role::parse(role).ok_or(ParamError::BadRole)?,
        };
        Ok(SocketParams { user, token, name, role })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canvas_and_user_ids_follow_the_contract() {
        assert!(CanvasId::parse("team-1.a:b_c").is_ok());
        assert!(CanvasId::parse(&"c".repeat(128)).is_ok());
        assert!(CanvasId::parse(&"c".repeat(129)).is_err());
        assert!(CanvasId::parse("").is_err());
        assert!(CanvasId::parse("a b").is_err());
        assert!(CanvasId::parse("a@b").is_err(), "@ is for user ids only");
        assert!(UserId::parse("ann@example.com").is_ok());
        assert!(UserId::parse("ann/1").is_err());
        assert!(UserId::parse("é").is_err());
    }

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn connect_params_need_a_valid_canvas_and_user() {
        let ok = ConnectParams::parse("c1", &query(&[("user", "u1"), ("name", "Ann")]), false).unwrap();
        assert_eq!(
            (ok.canvas.as_str(), ok.user.as_ref().map(UserId::as_str), ok.name.as_deref(), ok.resume),
            ("c1", Some("u1"), Some("Ann"), None)
        );
        let refused = ConnectParams::parse("c 1", &query(&[("user", "u1")]), false).unwrap_err();
        assert_eq!(refused.to_string(), "canvas must be 1-128 characters of [A-Za-z0-9._:-]");
        assert_eq!(ConnectParams::parse("c1", &query(&[]), false).unwrap_err(), ParamError::MissingUser);
        let refused = ConnectParams::parse("c1", &query(&[("user", "u/1")]), false).unwrap_err();
        assert!(matches!(refused, ParamError::Id(_)) && refused.to_string().starts_with("user must be"), "{refused}");
        let long_name = "n".repeat(65);
        let refused = ConnectParams::parse("c1", &query(&[("user", "u"), ("name", &long_name)]), false).unwrap_err();
        assert_eq!(refused.to_string(), "name must be at most 64 characters");
    }

    #[test]
    fn no_client_may_connect_as_the_apis_own_user() {
        let refused = ConnectParams::parse("c1", &query(&[("user", "server")]), false).unwrap_err();
        assert_eq!(refused, ParamError::ReservedUser);
        assert_eq!(refused.to_string(), RESERVED_USER);
        assert!(ConnectParams::parse("c1", &query(&[("user", "server-1")]), false).is_ok());
    }

    #[test]
    fn with_auth_on_the_user_parameter_is_ignored_and_the_token_kept() {
        let params = ConnectParams::parse("c1", &query(&[("user", "not valid!"), ("token", "t.k.n")]), true).unwrap();
        assert_eq!((params.user, params.token.as_deref()), (None, Some("t.k.n")));
    }

    #[test]
    fn connect_params_resume_needs_since_and_epoch() {
        let ok =
            ConnectParams::parse("c1", &query(&[("user", "u"), ("since", "41"), ("epoch", "ab-0")]), false).unwrap();
        assert_eq!(ok.resume, Some(Resume { since: 41, epoch: "ab-0".into() }));
        let half = ConnectParams::parse("c1", &query(&[("user", "u"), ("since", "41")]), false);
        assert_eq!(half.unwrap_err(), ParamError::HalfResume);
        let negative = ConnectParams::parse("c1", &query(&[("user", "u"), ("since", "-1"), ("epoch", "e")]), false);
        assert_eq!(negative.unwrap_err(), ParamError::BadSince);
    }
}
