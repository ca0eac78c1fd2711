//! Values from the command line or the environment that no log line may show: secrets, and the parts of a
//! URL that may hold one.

/// A secret from the command line or the environment (API key, JWT secret): its `Debug` never shows it, so no
/// log line or panic message can leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// A value that is not a URL, shown without whatever could be a secret: everything between `://` and the
/// last `@` becomes `***`, and so does everything after the first `?` (or, with no `://`, everything
/// before an `@`).
pub(super) fn redact_url_text(value: &str) -> String {
    let (scheme, rest) = match value.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), value),
    };
    let (credentials, rest) = match rest.rsplit_once('@') {
        Some((_, host_and_path)) => ("***@", host_and_path),
        None => ("", rest),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((before, _)) => (before, "?***"),
        None => (rest, ""),
    };
    format!("{scheme}{credentials}{rest}{query}")
}
