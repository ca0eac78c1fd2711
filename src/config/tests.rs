//! Tests of the flags: defaults, parsing, validation and what `Debug` shows.

use super::*;

/// The command line as `main` parses it.
fn parse<T: Into<OsString> + Clone>(args: impl IntoIterator<Item = T>) -> Cli {
    Cli::try_parse_resolved_from(args).unwrap()
}

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
    let cli = parse([
        "canvas-relay",
        "serve",
        "--poll-interval",
        "250us",
        "--message-ttl",
        "2m",
        "--local-broadcast",
        "false",
    ]);
    let Command::Serve(config) = cli.command;
    assert_eq!(config.poll_interval, Duration::from_micros(250));
    assert_eq!(config.message_ttl, Duration::from_secs(120));
    assert!(!config.local_broadcast);
}

#[test]
fn secrets_never_show_in_debug_output_and_origins_split_on_commas() {
    let cli = parse([
        "canvas-relay",
        "serve",
        "--api-key",
        "k-4f9a",
        "--jwt-secret",
        "s-77c1",
        "--allowed-origins",
        "https://a.example,http://localhost:3000",
    ]);
    let Command::Serve(config) = cli.command;
    assert_eq!(config.api_key.as_ref().map(Secret::expose), Some("k-4f9a"));
    let shown = format!("{config:?}");
    assert!(!shown.contains("k-4f9a") && !shown.contains("s-77c1"), "{shown}");
    assert_eq!(config.allowed_origins.unwrap(), ["https://a.example", "http://localhost:3000"]);
}

#[test]
fn an_empty_api_key_or_jwt_secret_is_refused_rather_than_taken_as_a_key() {
    for (flag, variable) in [("--api-key", "RELAY_API_KEY"), ("--jwt-secret", "RELAY_JWT_SECRET")] {
        let Command::Serve(config) = parse(["canvas-relay", "serve", flag, ""]).command;
        let refused = config.validate().expect_err(flag).to_string();
        assert!(refused.contains(flag) && refused.contains(variable), "{refused}");
        let Command::Serve(config) = parse(["canvas-relay", "serve", flag, "k"]).command;
        config.validate().unwrap();
    }
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
        let Command::Serve(config) = Cli::try_parse_resolved_from(["canvas-relay", "serve", "--bus", value])?.command;
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
    let cli = parse(["canvas-relay", "serve", "--bus", "redis://:hunter2@10.0.0.5:6379/1"]);
    let Command::Serve(config) = cli.command;
    let shown = format!("{config:?}");
    assert!(shown.contains("redis://:***@10.0.0.5:6379/1") && !shown.contains("hunter2"), "{shown}");
    let refused = Cli::try_parse_resolved_from(["canvas-relay", "serve", "--bus", "redis://:hunter2@10.0.0.5:x/1"]);
    let shown = refused.unwrap_err().to_string();
    assert!(shown.contains("--bus") && shown.contains("not a valid Redis URL"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[test]
fn the_new_limits_have_their_documented_defaults_and_bounds() {
    let config = Config::with_db("x.db");
    assert_eq!(config.max_canvas_state, 64 * 1024 * 1024);
    assert_eq!(config.max_cursor_rate, 60);
    assert_eq!(config.publish_timeout, Duration::from_secs(10));
    assert_eq!(config.client_queue_bytes, 4 * 1024 * 1024);
    assert_eq!(config.max_in_flight, 256);
    let refusal = |args: &[&str]| {
        let Command::Serve(config) = parse(["canvas-relay", "serve"].iter().chain(args)).command;
        config.validate().map_err(|e| e.to_string())
    };
    assert!(refusal(&["--max-canvas-state", "1023"]).unwrap_err().contains("--max-canvas-state"));
    assert!(refusal(&["--max-canvas-state", "1024", "--max-cursor-rate", "0"]).is_ok());
    assert!(refusal(&["--client-queue-bytes", "65535"]).unwrap_err().contains("--client-queue-bytes"));
    assert!(refusal(&["--max-in-flight", "0"]).unwrap_err().contains("--max-in-flight"));
    let too_many = refusal(&["--client-queue", "100", "--max-in-flight", "51"]).unwrap_err();
    assert!(too_many.contains("--max-in-flight") && too_many.contains("--client-queue / 2 (here 50)"), "{too_many}");
    assert!(refusal(&["--client-queue", "100", "--max-in-flight", "50"]).is_ok());
}

#[test]
fn every_zero_period_or_deadline_is_refused_naming_its_flag() {
    let flags = [
        "--ping-interval",
        "--heartbeat-interval",
        "--presence-timeout",
        "--cursor-batch",
        "--watermark-interval",
        "--checkpoint-interval",
        "--cleanup-interval",
        "--write-timeout",
        "--shutdown-timeout",
        "--handshake-timeout",
        "--publish-timeout",
        "--poll-interval",
        "--idle-poll-interval",
        "--busy-timeout",
    ];
    for flag in flags {
        let Command::Serve(config) = parse(["canvas-relay", "serve", flag, "0"]).command;
        let refused = config.validate().expect_err(flag).to_string();
        assert_eq!(refused, format!("{flag} must be above zero"));
    }
}
