//! The delivery core: what is the same whichever store holds the canvases.

pub mod fold;
pub mod committer;
