//! Which combinations of flags the relay refuses to start with, each with a message that names the flag to
//! change. The flags themselves, their defaults and `--help` are `mod.rs`'s; the profiles' values are
//! `profile.rs`'s.

use std::time::Duration;

use super::{BusKind, Config};

impl Config {
    /// Rejects combinations that cannot work, with a message saying which flag to change.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (flag, value) in self.periods_and_deadlines() {
            anyhow::ensure!(!value.is_zero(), "{flag} must be above zero");
        }
        anyhow::ensure!(self.worker_threads != Some(0), "--worker-threads must be at least 1");
        // An empty key would let in every request that sends none (`RELAY_API_KEY=` in an environment file reads
        // as "off" but meant "anyone"); an empty HS256 secret lets anyone sign tokens.
        for (flag, variable, secret) in
            [("--api-key", "RELAY_API_KEY", &self.api_key), ("--jwt-secret", "RELAY_JWT_SECRET", &self.jwt_secret)]
        {
            anyhow::ensure!(
                !matches!(secret, Some(secret) if secret.expose().is_empty()),
                "{flag} is empty: give it a value, or leave both it and {variable} unset to turn it off"
            );
        }
        anyhow::ensure!(
            self.idle_poll_interval >= self.poll_interval,
            "--idle-poll-interval ({}) must be >= --poll-interval ({}); --profile {} sets both unless they are given",
            humantime::format_duration(self.idle_poll_interval),
            humantime::format_duration(self.poll_interval),
            self.profile.name()
        );
        anyhow::ensure!(self.message_ttl >= Duration::from_secs(1), "--message-ttl must be at least 1s");
        anyhow::ensure!(self.client_queue >= 16, "--client-queue must be at least 16");
        anyhow::ensure!(self.client_queue_bytes >= 64 * 1024, "--client-queue-bytes must be at least 65536 (64 KiB)");
        anyhow::ensure!(
            self.client_queue_bytes >= 2 * self.max_frame_size,
            "--client-queue-bytes must hold two of the largest messages: at least 2 × --max-frame-size"
        );
        anyhow::ensure!(
            (1..=self.client_queue / 2).contains(&self.max_in_flight),
            "--max-in-flight must be between 1 and --client-queue / 2 (here {}), so that the acks of every message in \
             flight fit the client's queue: lower --max-in-flight or raise --client-queue",
            self.client_queue / 2
        );
        anyhow::ensure!(self.max_canvas_state >= 1024, "--max-canvas-state must be at least 1024 bytes");
        anyhow::ensure!(self.snapshot_every >= 1, "--snapshot-every must be at least 1");
        anyhow::ensure!(self.snapshot_bytes >= 1024, "--snapshot-bytes must be at least 1024 bytes");
        anyhow::ensure!(self.writer_queue >= 1 && self.max_batch >= 1, "--writer-queue and --max-batch must be >= 1");
        anyhow::ensure!(
            self.max_connections >= 1 && self.max_connections_per_user >= 1,
            "--max-connections and --max-connections-per-user must be at least 1"
        );
        anyhow::ensure!(self.max_frame_size >= 1024, "--max-frame-size must be at least 1024 bytes");
        anyhow::ensure!(self.max_messages_per_poll >= 1 && self.cleanup_batch >= 1, "batch sizes must be >= 1");
        anyhow::ensure!(
            self.presence_timeout >= self.heartbeat_interval * 3,
            "--presence-timeout must be at least three --heartbeat-interval"
        );
        anyhow::ensure!(
            self.bus != BusKind::Memory || self.local_broadcast,
            "--bus memory has no other process to deliver through: keep --local-broadcast on"
        );
        self.consumers.validate()
    }

    /// Every duration used as a tokio interval's period (zero panics) or as a deadline (zero fails everything
    /// at once), with its flag.
    fn periods_and_deadlines(&self) -> [(&'static str, Duration); 14] {
        [
            ("--poll-interval", self.poll_interval),
            ("--idle-poll-interval", self.idle_poll_interval),
            ("--cleanup-interval", self.cleanup_interval),
            ("--checkpoint-interval", self.checkpoint_interval),
            ("--heartbeat-interval", self.heartbeat_interval),
            ("--presence-timeout", self.presence_timeout),
            ("--watermark-interval", self.watermark_interval),
            ("--cursor-batch", self.cursor_batch),
            ("--ping-interval", self.ping_interval),
            ("--handshake-timeout", self.handshake_timeout),
            ("--busy-timeout", self.busy_timeout),
            ("--write-timeout", self.write_timeout),
            ("--shutdown-timeout", self.shutdown_timeout),
            ("--publish-timeout", self.publish_timeout),
        ]
    }
}
