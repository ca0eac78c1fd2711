//! The storage behind the relay: what the fold hands a store to apply, and what a store reads back.

pub mod records;
