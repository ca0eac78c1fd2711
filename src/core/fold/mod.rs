//! The fold: every rule that needs a canvas's state at commit time, written once for every store. What
//! object ops do to the objects (`objects.rs`), who is on the canvas and when that is logged
//! (`presence.rs`), and how a batch of publishes becomes the writes a store applies (`canvas.rs`).

pub mod canvas;
pub mod objects;
pub mod presence;

pub use objects::Objects;
