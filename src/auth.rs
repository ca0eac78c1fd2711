//! Client authentication. With `--jwt-secret`, a connection must carry `token`: an HS256 JWT whose `sub` is
//! the user id, `exp` (unix seconds) is in the future, and optional `canvases` (a list of canvas ids, or
//! `"*"`; absent means every canvas) covers the canvas. Anything else is refused before the upgrade (401),
//! and a session closes with 1008 when its token expires. Without a secret, the `user` query parameter is
//! taken as given: for trusted networks only.
//!
//! Only HS256 is accepted, whatever the token's header says (no `none`, no algorithm confusion), and expiry
//! is checked against this server's clock without leeway. Reasons are generic: they never echo the secret.

use std::collections::HashSet;

use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::protocol::{CanvasId, UserId};

/// Checks client tokens against the configured secret.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

/// Who a verified token says the client is, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: UserId,
    /// Unix seconds after which the session must end (close 1008).
    pub expires_at: u64,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    canvases: Option<Scope>,
}

/// The `canvases` claim: `"*"` or a list of ids (a list may contain `"*"` too).
#[derive(Deserialize)]
#[serde(untagged)]
enum Scope {
    One(String),
    List(Vec<String>),
}

impl Scope {
    fn covers(&self, canvas: &CanvasId) -> bool {
        match self {
            Scope::One(s) => s == "*" || s == canvas.as_str(),
            Scope::List(ids) => ids.iter().any(|id| id == "*" || id == canvas.as_str()),
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
        if !claims.canvases.as_ref().map_or(true, |scope| scope.covers(canvas)) {
            return Err(AuthError::OutOfScope(canvas.clone()));
        }
        Ok(Identity { user, expires_at: claims.exp })
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
            Identity { user: UserId::parse("ann").unwrap(), expires_at: exp }
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
}
