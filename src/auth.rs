//! Client authentication. With `--jwt-secret`, a connection must carry `token`: an HS256 JWT whose `sub` is
//! the user id, `exp` (unix seconds) is in the future, and optional `canvases` covers the canvas: a list of
//! canvas ids (or `"*"`; absent means every canvas), or a map of canvas ids (or `"*"`) to a role. A list or
//! an absent claim grants the optional `role` claim, editor by default; a map grants what it says for the
//! canvas, else what it says for `"*"` (the `role` claim does not apply to it). A role other than `editor` or
//! `viewer` makes the token invalid. Anything else is refused before the upgrade (401), and a session closes
//! with 1008 when its token expires. Without a secret, the `user` query parameter is taken as given: for
//! trusted networks only.
//!
//! Only HS256 is accepted, whatever the token's header says (no `none`, no algorithm confusion), and expiry
//! is checked against this server's clock without leeway. Reasons are generic: they never echo the secret.

use std::collections::{HashMap, HashSet};

use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::protocol::{CanvasId, Role, UserId};

/// Checks client tokens against the configured secret.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

/// What a verified token grants a socket: who, until when, and on which canvases (a multiplexed socket
/// checks each join against it).
pub struct Grant {
    pub user: UserId,
    /// Unix seconds after which the session must end (close 1008).
    pub expires_at: u64,
    /// The `canvases` claim; `None` grants every canvas.
    scope: Option<Scope>,
    /// What a list (or an absent claim) grants: the `role` claim, editor by default.
    listed: Role,
}

impl Grant {
    /// The role granted on `canvas`, or why not.
    pub fn role_on(&self, canvas: &CanvasId) -> Result<Role, AuthError> {
        match &self.scope {
            None => Ok(self.listed),
            Some(scope) => scope.grant(canvas, self.listed).ok_or_else(|| AuthError::OutOfScope(canvas.clone())),
        }
    }
}

/// Who a verified token says the client is, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: UserId,
    /// Unix seconds after which the session must end (close 1008).
    pub expires_at: u64,
    /// What the token grants on the canvas.
    pub role: Role,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    canvases: Option<Scope>,
    /// What a list (or an absent `canvases`) grants.
    #[serde(default)]
    role: Option<Role>,
}

/// The `canvases` claim: `"*"`, a list of ids (a list may contain `"*"` too), or ids (or `"*"`) to roles.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scope {
    One(String),
    List(Vec<String>),
    Roles(HashMap<String, Role>),
}

impl Scope {
    /// The role granted on `canvas`, if the claim covers it; `listed` is what a covering id grants.
    fn grant(&self, canvas: &CanvasId, listed: Role) -> Option<Role> {
        let named = |id: &String| id == "*" || id == canvas.as_str();
        match self {
            Scope::One(id) => named(id).then_some(listed),
            Scope::List(ids) => ids.iter().any(named).then_some(listed),
            Scope::Roles(roles) => roles.get(canvas.as_str()).or_else(|| roles.get("*")).copied(),
        }
    }
}

/// Why a token was refused: the text of the HTTP 401 body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("a token query parameter is required")]
    Missing,
    #[error("the token has expired")]
    Expired,
    /// Forged, malformed, another algorithm than HS256, or without `sub` or `exp`.
    #[error("the token is not valid")]
    Invalid,
    #[error("the token's sub is not a valid user id")]
    BadSubject,
    #[error("{}", crate::protocol::RESERVED_USER)]
    ReservedUser,
    #[error("the token does not cover canvas {0}")]
    OutOfScope(CanvasId),
}

