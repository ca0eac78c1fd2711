//! `--profile`: one name for the seven knobs that trade delivery latency against CPU and wake-ups. The table in
//! [`Profile::tuning`] is the only place the profiles' values are written: `--help` is generated from it, and
//! [`apply`] gives each knob its profile's value unless the knob was given explicitly (on the command line or
//! through its `RELAY_*` twin). What the knobs do is the watcher's and the writer's business, not this file's.

use std::time::Duration;

use clap::builder::PossibleValue;
use clap::parser::ValueSource;
use clap::{ArgMatches, ValueEnum};

use super::Config;

/// A named set of tuning values (`--profile`); what each is for is [`Profile::purpose`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// `low-latency`
    LowLatency,
    /// `balanced`: the flags' own defaults.
    Balanced,
    /// `throughput`
    Throughput,
    /// `low-power`
    LowPower,
}

/// The knobs a profile sets. Each field is named like the [`Config`] field (and so the flag) it sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// `--poll-interval`: how soon another process's commit is seen while canvases are active.
    pub poll_interval: Duration,
    /// `--idle-poll-interval`: how often the watcher still wakes when nothing happens.
    pub idle_poll_interval: Duration,
    /// `--backoff-after`: how long the fast polling outlasts the last traffic.
    pub backoff_after: Duration,
    /// `--max-batch`: most messages per commit; larger batches commit more per fsync and lock.
    pub max_batch: usize,
    /// `--max-messages-per-poll`: most rows per watcher query; larger reads catch up in fewer queries.
    pub max_messages_per_poll: u32,
    /// `--cursor-batch`: how late a cursor reaches other instances, against rows written per second.
    pub cursor_batch: Duration,
    /// `--checkpoint-interval`: how often the WAL is copied back; rarer checkpoints copy more at once.
    pub checkpoint_interval: Duration,
}

impl Profile {
    /// Every profile, in the order `--help` lists them.
    pub const ALL: [Profile; 4] = [Profile::LowLatency, Profile::Balanced, Profile::Throughput, Profile::LowPower];

    /// The profile table.
    pub const fn tuning(self) -> Tuning {
        const fn ms(n: u64) -> Duration {
            Duration::from_millis(n)
        }
        // The columns are Tuning's fields, in order.
        let (poll, idle, backoff, batch, per_poll, cursors, checkpoint) = match self {
            Profile::LowLatency => (Duration::from_micros(250), ms(5), ms(10_000), 500, 500, ms(10), ms(100)),
            Profile::Balanced => (ms(1), ms(20), ms(2_000), 2000, 1000, ms(25), ms(100)),
            Profile::Throughput => (ms(2), ms(50), ms(2_000), 8000, 4000, ms(50), ms(500)),
            Profile::LowPower => (ms(5), ms(250), ms(500), 2000, 1000, ms(100), ms(1_000)),
        };
        Tuning {
            poll_interval: poll,
            idle_poll_interval: idle,
            backoff_after: backoff,
            max_batch: batch,
            max_messages_per_poll: per_poll,
            cursor_batch: cursors,
            checkpoint_interval: checkpoint,
        }
    }

    /// Its name on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Profile::LowLatency => "low-latency",
            Profile::Balanced => "balanced",
            Profile::Throughput => "throughput",
            Profile::LowPower => "low-power",
        }
    }

    /// What it is for, as `--help` says it.
    pub const fn purpose(self) -> &'static str {
        match self {
            Profile::LowLatency => "the lowest delivery latency, for more CPU and smaller commits",
            Profile::Balanced => "about a millisecond of latency at modest CPU (the defaults)",
            Profile::Throughput => "the most messages per second, for a few more milliseconds of latency",
            Profile::LowPower => "the fewest wake-ups when traffic is light, for more latency",
        }
    }
}

impl ValueEnum for Profile {
    fn value_variants<'a>() -> &'a [Self] {
        &Profile::ALL
    }

    /// Each profile's line of `--help`: its purpose, then the value it gives each knob.
    fn to_possible_value(&self) -> Option<PossibleValue> {
        let values: Vec<String> = self.tuning().flags().iter().map(|(flag, value)| format!("{flag} {value}")).collect();
        Some(PossibleValue::new(self.name()).help(format!("{}: {}", self.purpose(), values.join(", "))))
    }
}

