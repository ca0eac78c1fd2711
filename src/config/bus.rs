//! `--bus`: which store keeps the log, state and presence, parsed from `sqlite`, `memory` or a Redis URL. How
//! each store works is `store/`; this file only reads the flag, and makes sure a Redis password in it never
//! reaches `--help`, a parse error, a log line or `{config:?}` (only [`RedisUrl::expose`] gives it out).

use std::ffi::OsStr;
use std::fmt;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;

use super::secret::redact_url_text;

/// Where the relay keeps its log, state and presence (`--bus`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusKind {
    /// `sqlite`: the shared SQLite file of --db: any number of processes on one host, durable.
    Sqlite,
    /// `memory`: a private in-memory SQLite database: one process, no file, everything lost at exit. Same
    /// protocol; for tests and single-node demos.
    Memory,
    /// `redis://HOST:PORT/DB`: Redis Streams, for instances on several hosts; durability is Redis's own
    /// persistence (see the README).
    Redis(RedisUrl),
}

impl BusKind {
    /// Parses `--bus`: `sqlite`, `memory` or a `redis://` URL. The error never contains a password.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "sqlite" => Ok(BusKind::Sqlite),
            "memory" => Ok(BusKind::Memory),
            url if url.starts_with("redis://") || url.starts_with("redis+unix://") => {
                RedisUrl::parse(url).map(BusKind::Redis)
            }
            other => Err(format!("{}: expected sqlite, memory or redis://HOST:PORT/DB", redact_url_text(other))),
        }
    }

    /// What the logs say about where the relay keeps its data (no password).
    pub fn describe(&self, db: &std::path::Path) -> String {
        match self {
            BusKind::Sqlite => db.display().to_string(),
            BusKind::Memory => "memory (one process, lost at exit)".to_owned(),
            BusKind::Redis(url) => url.to_string(),
        }
    }
}

/// A Redis URL from `--bus`. Its `Debug` and `Display` show it with the password replaced by `***`
/// (`redis://:***@host:6379/0`), so printing a [`Config`](super::Config) or an error cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// Accepts what the Redis client can parse; the error shows the URL without its password.
    pub fn parse(url: &str) -> Result<Self, String> {
        match redis::parse_redis_url(url) {
            Some(_) => Ok(RedisUrl(url.to_owned())),
            None => Err(format!("not a valid Redis URL: {}", redact_url_text(url))),
        }
    }

    /// The whole URL, password included: for the one place that connects to Redis.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RedisUrl {
    /// The URL with its password (`redis://:PASSWORD@` or `redis+unix://...?pass=PASSWORD`) shown as `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(mut parsed) = redis::parse_redis_url(&self.0) else {
            return f.write_str(&redact_url_text(&self.0));
        };
        if parsed.password().is_some() {
            let _ = parsed.set_password(Some("***"));
        }
        if parsed.query_pairs().any(|(key, _)| key == "pass") {
            let pairs: Vec<(String, String)> = parsed
                .query_pairs()
                .map(|(key, value)| (key.to_string(), if key == "pass" { "***".to_owned() } else { value.to_string() }))
                .collect();
            parsed.query_pairs_mut().clear().extend_pairs(pairs);
        }
        f.write_str(parsed.as_str())
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

/// `--bus`'s value parser. clap's own refusal of a bad value quotes it whole ("invalid value 'redis://:pw@…'");
/// this one names the flag and shows only [`BusKind::parse`]'s redacted reason.
#[derive(Clone, Copy)]
pub(super) struct BusParser;

impl TypedValueParser for BusParser {
    type Value = BusKind;

    fn parse_ref(&self, cmd: &clap::Command, arg: Option<&clap::Arg>, value: &OsStr) -> Result<BusKind, clap::Error> {
        let refuse = |reason: String| {
            let flag = arg.map_or_else(|| "--bus".to_owned(), ToString::to_string);
            cmd.clone().error(ErrorKind::ValueValidation, format!("invalid value for '{flag}': {reason}"))
        };
        let value = value.to_str().ok_or_else(|| refuse("not UTF-8".to_owned()))?;
        BusKind::parse(value).map_err(refuse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_password_is_hidden_in_display_debug_and_parse_errors() {
        let url = RedisUrl::parse("redis://:hunter2@10.0.0.5:6379/1").unwrap();
        assert_eq!(url.expose(), "redis://:hunter2@10.0.0.5:6379/1");
        assert_eq!(url.to_string(), "redis://:***@10.0.0.5:6379/1");
        assert_eq!(format!("{url:?}"), "RedisUrl(redis://:***@10.0.0.5:6379/1)");
        let url = RedisUrl::parse("redis://app:hunter2@cache/0").unwrap();
        assert_eq!(url.to_string(), "redis://app:***@cache/0");
        let url = RedisUrl::parse("redis+unix:///run/redis.sock?db=2&pass=hunter2").unwrap();
        assert_eq!(url.to_string(), "redis+unix:///run/redis.sock?db=2&pass=***");

        let refused = BusKind::parse("redis://:hunter2@10.0.0.5:notaport/1").unwrap_err();
        assert_eq!(refused, "not a valid Redis URL: redis://***@10.0.0.5:notaport/1");
        let refused = BusKind::parse("redis+unix://:pw@[/x?pass=hunter2").unwrap_err();
        assert!(!refused.contains("hunter2") && !refused.contains("pw"), "{refused}");
        let refused = BusKind::parse("postgres://u:hunter2@db/x").unwrap_err();
        assert_eq!(refused, "postgres://***@db/x: expected sqlite, memory or redis://HOST:PORT/DB");
    }

    #[test]
    fn the_flag_parser_refuses_without_quoting_the_value() {
        let command = clap::Command::new("t").arg(clap::Arg::new("bus").long("bus").value_parser(BusParser));
        let error = command.try_get_matches_from(["t", "--bus", "redis://:hunter2@h:x/0"]).unwrap_err();
        let shown = error.to_string();
        assert!(shown.contains("'--bus <bus>'") && shown.contains("redis://***@h:x/0"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
