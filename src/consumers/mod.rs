//! The server-side consumers: the event stream (`stream.rs`, served by `http/stream.rs`) and the webhook
//! deliverer (`webhook/`). Both read the log the stores keep (`store::consumer::ConsumerStore`) from a
//! position of their own, so they are written once for every store.

pub mod stream;
pub mod webhook;
