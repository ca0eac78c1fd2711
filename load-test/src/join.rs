//! The `join` scenario: what joining a big canvas costs. Fills one canvas (`fill`), times lone joins and a
//! storm of simultaneous joins (`welcome`), samples the relays' RSS meanwhile (`rss`), and runs latency load
//! on another canvas throughout (`scenario::background`) to show what the traffic around the joins sees.
//! Failed joins are reported by reason; only a setup that cannot start (the filler cannot join, a pid
//! cannot be read) ends the run with an error.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::fill::{self, Filled};
use crate::report::{self, nearest_rank, Report};
use crate::rss::Sampler;
use crate::scenario;
use crate::welcome::{self, Joined};
use crate::JoinArgs;

/// How far ahead of now the storm's joiners are told to start, so all are waiting when the instant comes.
const STORM_LEAD: Duration = Duration::from_millis(200);

/// The outcome of a set of joins.
#[derive(Default)]
struct Joins {
    /// Joins attempted.
    tried: usize,
    /// Milliseconds to the whole welcome of each successful join, ascending.
    ms: Vec<f64>,
    /// The size of a successful welcome (all are the same canvas state).
    bytes: usize,
    /// Failure reasons and how often each happened.
    failures: BTreeMap<String, usize>,
}

impl Joins {
    fn add(&mut self, result: Result<Joined, welcome::JoinFailure>) -> Option<Joined> {
        self.tried += 1;
        match result {
            Ok(joined) => {
                self.ms.push(joined.elapsed.as_micros() as f64 / 1000.0);
                self.bytes = joined.bytes;
                Some(joined)
            }
            Err(failure) => {
                *self.failures.entry(failure.to_string()).or_default() += 1;
                None
            }
        }
    }

    fn to_json(&self) -> Value {
        let q = |q| nearest_rank(&self.ms, q);
        json!({
            "tried": self.tried, "ok": self.ms.len(), "welcome_bytes": self.bytes,
            "ms": {"min": q(0.0), "p50": q(0.5), "p99": q(0.99), "max": q(1.0)},
            "failures": self.failures,
        })
    }
}

/// Relay memory around the joins, per target (KiB).
struct Memory {
    /// The relays, in --pids order.
    targets: Vec<String>,
    /// RSS after the fill, before the first lone join: the canvas state held, no join yet.
    before_joins: Vec<u64>,
    /// The highest RSS sampled from the storm's start to its last answer.
    storm_peak: Vec<u64>,
}

/// Runs the scenario and prints its report; an error only when it cannot start (see the module doc).
pub async fn join(args: &JoinArgs) -> anyhow::Result<()> {
    let targets = &args.common.targets;
    anyhow::ensure!(
        args.pids.is_empty() || args.pids.len() == targets.len(),
        "give one --pids entry per --targets entry, in order"
    );
    let sampler = if args.pids.is_empty() { None } else { Some(Sampler::start(&args.pids)?) };
    let canvas = format!("{}-join", args.common.prefix);
    let filler = welcome::open(&targets[0], &canvas, "filler")
        .await
        .map_err(|e| anyhow::anyhow!("the filler could not join: {e}"))?;
    anyhow::ensure!(
        filler.objects == 0,
        "canvas {canvas} already has {} objects: use another --prefix or a fresh database",
        filler.objects
    );
    let background = match args.background_rate {
        0 => None,
        rate => Some(scenario::background(&args.common, rate, args.background_clients).await?),
    };
    let filled = fill::fill(filler.socket, args.objects, args.object_bytes).await;
    tokio::time::sleep(args.pause).await;
    let before_joins = sampler.as_ref().map(Sampler::reset);
    let lone = lone_joins(targets, &canvas, args.joins, filled.acked).await;
    if let Some(sampler) = &sampler {
        sampler.reset();
    }
    let storm = storm(targets, &canvas, args.storm, filled.acked).await;
    let memory = sampler.as_ref().zip(before_joins).map(|(sampler, before_joins)| Memory {
        targets: targets.clone(),
        before_joins,
        storm_peak: sampler.peaks(),
    });
    let background = match background {
        Some(background) => Some(background.finish().await.map_err(|e| e.to_string())),
        None => None,
    };
    let outcome = Outcome { args, filled, lone, storm, memory, background };
    if args.common.json {
        println!("{}", serde_json::to_string_pretty(&outcome.to_json())?);
    } else {
        print!("{}", outcome.human());
    }
    Ok(())
}

/// `count` joins one after another, alternating targets, each closed before the next.
async fn lone_joins(targets: &[String], canvas: &str, count: usize, expected: usize) -> Joins {
    let mut joins = Joins::default();
    for i in 0..count {
        let result = welcome::join(&targets[i % targets.len()], canvas, &format!("lone{i}"), expected).await;
        if let Some(joined) = joins.add(result) {
            welcome::close(joined.socket).await;
        }
    }
    joins.ms.sort_by(f64::total_cmp);
    joins
}

