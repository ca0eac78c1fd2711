//! Tests of the flags: defaults, parsing, validation and what `Debug` shows.

use super::*;

#[test]
fn serve_with_no_flags_uses_the_documented_defaults() {
    let config = Config::with_db("./relay.db");
    assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(config.db, PathBuf::from("./relay.db"));
    assert_eq!(config.poll_interval, Duration::from_millis(1));
    assert!(config.local_broadcast);
    config.validate().unwrap();
}

#[test]
fn durations_and_booleans_parse_from_flags() {
    let cli = Cli::parse_from([
        "canvas-relay", "serve", "--poll-interval", "250us", "--message-ttl", "2m", "--local-broadcast", "false",
    ]);
    let Command::Serve(config) = cli.command;
    assert_eq!(config.poll_interval, Duration::from_micros(250));
    assert_eq!(config.message_ttl, Duration::from_secs(120));
    assert!(!config.local_broadcast);
}

#[test]
fn secrets_never_show_in_debug_output_and_origins_split_on_commas() {
    let cli = Cli::parse_from([
        "canvas-relay", "serve", "--api-key", "k-4f9a", "--jwt-secret", "s-77c1",
        "--allowed-origins", "https://a.example,http://localhost:3000",
    ]);
    let Command::Serve(config) = cli.command;
    assert_eq!(config.api_key.as_ref().map(Secret::expose), Some("k-4f9a"));
    let shown = format!("{config:?}");
    assert!(!shown.contains("k-4f9a") && !shown.contains("s-77c1"), "{shown}");
    assert_eq!(config.allowed_origins.unwrap(), ["https://a.example", "http://localhost:3000"]);
}

#[test]
fn impossible_combinations_are_refused() {
    let mut config = Config::with_db("x.db");
    config.idle_poll_interval = Duration::from_micros(10);
    assert!(config.validate().is_err());
    let mut config = Config::with_db("x.db");
    config.presence_timeout = config.heartbeat_interval * 2;
    assert!(config.validate().unwrap_err().to_string().contains("--presence-timeout"));
    let mut config = Config::with_db("x.db");
    (config.bus, config.local_broadcast) = (BusKind::Memory, false);
    assert!(config.validate().unwrap_err().to_string().contains("--local-broadcast"));
    let mut config = Config::with_db("x.db");
    config.worker_threads = Some(0);
    assert!(config.validate().unwrap_err().to_string().contains("--worker-threads"));
}

#[test]
fn the_bus_is_sqlite_memory_or_a_redis_url_and_logs_never_show_its_password() {
    let parse = |value: &str| {
        let Command::Serve(config) = Cli::try_parse_from(["canvas-relay", "serve", "--bus", value])?.command;
        Ok::<_, clap::Error>(config.bus)
    };
    assert_eq!(parse("memory").unwrap(), BusKind::Memory);
    assert_eq!(parse("redis://127.0.0.1:6379/2").unwrap(), BusKind::parse("redis://127.0.0.1:6379/2").unwrap());
    let BusKind::Redis(url) = parse("redis://127.0.0.1:6379/2").unwrap() else { panic!("not redis") };
    assert_eq!(url.expose(), "redis://127.0.0.1:6379/2");
    assert!(parse("postgres://x").unwrap_err().to_string().contains("expected sqlite, memory or redis"));
    let bus = BusKind::parse("redis://:hunter2@10.0.0.5:6379/1").unwrap();
    let shown = bus.describe(std::path::Path::new("x.db"));
    assert!(shown.contains("10.0.0.5") && !shown.contains("hunter2"), "{shown}");
}

#[test]
fn a_config_with_a_redis_password_never_shows_it_in_debug_or_parse_errors() {
    let cli = Cli::parse_from(["canvas-relay", "serve", "--bus", "redis://:hunter2@10.0.0.5:6379/1"]);
    let Command::Serve(config) = cli.command;
    let shown = format!("{config:?}");
    assert!(shown.contains("redis://:***@10.0.0.5:6379/1") && !shown.contains("hunter2"), "{shown}");
    let refused = Cli::try_parse_from(["canvas-relay", "serve", "--bus", "redis://:hunter2@10.0.0.5:x/1"]).unwrap_err();
    let shown = refused.to_string();
    assert!(shown.contains("--bus") && shown.contains("not a valid Redis URL") && !shown.contains("hunter2"), "{shown}");
}
