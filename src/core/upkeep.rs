//! The bus's periodic upkeep, written once for every store, as independent loops so that none waits for
//! another:
//! - every `--cursor-batch`, this instance's coalesced cursors, presence states and events go to the others;
//! - every `--heartbeat-interval`, this instance's heartbeat, then: the connections of instances silent for
//!   the presence timeout (less one interval) are expired, through the committer's urgent lane (a
//!   `user-disconnected` where it was the user's last); this instance's own connections that the store
//!   lost (others took it for dead while its heartbeat was late) are registered again; disconnects the store
//!   did not take are tried again; and a store that cannot go on stops the instance (`fatal`);
//! - every `--cleanup-interval`, the store deletes what nobody needs any more, and canvases whose object ops
//!   since their newest snapshot are getting old get a snapshot, so their log can go too.
//!
//! A survivor's expiry applies only if the instance is still silent when it commits. One that stalled
//! longer than the timeout and whose connections were expired meanwhile finds them gone at its next
//! heartbeat and registers them again, each at its own place in presence (their users see them leave and
//! return, in order).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{snapshots, Bus, BusError, PresenceChange, Publish};
use crate::clock::now_ms;
use crate::config::Config;
use crate::cursors::CursorBuffer;
use crate::hub::Member;
use crate::periodic::{every, ticker};
use crate::protocol::ConnId;
use crate::store::{Post, Whose};

/// Canvases snapshotted per cleanup round at most because their log is getting old.
const STALE_PER_ROUND: usize = 100;

/// Disconnects the store did not take (it was down): tried again every heartbeat until it takes them.
#[derive(Debug, Default)]
pub struct Leaving(Mutex<Vec<Member>>);

impl Leaving {
    pub fn later(&self, member: Member) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(member);
    }

    fn take(&self) -> Vec<Member> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Runs until `stop` is cancelled. Sends on `fatal` why the instance cannot go on, if it cannot.
pub async fn run(
    bus: Bus,
    cursors: Arc<CursorBuffer>,
    config: Config,
    stop: CancellationToken,
    fatal: oneshot::Sender<String>,
) {
    let (bus, config, cursors) = (&bus, &config, &cursors);
    tokio::join!(
        every(config.cursor_batch, stop.clone(), move || async move {
            let batches = cursors.take();
            if !batches.is_empty() {
                post_cursors(bus, batches).await;
            }
        }),
        heartbeats(bus, config, stop.clone(), fatal),
        every(config.cleanup_interval, stop, move || clean_up(bus, config)),
    );
}

/// Hands the batches to the other instances; the presence states they carry are kept first, for joiners'
/// `welcome.peers`, so that whoever sees a state relayed finds it kept. Best effort: a batch lost is replaced
/// by the next one.
async fn post_cursors(bus: &Bus, batches: Vec<crate::cursors::CursorBatch>) {
    let states: Vec<_> = batches
        .iter()
        .flat_map(|batch| {
            let canvas = &batch.canvas;
            batch.states.iter().map(move |(conn, data)| {
                let state = (data != "null").then(|| data.clone());
                (canvas.clone(), *conn, state)
            })
        })
        .collect();
    if !states.is_empty() {
        if let Err(error) = bus.store().save_states(states).await {
            tracing::debug!(%error, "presence states not kept (a joiner sees the next one)");
        }
    }
    if let Err(error) = bus.store().post(Post::Cursors(batches)).await {
        tracing::debug!(%error, "cursor batch not sent (cursors are best effort)");
    }
}

/// This instance's heartbeat, and what is checked with it.
async fn heartbeats(bus: &Bus, config: &Config, stop: CancellationToken, fatal: oneshot::Sender<String>) {
    let mut fatal = Some(fatal);
    let mut ticks = ticker(config.heartbeat_interval);
    let mut last_beat = Instant::now();
    // Others expire an instance silent for the presence timeout less one heartbeat: half of that is late
    // enough to say so in the log.
    let dead_after = config.presence_timeout.saturating_sub(config.heartbeat_interval);
    let late_after = dead_after / 2;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if let Some(reason) = bus.store().fatal() {
            if let Some(fatal) = fatal.take() {
                let _ = fatal.send(reason);
            }
            continue;
        }
        match bus.store().heartbeat().await {
            Ok(_) => {
                let since_last = last_beat.elapsed();
                last_beat = Instant::now();
                if since_last > late_after {
                    tracing::warn!(
                        ?since_last,
                        "a heartbeat was late: others may have expired this instance's connections"
                    );
                }
                // Only after a heartbeat that went through (the store then knows this instance alive).
                if let Err(error) = restore_presence(bus).await {
                    tracing::warn!(%error, "could not check this instance's presence");
                }
            }
            Err(error) => tracing::warn!(%error, "heartbeat failed"),
        }
        // A disconnect that cannot even be queued (the bus is stopping) goes back on the list.
        let mut leaving = bus.inner.leaving.take().into_iter();
        while let Some(member) = leaving.next() {
            if bus.publish(Publish::leaving(member.clone(), PresenceChange::Disconnect)).await.is_err() {
                std::iter::once(member).chain(leaving).for_each(|m| bus.inner.leaving.later(m));
                break;
            }
        }
        let dead_after_ms = dead_after.as_millis() as i64;
        if let Err(error) = expire_dead(bus, dead_after_ms).await {
            tracing::warn!(%error, "could not expire the connections of dead instances");
        }
    }
}

