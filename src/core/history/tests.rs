use super::*;

fn version(seq: u64, ts: i64, name: Option<&str>) -> Version {
    Version { seq, ts, name: name.map(str::to_owned), bytes: 10 }
}

fn due(floor: u64, started: i64, versions: Vec<Version>) -> HistoryDue {
    let canvas = CanvasId::parse("c1").unwrap();
    HistoryDue { canvas, generation: 1, floor, started, versions }
}

const NOW: i64 = 100 * DAY_MS;
const WEEK: i64 = 7 * DAY_MS;

#[test]
fn the_last_hour_is_kept_whole_and_the_epoch_start_with_it() {
    let versions = (1..=5).map(|i| version(i * 10, NOW - 50 * 60_000 + i as i64 * 60_000, None)).collect();
    let thinned = thinning(&due(0, NOW - 55 * 60_000, versions), NOW, WEEK);
    assert_eq!(thinned, Thinning { drop: vec![], floor: 0 });
}

#[test]
fn older_snapshots_keep_the_newest_of_each_hour_then_of_each_day() {
    let hour = |h: i64, minute: i64| NOW - h * HOUR_MS + minute * 60_000;
    let versions = vec![
        version(10, hour(30, 0) - 3 * DAY_MS, None), // three days back: its day's newest? one other that day
        version(20, hour(30, 10) - 3 * DAY_MS, None),
        version(30, hour(5, 10), None), // an hour five hours back, twice
        version(40, hour(5, 40), None),
        version(50, hour(0, -10), None), // the last hour
        version(60, hour(0, -5), None),
    ];
    let thinned = thinning(&due(0, hour(30, 0) - 4 * DAY_MS, versions), NOW, WEEK);
    assert_eq!(thinned.drop, [10, 30], "the older of two in a day, the older of two in an hour");
    assert_eq!(thinned.floor, 0, "the epoch's start is within the week");
}

#[test]
fn past_the_retention_only_the_newest_and_named_versions_stay_and_the_floor_moves_up() {
    let versions = vec![
        version(10, NOW - 9 * DAY_MS, Some("kickoff")),
        version(20, NOW - 8 * DAY_MS, None),
        version(30, NOW - 2 * DAY_MS, None),
        version(40, NOW - 9 * DAY_MS + 1, None), // (out of order by time: seq order is what counts)
        version(50, NOW - HOUR_MS / 2, None),
    ];
    let thinned = thinning(&due(0, NOW - 10 * DAY_MS, versions), NOW, WEEK);
    assert_eq!(thinned.drop, [20, 40]);
    assert_eq!(thinned.floor, 30, "the oldest kept unnamed snapshot: the named one stands alone");
}

#[test]
fn a_retention_of_zero_keeps_the_newest_only_and_the_floor_never_goes_down() {
    let versions = vec![version(10, NOW - 1000, None), version(20, NOW - 10, None)];
    assert_eq!(thinning(&due(0, NOW - 2000, versions.clone()), NOW, 0), Thinning { drop: vec![10], floor: 20 });
    let versions = vec![version(0, NOW - 2000, None), version(20, NOW - 10, None)];
    assert_eq!(thinning(&due(25, NOW, versions), NOW, 0).floor, 25, "never below what it was");
}

#[test]
fn a_forks_snapshot_at_seq_0_is_the_epochs_start() {
    let versions = vec![version(0, NOW - 9 * DAY_MS, None), version(5, NOW - 8 * DAY_MS, None)];
    let thinned = thinning(&due(0, NOW - 9 * DAY_MS, versions), NOW, WEEK);
    assert_eq!(thinned, Thinning { drop: vec![0], floor: 5 }, "past the week: the fork's start goes");
}

#[test]
fn an_unnamed_snapshot_below_the_floor_goes_and_the_floor_is_a_kept_snapshot() {
    // 10 was a named version below the floor (20), unnamed since; 20 and 30 share an hour a few hours back.
    let versions = vec![
        version(10, NOW - 2 * DAY_MS, None),
        version(20, NOW - 5 * HOUR_MS + 60_000, None),
        version(30, NOW - 5 * HOUR_MS + 120_000, None),
        version(40, NOW - 60_000, None),
    ];
    let thinned = thinning(&due(20, NOW - 3 * DAY_MS, versions), NOW, WEEK);
    assert_eq!(
        thinned,
        Thinning { drop: vec![10, 20], floor: 30 },
        "the floor moves to the snapshot that won its hour"
    );
}
