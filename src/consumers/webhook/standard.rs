//! Standard Webhooks (standardwebhooks.com), which receivers verify with maintained libraries in every
//! language: each request carries `webhook-id` (the batch's idempotency key, the same on every attempt),
//! `webhook-timestamp` (unix seconds, per attempt) and `webhook-signature: v1,<base64 of HMAC-SHA256 of
//! "id.timestamp.body">` (per attempt, so that a retry after a long outage is within a receiver's
//! tolerance). The key is the secret base64-decoded after a `whsec_` prefix, as the spec says, else the
//! secret's bytes as given. `X-Relay-Signature` (v1.1) is unchanged beside them.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The prefix of a secret written as the spec writes them (base64 after it).
const PREFIX: &str = "whsec_";

/// The key Standard Webhooks signatures are made with.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl SigningKey {
    /// The key of `--webhook-secret`; an error (naming no part of the secret) for a `whsec_` one that is
    /// not base64 after its prefix.
    pub fn from_secret(secret: &str) -> Result<SigningKey, String> {
        match secret.strip_prefix(PREFIX) {
            Some(encoded) => STANDARD.decode(encoded).map(SigningKey).map_err(|_| {
                format!("--webhook-secret starts with {PREFIX} but what follows is not base64 (Standard Webhooks)")
            }),
            None => Ok(SigningKey(secret.as_bytes().to_vec())),
        }
    }

    /// `webhook-signature` of one attempt: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification (and of its libraries' tests).
    #[test]
    fn the_specifications_example_signs_as_it_says() {
        let key = SigningKey::from_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = key.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn a_secret_without_the_prefix_is_its_own_bytes_and_a_bad_one_is_refused() {
        let raw = SigningKey::from_secret("plain secret").unwrap();
        assert_eq!(raw.0, b"plain secret");
        let error = SigningKey::from_secret("whsec_not*base64").unwrap_err();
        assert!(error.contains("--webhook-secret") && !error.contains("not*base64"), "{error}");
    }
}
