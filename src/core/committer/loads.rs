//! Canvases the committer is loading. A publish that needs the state of a canvas the committer does not hold
//! waits here while that canvas is read (its newest snapshot and the ops after it) and folded on a task of
//! its own; meanwhile the committer goes on committing every other canvas. Every later publish for that
//! canvas waits behind it, so a canvas's publishes are still committed in the order they came. Once the
//! canvas is held, the committer commits what waited, as one round.
//!
//! A big canvas's first join after a start thus holds up that canvas only; and since a join's registration
//! needs only the canvas's head and connections, only those are read for it ([`Canvas::without_objects`]):
//! reading and folding 100,000 objects (tens of milliseconds) waits for the canvas's first object op. A load reads outside the commit: if another instance commits to the
//! canvas meanwhile, the guarded commit finds it moved and the fold takes the news, as for any other
//! conflict.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::{mpsc, Semaphore};

use super::Committer;
use crate::core::fold::canvas::{is_plain, Canvas};
use crate::core::{refuse_all, BusError, Publish, Unavailable};
use crate::protocol::CanvasId;
use crate::store::{CanvasRead, CanvasReader, Commit, Want};

/// Canvases read at once, at most (a restart's first joins reach many canvases together).
const CONCURRENT_LOADS: usize = 8;

/// A read bigger than this (snapshot bytes, or ops after it) is folded on a blocking thread.
const FOLD_INLINE: (usize, usize) = (256 * 1024, 1000);

/// A canvas read and folded, ready to be held: its state, and the object ops (with the bytes of their
/// data) that follow its newest snapshot.
pub struct Loaded {
    pub canvas: Canvas,
    pub ops: u64,
    pub bytes: u64,
}

/// A load that finished, and the publishes that waited for it, in the order they came.
pub struct Finished {
    pub canvas: CanvasId,
    pub result: Result<Loaded, BusError>,
    pub waited: Vec<Publish>,
}

/// A load's canvas and what came of it.
type Done = (CanvasId, Result<Loaded, BusError>);

/// The committer's loads under way.
pub struct Loads {
    reader: Arc<dyn CanvasReader>,
    /// Where loads run: the process's runtime (the committer itself may run on a thread of its own).
    runtime: Handle,
    /// Canvases being read, each with the publishes for it that came meanwhile.
    waiting: HashMap<CanvasId, Vec<Publish>>,
    /// Publishes waiting, and how many may (`--writer-queue`): past it the committer takes nothing more
    /// from its lanes until a load finishes, so their back-pressure holds while canvases load.
    count: usize,
    capacity: usize,
    /// Finished loads come back here (the committer holds both ends: `recv` never ends).
    done: (mpsc::UnboundedSender<Done>, mpsc::UnboundedReceiver<Done>),
    permits: Arc<Semaphore>,
}

impl Loads {
    pub fn new(reader: Arc<dyn CanvasReader>, runtime: Handle, capacity: usize) -> Self {
        let (done, waiting, permits) = (mpsc::unbounded_channel(), HashMap::new(), Semaphore::new(CONCURRENT_LOADS));
        Loads { reader, runtime, waiting, count: 0, capacity, done, permits: Arc::new(permits) }
    }

    /// Whether as many publishes wait as may.
    pub fn full(&self) -> bool {
        self.count >= self.capacity
    }