/// Disconnects, in presence, every connection of instances silent for `dead_after_ms`. Several survivors
/// may do this at once: only the commit that removes a connection logs its disconnect, and a removal is
/// applied only if the instance is still that silent when it commits (it may have come back).
async fn expire_dead(bus: &Bus, dead_after_ms: i64) -> Result<(), BusError> {
    let own = bus.store().instance_id().to_owned();
    let dead_before = now_ms() - dead_after_ms;
    let mut orphans = bus.store().connections(Whose::SilentSince(dead_before)).await?;
    orphans.retain(|(_, row)| *row.row.instance != *own);
    if !orphans.is_empty() {
        tracing::info!(connections = orphans.len(), "expiring connections of instances that stopped heartbeating");
    }
    for (canvas, row) in orphans {
        let member = Member {
            canvas,
            conn: row.conn,
            user: crate::protocol::UserId::parse(&row.row.user)
                .map_err(|_| super::Unavailable::Corrupt("a user id"))?,
            name: row.row.name.as_deref().map(str::to_owned),
            opened: row.row.opened,
        };
        bus.publish_urgent(Publish::leaving(member, PresenceChange::Expire { dead_after_ms })).await?;
    }
    Ok(())
}

/// Registers again this instance's connections that the store lost (survivors took the instance for dead
/// while its heartbeat was late): `user-connected` is logged where it is the user's first again. A
/// connection that left while its registration was on its way is removed again once that commits.
async fn restore_presence(bus: &Bus) -> Result<(), BusError> {
    let (_, local) = bus.hub().counts();
    if local == 0 {
        return Ok(());
    }
    let own = bus.store().instance_id().to_owned();
    let registered: HashSet<ConnId> =
        bus.store().connections(Whose::Instance(own)).await?.into_iter().map(|(_, row)| row.conn).collect();
    let missing: Vec<Member> = bus.hub().members().into_iter().filter(|m| !registered.contains(&m.conn)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    tracing::warn!(
        connections = missing.len(),
        "this instance's connections were expired by others; registering them again"
    );
    let mut waits = Vec::new();
    for member in &missing {
        let (done, committed) = oneshot::channel();
        bus.publish_urgent(Publish::presence(PresenceChange::Connect, member.clone(), Some(done))).await?;
        waits.push(committed);
    }
    for committed in waits {
        let _ = committed.await;
    }
    let still_here: HashSet<ConnId> = bus.hub().members().into_iter().map(|m| m.conn).collect();
    for member in missing.into_iter().filter(|m| !still_here.contains(&m.conn)) {
        bus.publish(Publish::leaving(member, PresenceChange::Disconnect)).await?;
    }
    Ok(())
}

/// The store's cleanup, then snapshots of canvases whose log after their newest snapshot is older than the
/// TTL (so that cleanup, which keeps object ops back to the newest snapshot, can drop it next time).
async fn clean_up(bus: &Bus, config: &Config) {
    match bus.store().clean_up().await {
        Ok(0) => {}
        Ok(deleted) => tracing::debug!(deleted, "cleanup deleted what nobody needs"),
        Err(error) => tracing::warn!(%error, "cleanup failed; the next round retries"),
    }
    let before = now_ms() - config.message_ttl.as_millis() as i64;
    match bus.store().stale(before, STALE_PER_ROUND).await {
        Ok(canvases) => {
            for canvas in canvases {
                if let Err(error) = snapshots::take(bus.store().as_ref(), &canvas).await {
                    tracing::warn!(%canvas, %error, "could not snapshot a canvas whose log is getting old");
                }
            }
        }
        Err(error) => tracing::warn!(%error, "could not list canvases whose log is getting old"),
    }
    if let Err(error) = super::history::thin(bus, config.history_retention).await {
        tracing::warn!(%error, "could not thin canvases' history; the next round retries");
    }
}
