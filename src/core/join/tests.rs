//! Unit tests of joining on the in-memory bus: a join dropped at any point (after its registration, in the
//! middle of its snapshot) or a joined connection dropped without leaving leaves nothing in presence or in
//! the hub; a snapshot takes no room lock.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::{BusKind, Config};
use crate::hub::{outbox, Bounds, Hub};
use crate::metrics::Metrics;

async fn memory_bus() -> Bus {
    let mut config = Config::with_db("unused.db");
    config.bus = BusKind::Memory;
    let id = uuid::Uuid::new_v4().to_string();
    Bus::open(&config, &id, "127.0.0.1:0", Arc::new(Hub::new()), Metrics::default()).await.unwrap()
}

fn request(user: &str) -> JoinRequest {
    JoinRequest {
        canvas: CanvasId::parse("c").unwrap(),
        conn: uuid::Uuid::new_v4(),
        user: UserId::parse(user).unwrap(),
        name: None,
        resume: None,
        outbox: outbox(Bounds { frames: 64, bytes: 1 << 20, riding_bytes: 1 << 20 }).0,
    }
}

async fn connections(bus: &Bus) -> u64 {
    bus.users(None).await.unwrap().iter().map(|u| u.connections).sum()
}

async fn eventually_none(bus: &Bus) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while connections(bus).await != 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the connection left presence");
}

/// A client hanging up while its join reads the canvas drops the join: its registration must not stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_dropped_after_its_registration_leaves_presence() {
    let bus = memory_bus().await;
    let mut join = Box::pin(bus.join(request("ann")));
    // Dropped as soon as the registration shows (or, if the join won the race, the joined connection).
    tokio::select! {
        joined = &mut join => drop(joined.unwrap()),
        () = async { while connections(&bus).await == 0 { tokio::task::yield_now().await } } => {}
    }
    drop(join);
    eventually_none(&bus).await;
    bus.close().await;
}

/// A join dropped while it reads its snapshot (its client left the canvas before the welcome) leaves no
/// room behind: the one it created for the canvas is abandoned with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_dropped_while_it_reads_its_snapshot_leaves_no_room() {
    let bus = memory_bus().await;
    let mut dropped = 0;
    // Each join is polled by hand until its room shows, then dropped in the middle of its snapshot; one
    // whose read was done before the poll that created the room joins instead (its client leaves).
    for n in 0..50 {
        let canvas = CanvasId::parse(&format!("c{n}")).unwrap();
        let mut join = Box::pin(bus.join(JoinRequest { canvas: canvas.clone(), ..request("ann") }));
        let joined = loop {
            if let std::task::Poll::Ready(joined) = futures_util::poll!(&mut join) {
                break Some(joined.unwrap());
            }
            if bus.hub().room(&canvas).is_some() {
                break None;
            }
            tokio::task::yield_now().await;
        };
        match joined {
            Some(joined) => joined.membership.leave().await,
            None => {
                drop(join);
                assert!(bus.hub().room(&canvas).is_none(), "{canvas}: a room left behind");
                dropped += 1;
            }
        }
    }
    assert!(dropped > 0, "no join was dropped in the middle of its snapshot");
    eventually_none(&bus).await;
    bus.close().await;
}

/// A join reads its snapshot with no room lock held: a room busy (or slow) for as long as it likes does
/// not hold up the read, and the read holds up nothing that needs the room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(clippy::await_holding_lock, reason = "the lock is held across the read on purpose: the read must not need it")]
async fn a_snapshot_takes_no_room_lock() {
    let bus = memory_bus().await;
    let canvas = CanvasId::parse("c").unwrap();
    drop(bus.join(request("ann")).await.unwrap());
    // The leave is committed first: a commit registers its acks in the room inside its transaction, and the
    // memdb VFS (no WAL) holds readers off while a transaction commits.
    eventually_none(&bus).await;
    let room = bus.hub().room_for_join(&canvas);
    let held = room.lock();
    let read = tokio::time::timeout(Duration::from_secs(10), bus.view(&canvas, None, crate::store::Want::all())).await;
    drop(held);
    read.expect("read while the room's lock was held").unwrap();
    bus.close().await;
}

/// A session that ends without leaving (a panic) drops its membership: that leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joined_connection_dropped_without_leaving_leaves_presence() {
    let bus = memory_bus().await;
    let joined = bus.join(request("bob")).await.unwrap();
    assert_eq!(connections(&bus).await, 1);
    assert_eq!(bus.hub().counts(), (1, 1));
    drop(joined);
    eventually_none(&bus).await;
    assert_eq!(bus.hub().counts(), (0, 0), "out of its room too");
    bus.close().await;
}
