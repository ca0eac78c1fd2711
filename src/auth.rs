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

impl Verifier {
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.required_spec_claims = HashSet::from(["exp".to_owned(), "sub".to_owned()]);
        Verifier { key: DecodingKey::from_secret(secret.as_bytes()), validation }
    }

    /// Verifies `token` for `canvas`; the error is the text of the 401 body.
    pub fn verify(&self, token: Option<&str>, canvas: &CanvasId) -> Result<Identity, String> {
        let token = token.ok_or("a token query parameter is required")?;
        let claims = decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => "the token has expired".to_owned(),
                _ => "the token is not valid".to_owned(),
            })?
            .claims;
        let user = UserId::parse(&claims.sub).map_err(|_| "the token's sub is not a valid user id".to_owned())?;
        if user.is_server() {
            return Err(crate::protocol::RESERVED_USER.to_owned());
        }
        if !claims.canvases.as_ref().map_or(true, |scope| scope.covers(canvas)) {
            return Err(format!("the token does not cover canvas {canvas}"));
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
        assert!(v.verify(None, &c).unwrap_err().contains("required"));
        let forged = token(json!({"sub": "ann", "exp": in_an_hour()}), Algorithm::HS256, "other");
        assert!(v.verify(Some(&forged), &c).is_err());
        let expired = token(json!({"sub": "ann", "exp": in_an_hour() - 7200}), Algorithm::HS256, SECRET);
        assert!(v.verify(Some(&expired), &c).unwrap_err().contains("expired"));
        let hs512 = token(json!({"sub": "ann", "exp": in_an_hour()}), Algorithm::HS512, SECRET);
        assert!(v.verify(Some(&hs512), &c).is_err(), "only HS256");
        let no_exp = token(json!({"sub": "ann"}), Algorithm::HS256, SECRET);
        assert!(v.verify(Some(&no_exp), &c).is_err());
        let bad_sub = token(json!({"sub": "a b", "exp": in_an_hour()}), Algorithm::HS256, SECRET);
        assert!(v.verify(Some(&bad_sub), &c).is_err());
        let server = token(json!({"sub": "server", "exp": in_an_hour()}), Algorithm::HS256, SECRET);
        assert!(v.verify(Some(&server), &c).unwrap_err().contains("reserved"), "nobody signs in as the API");
        let far = token(json!({"sub": "ann", "exp": u64::MAX}), Algorithm::HS256, SECRET);
        assert_eq!(v.verify(Some(&far), &c).unwrap().expires_at, u64::MAX, "any expiry is taken as given");
        // alg "none": header {"alg":"none"}, claims, empty signature.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbm4iLCJleHAiOjQxMDI0NDQ4MDB9.";
        assert!(v.verify(Some(none), &c).is_err());
    }

    #[test]
    fn the_canvases_claim_scopes_the_token() {
        let v = Verifier::new(SECRET);
        let scoped =
            token(json!({"sub": "ann", "exp": in_an_hour(), "canvases": ["c1", "c2"]}), Algorithm::HS256, SECRET);
        assert!(v.verify(Some(&scoped), &canvas("c2")).is_ok());
        assert!(v.verify(Some(&scoped), &canvas("c3")).unwrap_err().contains("c3"));
        let star = token(json!({"sub": "ann", "exp": in_an_hour(), "canvases": "*"}), Algorithm::HS256, SECRET);
        assert!(v.verify(Some(&star), &canvas("any")).is_ok());
    }
}