    /// Whether any load is under way.
    pub fn pending(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Whether `canvas` is being loaded: its publishes wait.
    pub fn is_loading(&self, canvas: &CanvasId) -> bool {
        self.waiting.contains_key(canvas)
    }

    /// Has `publish` wait for its canvas, starting to load it if nothing does yet.
    pub fn wait(&mut self, publish: Publish) {
        self.count += 1;
        if let Some(waited) = self.waiting.get_mut(&publish.canvas) {
            waited.push(publish);
            return;
        }
        let canvas = publish.canvas.clone();
        let with_objects = publish.needs_objects();
        self.waiting.insert(canvas.clone(), vec![publish]);
        let (reader, permits, done) = (self.reader.clone(), self.permits.clone(), self.done.0.clone());
        self.runtime.spawn(async move {
            // Reports the load whatever happens to the task: dropped unfinished (a panic in the fold, the
            // runtime shutting down), it answers `ReadLost`, so what waits is refused rather than kept.
            let report = Report { canvas, done, sent: false };
            let result = match permits.acquire_owned().await {
                Ok(_permit) => load(&*reader, &report.canvas, with_objects).await,
                Err(_) => Err(Unavailable::ReadLost.into()),
            };
            report.send(result);
        });
    }

    /// The next load to finish. Cancel-safe: nothing is lost if the future is dropped unfinished.
    pub async fn next(&mut self) -> Finished {
        loop {
            let Some((canvas, result)) = self.done.1.recv().await else { return std::future::pending().await };
            if let Some(waited) = self.waiting.remove(&canvas) {
                self.count -= waited.len();
                return Finished { canvas, result, waited };
            }
        }
    }

    /// Every publish still waiting (the committer is stopping); their loads are let go.
    pub fn drain(&mut self) -> Vec<Publish> {
        self.count = 0;
        self.waiting.drain().flat_map(|(_, waited)| waited).collect()
    }
}

/// A load's way back to the committer, sent once: by the load, or when its task is dropped.
struct Report {
    canvas: CanvasId,
    done: mpsc::UnboundedSender<Done>,
    sent: bool,
}

impl Report {
    fn send(mut self, result: Result<Loaded, BusError>) {
        self.sent = true;
        let _ = self.done.send((self.canvas.clone(), result));
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        if !self.sent {
            let _ = self.done.send((self.canvas.clone(), Err(Unavailable::ReadLost.into())));
        }
    }
}

/// Reads a canvas, whole and folded (a big one on a blocking thread) or, unless `with_objects`, its head and
/// connections only.
async fn load(reader: &dyn CanvasReader, canvas: &CanvasId, with_objects: bool) -> Result<Loaded, BusError> {
    if !with_objects {
        let read = reader.read_canvas(canvas, Want::head()).await?;
        return Ok(Loaded { canvas: Canvas::without_objects(read), ops: 0, bytes: 0 });
    }
    let read = reader.read_canvas(canvas, Want::all()).await?;
    let (ops, bytes) = (read.ops.len() as u64, read.ops.iter().map(|op| op.data.get().len() as u64).sum());
    let big = read.snapshot.as_ref().is_some_and(|s| s.json.len() > FOLD_INLINE.0) || read.ops.len() > FOLD_INLINE.1;
    let canvas_id = canvas.clone();
    let fold = move |read: CanvasRead| {
        Canvas::from_read(read).map_err(|refusal| {
            tracing::error!(canvas = %canvas_id, %refusal, "the canvas's snapshot and log do not fold");
            BusError::from(Unavailable::Corrupt("a canvas's snapshot and log do not fold"))
        })
    };
    let canvas = match big {
        true => tokio::task::spawn_blocking(move || fold(read)).await.map_err(|_| Unavailable::ReadLost)??,
        false => fold(read)?,
    };
    Ok(Loaded { canvas, ops, bytes })
}

impl<W: Commit> Committer<W> {
    /// The publishes to commit now. The others wait for their canvas to be loaded: those that need the
    /// state of a canvas not held (an object op needs its objects; presence and idempotency keys only its
    /// head and connections), and every later one for a canvas being loaded (a canvas's publishes are
    /// committed in the order they came).
    pub(super) fn hold_for_loads(&mut self, publishes: Vec<Publish>) -> Vec<Publish> {
        let mut now = Vec::with_capacity(publishes.len());
        for publish in publishes {
            let loading = self.loads.is_loading(&publish.canvas);
            let with_objects = publish.needs_objects();
            if loading || (!is_plain(&publish) && !self.canvases.holds(&publish.canvas, with_objects)) {
                self.loads.wait(publish);
            } else {
                now.push(publish);
            }
        }
        now
    }

    /// Waits for every load under way, committing what waited for each.
    pub(crate) async fn finish_loads(&mut self) {
        while self.loads.pending() {
            let finished = self.loads.next().await;
            self.loaded(finished).await;
        }
    }

    /// A canvas loaded: it is held, and what waited for it is committed; or it could not be read, and what
    /// waited is refused (its disconnects are tried again at the next heartbeat).
    pub(super) async fn loaded(&mut self, finished: Finished) {
        let Finished { canvas, result, waited } = finished;
        match result {
            Ok(loaded) => {
                self.canvases.read(canvas, loaded.canvas, loaded.ops, loaded.bytes);
                self.commit(waited).await;
            }
            Err(error) => {
                tracing::warn!(%canvas, %error, "a canvas could not be loaded; its publishes are refused");
                for publish in &waited {
                    self.leave_later(publish);
                }
                refuse_all(waited, error);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;
    use tokio::sync::oneshot;

    use super::*;
    use crate::core::Origin;
    use crate::protocol::{LoggedMessage, UserId};

    /// A reader whose every read panics, as a fold that cannot cope would.
    struct Panics;

    #[async_trait::async_trait]
    impl CanvasReader for Panics {
        async fn read_canvas(&self, _: &CanvasId, _: Want) -> Result<CanvasRead, BusError> {
            panic!("the read failed in a way nobody foresaw")
        }
    }

    #[tokio::test]
    async fn a_load_whose_task_dies_is_reported_and_what_waited_is_handed_back() {
        let mut loads = Loads::new(Arc::new(Panics), Handle::current(), 10);
        let data = RawValue::from_string("1".into()).unwrap();
        let message = LoggedMessage::new("note", data, None).unwrap();
        let (canvas, user) = (CanvasId::parse("c").unwrap(), UserId::parse("u").unwrap());
        loads.wait(Publish::message(canvas.clone(), message, user, Origin::Caller(oneshot::channel().0)));
        let finished = tokio::time::timeout(std::time::Duration::from_secs(10), loads.next()).await.unwrap();
        assert_eq!(finished.canvas, canvas);
        assert!(matches!(finished.result, Err(BusError::Unavailable(Unavailable::ReadLost))));
        assert_eq!(finished.waited.len(), 1);
        assert!(!loads.pending() && !loads.full());
    }
}