impl Verifier {
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.required_spec_claims = HashSet::from(["exp".to_owned(), "sub".to_owned()]);
        Verifier { key: DecodingKey::from_secret(secret.as_bytes()), validation }
    }

    /// Verifies `token` for `canvas`.
    pub fn verify(&self, token: Option<&str>, canvas: &CanvasId) -> Result<Identity, AuthError> {
        let grant = self.verify_socket(token)?;
        let role = grant.role_on(canvas)?;
        Ok(Identity { user: grant.user, expires_at: grant.expires_at, role })
    }

    /// Verifies `token` for a multiplexed socket: whatever canvases it covers, each join is checked with
    /// [`Grant::role_on`].
    pub fn verify_socket(&self, token: Option<&str>) -> Result<Grant, AuthError> {
        let token = token.ok_or(AuthError::Missing)?;
        let claims = decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid,
            })?
            .claims;
        let user = UserId::parse(&claims.sub).map_err(|_| AuthError::BadSubject)?;
        if user.is_server() {
            return Err(AuthError::ReservedUser);
        }
        let listed = claims.role.unwrap_or(Role::Editor);
        Ok(Grant { user, expires_at: claims.exp, scope: claims.canvases, listed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::{json, Value};

    const SECRET: &str = "s3cret";

    fn token(claims: Value, alg: Algorithm, secret: &str) -> String {
        encode(&Header::new(alg), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    }

    fn in_an_hour() -> u64 {
        crate::clock::now_ms() as u64 / 1000 + 3600
    }

    fn canvas(id: &str) -> CanvasId {
        CanvasId::parse(id).unwrap()
    }

    #[test]
    fn a_good_token_names_the_user_and_its_expiry() {
        let v = Verifier::new(SECRET);
        let exp = in_an_hour();
        let t = token(json!({"sub": "ann", "exp": exp}), Algorithm::HS256, SECRET);
        assert_eq!(
            v.verify(Some(&t), &canvas("c1")).unwrap(),
            Identity { user: UserId::parse("ann").unwrap(), expires_at: exp, role: Role::Editor }
        );
    }

    #[test]
    fn missing_forged_expired_or_other_algorithm_tokens_are_refused() {
        let v = Verifier::new(SECRET);
        let c = canvas("c1");
        assert_eq!(v.verify(None, &c), Err(AuthError::Missing));
        let forged = token(json!({"sub": "ann", "exp": in_an_hour()}), Algorithm::HS256, "other");
        assert_eq!(v.verify(Some(&forged), &c), Err(AuthError::Invalid));
        let expired = token(json!({"sub": "ann", "exp": in_an_hour() - 7200}), Algorithm::HS256, SECRET);
        assert_eq!(v.verify(Some(&expired), &c), Err(AuthError::Expired));
        let hs512 = token(json!({"sub": "ann", "exp": in_an_hour()}), Algorithm::HS512, SECRET);
        assert_eq!(v.verify(Some(&hs512), &c), Err(AuthError::Invalid), "only HS256");
        let no_exp = token(json!({"sub": "ann"}), Algorithm::HS256, SECRET);
        assert_eq!(v.verify(Some(&no_exp), &c), Err(AuthError::Invalid));
        let bad_sub = token(json!({"sub": "a b", "exp": in_an_hour()}), Algorithm::HS256, SECRET);
        assert_eq!(v.verify(Some(&bad_sub), &c), Err(AuthError::BadSubject));
        let server = token(json!({"sub": "server", "exp": in_an_hour()}), Algorithm::HS256, SECRET);
        assert_eq!(v.verify(Some(&server), &c), Err(AuthError::ReservedUser), "nobody signs in as the API");
        let far = token(json!({"sub": "ann", "exp": u64::MAX}), Algorithm::HS256, SECRET);
        assert_eq!(v.verify(Some(&far), &c).unwrap().expires_at, u64::MAX, "any expiry is taken as given");
        // alg "none": header {"alg":"none"}, claims, empty signature.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbm4iLCJleHAiOjQxMDI0NDQ4MDB9.";
        assert_eq!(v.verify(Some(none), &c), Err(AuthError::Invalid));
    }

    #[test]
    fn the_canvases_claim_scopes_the_token() {
        let v = Verifier::new(SECRET);
        let scoped =
            token(json!({"sub": "ann", "exp": in_an_hour(), "canvases": ["c1", "c2"]}), Algorithm::HS256, SECRET);
        assert!(v.verify(Some(&scoped), &canvas("c2")).is_ok());
        let refused = v.verify(Some(&scoped), &canvas("c3")).unwrap_err();
        assert_eq!(refused, AuthError::OutOfScope(canvas("c3")));
        assert_eq!(refused.to_string(), "the token does not cover canvas c3");
        let star = token(json!({"sub": "ann", "exp": in_an_hour(), "canvases": "*"}), Algorithm::HS256, SECRET);
        assert!(v.verify(Some(&star), &canvas("any")).is_ok());
    }

    #[test]
    fn a_list_grants_the_role_claim_and_a_map_grants_per_canvas() {
        let v = Verifier::new(SECRET);
        let role = |claims: Value, c: &str| v.verify(Some(&token(claims, Algorithm::HS256, SECRET)), &canvas(c));
        let exp = in_an_hour();
        assert_eq!(role(json!({"sub": "ann", "exp": exp}), "c1").unwrap().role, Role::Editor, "the default");
        let listed = json!({"sub": "ann", "exp": exp, "canvases": ["c1"], "role": "viewer"});
        assert_eq!(role(listed, "c1").unwrap().role, Role::Viewer);
        let everywhere = json!({"sub": "ann", "exp": exp, "role": "viewer"});
        assert_eq!(role(everywhere, "c9").unwrap().role, Role::Viewer, "an absent canvases claim, with role");
        let map = json!({"sub": "ann", "exp": exp, "canvases": {"c1": "editor", "*": "viewer"}, "role": "viewer"});
        assert_eq!(role(map.clone(), "c1").unwrap().role, Role::Editor, "the role claim does not apply to a map");
        assert_eq!(role(map, "c2").unwrap().role, Role::Viewer, "\"*\" covers the rest");
        let only = json!({"sub": "ann", "exp": exp, "canvases": {"c1": "viewer"}});
        assert_eq!(role(only, "c2").unwrap_err(), AuthError::OutOfScope(canvas("c2")));
        let unknown = json!({"sub": "ann", "exp": exp, "canvases": {"c1": "owner"}});
        assert_eq!(role(unknown, "c1").unwrap_err(), AuthError::Invalid, "a role that does not exist");
        let bad_claim = json!({"sub": "ann", "exp": exp, "role": "admin"});
        assert_eq!(role(bad_claim, "c1").unwrap_err(), AuthError::Invalid);
    }
}
