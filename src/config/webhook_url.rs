//! `--webhook-url`: where the webhook POSTs. A receiver's URL may carry credentials (`http://user:pw@host/`)
//! or a token in its query (`?token=`), so it never reaches `--help`, a parse error, a log line, `/health`
//! or `{config:?}` whole: it is shown as `http://***@host:port/path?***`, its userinfo and query replaced.
//! Only [`WebhookUrl::uri`] gives it out, for the request itself.

use std::ffi::OsStr;
use std::fmt;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;

use super::secret::redact_url_text;

/// A parsed `--webhook-url`; its `Display` and `Debug` are redacted (see the module's doc). Whether it is an
/// `http://` URL with a host is checked with the other webhook flags (`ConsumerConfig::webhook`).
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl(hyper::Uri);

impl WebhookUrl {
    /// Accepts what hyper can send to; the error shows the value redacted.
    pub fn parse(text: &str) -> Result<WebhookUrl, String> {
        text.parse().map(WebhookUrl).map_err(|error| format!("not a URL ({error}): {}", redact_url_text(text)))
    }

    /// The whole URL, credentials and query included: for the request alone.
    pub fn uri(&self) -> &hyper::Uri {
        &self.0
    }
}

impl fmt::Display for WebhookUrl {
    /// `scheme://***@host:port/path?***`: the userinfo (when there is one) and the query become `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let uri = &self.0;
        if let Some(scheme) = uri.scheme_str() {
            write!(f, "{scheme}://")?;
        }
        if let Some(authority) = uri.authority() {
            if authority.as_str().contains('@') {
                f.write_str("***@")?;
            }
            f.write_str(authority.host())?;
            if let Some(port) = authority.port() {
                write!(f, ":{port}")?;
            }
        }
        f.write_str(uri.path())?;
        if uri.query().is_some() {
            f.write_str("?***")?;
        }
        Ok(())
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookUrl({self})")
    }
}

/// `--webhook-url`'s value parser. clap's own refusal of a bad value quotes it whole; this one names the flag
/// and shows only [`WebhookUrl::parse`]'s redacted reason.
#[derive(Clone, Copy)]
pub(super) struct WebhookUrlParser;

impl TypedValueParser for WebhookUrlParser {
    type Value = WebhookUrl;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<WebhookUrl, clap::Error> {
        let refuse = |reason: String| {
            let flag = arg.map_or_else(|| "--webhook-url".to_owned(), ToString::to_string);
            cmd.clone().error(ErrorKind::ValueValidation, format!("invalid value for '{flag}': {reason}"))
        };
        let value = value.to_str().ok_or_else(|| refuse("not UTF-8".to_owned()))?;
        WebhookUrl::parse(value).map_err(refuse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_the_query_are_hidden_in_display_and_debug() {
        let url = WebhookUrl::parse("http://relay:hunter2@10.0.0.5:9900/hooks/in?token=s3cret&x=1").unwrap();
        assert_eq!(url.uri().to_string(), "http://relay:hunter2@10.0.0.5:9900/hooks/in?token=s3cret&x=1");
        assert_eq!(url.to_string(), "http://***@10.0.0.5:9900/hooks/in?***");
        assert_eq!(format!("{url:?}"), "WebhookUrl(http://***@10.0.0.5:9900/hooks/in?***)");
        let plain = WebhookUrl::parse("http://receiver.internal/hook").unwrap();
        assert_eq!(plain.to_string(), "http://receiver.internal/hook", "nothing to hide: shown as given");
        let token_only = WebhookUrl::parse("http://[::1]:80/?token=s3cret").unwrap();
        assert_eq!(token_only.to_string(), "http://[::1]:80/?***");
    }

    #[test]
    fn a_refusal_never_quotes_the_secret_parts() {
        let refused = WebhookUrl::parse("http://relay:hunter2@host:9/a b?token=s3cret").unwrap_err();
        assert!(refused.starts_with("not a URL (") && refused.ends_with("http://***@host:9/a b?***"), "{refused}");
        let refused = WebhookUrl::parse("relay:hunter2@ho st?token=s3cret").unwrap_err();
        assert!(!refused.contains("hunter2") && !refused.contains("s3cret"), "{refused}");
        let command =
            clap::Command::new("t").arg(clap::Arg::new("url").long("webhook-url").value_parser(WebhookUrlParser));
        let error = command.try_get_matches_from(["t", "--webhook-url", "http://u:hunter2@h/a b?token=s3cret"]);
        let shown = error.unwrap_err().to_string();
        assert!(shown.contains("--webhook-url") && shown.contains("http://***@h/a b?***"), "{shown}");
        assert!(!shown.contains("hunter2") && !shown.contains("s3cret"), "{shown}");
    }
}
