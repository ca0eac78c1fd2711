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

use crate::core::fold::canvas::Canvas;
use crate::core::{BusError, Publish, Unavailable};
use crate::protocol::CanvasId;
use crate::store::{CanvasRead, CanvasReader, Want};

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
    /// Finished loads come back here (the committer holds both ends: `recv` never ends).
    done: (mpsc::UnboundedSender<Done>, mpsc::UnboundedReceiver<Done>),
    permits: Arc<Semaphore>,
}

impl Loads {
    pub fn new(reader: Arc<dyn CanvasReader>, runtime: Handle) -> Self {
        let done = mpsc::unbounded_channel();
        Loads { reader, runtime, waiting: HashMap::new(), done, permits: Arc::new(Semaphore::new(CONCURRENT_LOADS)) }
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
        if let Some(waited) = self.waiting.get_mut(&publish.canvas) {
            waited.push(publish);
            return;
        }
        let canvas = publish.canvas.clone();
        let with_objects = publish.object.is_some();
        self.waiting.insert(canvas.clone(), vec![publish]);
        let (reader, permits, done) = (self.reader.clone(), self.permits.clone(), self.done.0.clone());
        self.runtime.spawn(async move {
            let result = match permits.acquire_owned().await {
                Ok(_permit) => load(&*reader, &canvas, with_objects).await,
                Err(_) => Err(Unavailable::ReadLost.into()),
            };
            let _ = done.send((canvas, result));
        });
    }

    /// The next load to finish. Cancel-safe: nothing is lost if the future is dropped unfinished.
    pub async fn next(&mut self) -> Finished {
        loop {
            let Some((canvas, result)) = self.done.1.recv().await else { return std::future::pending().await };
            if let Some(waited) = self.waiting.remove(&canvas) {
                return Finished { canvas, result, waited };
            }
        }
    }

    /// Every publish still waiting (the committer is stopping); their loads are let go.
    pub fn drain(&mut self) -> Vec<Publish> {
        self.waiting.drain().flat_map(|(_, waited)| waited).collect()
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