impl Tuning {
    /// Each knob as (flag, value as written on the command line).
    pub fn flags(&self) -> [(&'static str, String); 7] {
        // Destructured, so a knob added to Tuning cannot be left out here.
        let Tuning {
            poll_interval,
            idle_poll_interval,
            backoff_after,
            max_batch,
            max_messages_per_poll,
            cursor_batch,
            checkpoint_interval,
        } = *self;
        let duration = |d: Duration| humantime::format_duration(d).to_string();
        [
            ("--poll-interval", duration(poll_interval)),
            ("--idle-poll-interval", duration(idle_poll_interval)),
            ("--backoff-after", duration(backoff_after)),
            ("--max-batch", max_batch.to_string()),
            ("--max-messages-per-poll", max_messages_per_poll.to_string()),
            ("--cursor-batch", duration(cursor_batch)),
            ("--checkpoint-interval", duration(checkpoint_interval)),
        ]
    }
}

/// `--profile`'s long help (each profile's values follow it, from [`Profile`]'s possible values).
pub fn long_help() -> String {
    let flags: Vec<&str> = Profile::Balanced.tuning().flags().iter().map(|(flag, _)| *flag).collect();
    format!(
        "Tuning profile: sets {} together. A knob given explicitly, as a flag or through its RELAY_* variable, \
         keeps its own value.",
        flags.join(", ")
    )
}

/// Gives every knob of `config.profile` that was left at its default (`matches` are the `serve` subcommand's)
/// the profile's value; a knob given on the command line or by its environment variable keeps it.
pub fn apply(config: &mut Config, matches: &ArgMatches) {
    // Destructured, so a knob added to Tuning cannot be left out here.
    let Tuning {
        poll_interval,
        idle_poll_interval,
        backoff_after,
        max_batch,
        max_messages_per_poll,
        cursor_batch,
        checkpoint_interval,
    } = config.profile.tuning();
    let defaulted = |id: &str| matches.value_source(id) == Some(ValueSource::DefaultValue);
    // The argument id of a derived flag is its field's name.
    macro_rules! unless_given {
        ($($knob:ident),*) => {
            $(if defaulted(stringify!($knob)) {
                config.$knob = $knob;
            })*
        };
    }
    unless_given!(
        poll_interval,
        idle_poll_interval,
        backoff_after,
        max_batch,
        max_messages_per_poll,
        cursor_batch,
        checkpoint_interval
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Cli, Command};

    /// The knobs' values as `config` holds them.
    fn tuning_of(config: &Config) -> Tuning {
        Tuning {
            poll_interval: config.poll_interval,
            idle_poll_interval: config.idle_poll_interval,
            backoff_after: config.backoff_after,
            max_batch: config.max_batch,
            max_messages_per_poll: config.max_messages_per_poll,
            cursor_batch: config.cursor_batch,
            checkpoint_interval: config.checkpoint_interval,
        }
    }

    fn serve(args: &[&str]) -> Config {
        let cli = Cli::try_parse_resolved_from(["canvas-relay", "serve"].iter().chain(args)).unwrap();
        let Command::Serve(config) = cli.command;
        config
    }

    #[test]
    fn balanced_is_what_the_flags_default_to() {
        use clap::Parser;
        let Command::Serve(unresolved) = Cli::parse_from(["canvas-relay", "serve"]).command;
        assert_eq!(tuning_of(&unresolved), Profile::Balanced.tuning());
        assert_eq!(serve(&[]).profile, Profile::Balanced);
    }

    #[test]
    fn a_profile_sets_each_of_its_knobs() {
        for profile in Profile::ALL {
            let config = serve(&["--profile", profile.name()]);
            assert_eq!(tuning_of(&config), profile.tuning(), "{profile:?}");
            config.validate().unwrap();
        }
        let low_latency = serve(&["--profile", "low-latency"]);
        assert_eq!((low_latency.poll_interval, low_latency.max_batch), (Duration::from_micros(250), 500));
    }

    #[test]
    fn a_flag_given_explicitly_wins_over_the_profile_even_at_the_default_value() {
        let config = serve(&["--profile", "low-power", "--poll-interval", "1ms", "--max-batch", "10"]);
        let expected = Tuning { poll_interval: Duration::from_millis(1), max_batch: 10, ..Profile::LowPower.tuning() };
        assert_eq!(tuning_of(&config), expected);
    }

    /// clap reports a value from a knob's `RELAY_*` twin as `ValueSource::EnvVariable`, so it counts as given.
    /// Setting a variable in this multi-threaded test process would race with the other tests, so the test runs
    /// itself again in a child process whose environment has the variables from the start.
    #[test]
    fn an_environment_twin_wins_over_the_profile() {
        const CHILD: &str = "CANVAS_RELAY_PROFILE_TEST_CHILD";
        if std::env::var_os(CHILD).is_some() {
            let config = serve(&[]);
            assert_eq!(config.profile, Profile::Throughput);
            let expected = Tuning { cursor_batch: Duration::from_millis(7), ..Profile::Throughput.tuning() };
            assert_eq!(tuning_of(&config), expected);
            return;
        }
        let name = format!("{}::an_environment_twin_wins_over_the_profile", module_path!());
        let name = name.split_once("::").map_or(name.as_str(), |(_crate, path)| path);
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--test-threads", "1"])
            .env(CHILD, "1")
            .env("RELAY_PROFILE", "throughput")
            .env("RELAY_CURSOR_BATCH", "7ms")
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&child.stdout);
        assert!(child.status.success() && report.contains("1 passed"), "{report}");
    }

    #[test]
    fn help_says_what_every_profile_sets() {
        let help = Cli::try_parse_resolved_from(["canvas-relay", "serve", "--help"]).unwrap_err().to_string();
        assert!(help.contains("--profile <PROFILE>") && help.contains(&long_help()), "{help}");
        for profile in Profile::ALL {
            let line = help.lines().find(|line| line.trim_start().starts_with(&format!("- {}:", profile.name())));
            let line = line.unwrap_or_else(|| panic!("no line for {profile:?} in\n{help}"));
            for (flag, value) in profile.tuning().flags() {
                assert!(line.contains(&format!("{flag} {value}")), "{line}");
                assert!(help.contains(&format!("\n      {flag} <")), "{flag} is not an option of serve");
            }
        }
    }

    /// The README's table of profiles, as this table would write it.
    #[test]
    fn the_readme_shows_this_table() {
        let mut table = String::from("| knob |");
        for profile in Profile::ALL {
            table += &format!(" `{}` |", profile.name());
        }
        table += "\n|---|---|---|---|---|\n";
        for (row, (flag, _)) in Profile::Balanced.tuning().flags().iter().enumerate() {
            table += &format!("| `{flag}` |");
            for profile in Profile::ALL {
                table += &format!(" `{}` |", profile.tuning().flags()[row].1);
            }
            table += "\n";
        }
        let readme = include_str!("../../README.md");
        assert!(readme.contains(&table), "README.md should contain:\n{table}");
    }
}