/// `count` joiners spread over the targets, all starting at one instant; their sockets stay open until
/// every one has its answer.
async fn storm(targets: &[String], canvas: &str, count: usize, expected: usize) -> Joins {
    let start = tokio::time::Instant::now() + STORM_LEAD;
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            let (target, canvas) = (targets[i % targets.len()].clone(), canvas.to_string());
            tokio::spawn(async move {
                tokio::time::sleep_until(start).await;
                welcome::join(&target, &canvas, &format!("storm{i}"), expected).await
            })
        })
        .collect();
    let mut joins = Joins::default();
    let mut sockets = Vec::new();
    for task in tasks {
        let result =
            task.await.unwrap_or_else(|e| Err(welcome::JoinFailure::Dropped(format!("joiner task failed: {e}"))));
        sockets.extend(joins.add(result).map(|joined| joined.socket));
    }
    futures_util::future::join_all(sockets.into_iter().map(welcome::close)).await;
    joins.ms.sort_by(f64::total_cmp);
    joins
}

/// Everything the run found, for printing.
struct Outcome<'a> {
    /// What was asked for, for the title.
    args: &'a JoinArgs,
    filled: Filled,
    /// The sequential joins.
    lone: Joins,
    /// The simultaneous joins.
    storm: Joins,
    /// Without --pids, none.
    memory: Option<Memory>,
    /// The background load's report, or why it failed.
    background: Option<Result<Report, String>>,
}

impl Outcome<'_> {
    fn title(&self) -> String {
        let a = self.args;
        format!(
            "join: {} objects of ~{} B on one canvas, {} lone joins, a storm of {}, over {} instances",
            a.objects,
            a.object_bytes,
            a.joins,
            a.storm,
            a.common.targets.len()
        )
    }

    fn to_json(&self) -> Value {
        let f = &self.filled;
        let memory = self.memory.as_ref().map(|m| {
            let rows = m.targets.iter().zip(m.before_joins.iter().zip(&m.storm_peak));
            rows.map(|(target, (before, peak))| {
                json!({"target": target, "rss_before_joins_kib": before, "rss_storm_peak_kib": peak,
                       "growth_kib": peak.saturating_sub(*before)})
            })
            .collect::<Vec<_>>()
        });
        let background = match &self.background {
            Some(Ok(report)) => report.to_json(),
            Some(Err(error)) => json!({"error": error}),
            None => Value::Null,
        };
        json!({
            "scenario": self.title(),
            "fill": {"objects": self.args.objects, "acked": f.acked, "seconds": f.elapsed.as_secs_f64(),
                     "per_second": rate(f), "errors": f.errors, "stopped": f.stopped},
            "lone_joins": self.lone.to_json(),
            "storm": self.storm.to_json(),
            "relays": memory,
            "background": background,
        })
    }

    fn human(&self) -> String {
        let f = &self.filled;
        let mut out = format!("{}\n", self.title());
        out += &format!(
            "  fill: {}/{} objects acked in {:.2} s ({:.0}/s)\n",
            f.acked,
            self.args.objects,
            f.elapsed.as_secs_f64(),
            rate(f)
        );
        if let Some(stopped) = &f.stopped {
            out += &format!("    stopped early: {stopped}\n");
        }
        for (code, n) in &f.errors {
            out += &format!("    error {code}: {n}\n");
        }
        out += &joins_human("lone joins", &self.lone, false);
        out += &joins_human("storm", &self.storm, true);
        if let Some(m) = &self.memory {
            for (target, (before, peak)) in m.targets.iter().zip(m.before_joins.iter().zip(&m.storm_peak)) {
                let growth = peak.saturating_sub(*before);
                out += &format!("  relay {target} RSS: {before} KiB before the joins, {peak} KiB peak in the storm (+{growth} KiB)\n");
            }
        }
        match &self.background {
            Some(Ok(report)) => out += &report::indented(report, 2),
            Some(Err(error)) => out += &format!("  background load failed: {error}\n"),
            None => out += "  no background load\n",
        }
        out
    }
}

fn rate(filled: &Filled) -> f64 {
    filled.acked as f64 / filled.elapsed.as_secs_f64().max(1e-9)
}

fn joins_human(name: &str, joins: &Joins, tail: bool) -> String {
    let q = |q| nearest_rank(&joins.ms, q);
    let mut out = format!("  {name}: {}/{} ok", joins.ms.len(), joins.tried);
    if !joins.ms.is_empty() {
        out += &format!(", welcome {} B", joins.bytes);
        if tail {
            out += &format!("; p50 {:.1}  p99 {:.1}  max {:.1} ms", q(0.5), q(0.99), q(1.0));
        } else {
            out += &format!("; min {:.1}  p50 {:.1}  max {:.1} ms", q(0.0), q(0.5), q(1.0));
        }
    }
    out += "\n";
    for (reason, n) in &joins.failures {
        out += &format!("    failed {n}x: {reason}\n");
    }
    out
}
