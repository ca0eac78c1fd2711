//! Redis's side of history (see `crate::store::history`). Not built yet: every call answers that.

use bytes::Bytes;

use super::RedisStore;
use crate::protocol::CanvasId;
use crate::store::history::{AtRead, Fork, HistoryDue, Named, Thinning, Version};
use crate::store::{BusError, Unavailable};

fn not_yet() -> BusError {
    Unavailable::UnexpectedReply("history on Redis is not built yet").into()
}

impl RedisStore {
    pub(super) async fn history_read_at(&self, _canvas: &CanvasId, _at: u64) -> Result<AtRead, BusError> {
        Err(not_yet())
    }

    pub(super) async fn history_versions(
        &self,
        _canvas: &CanvasId,
        _generation: u64,
        _before: u64,
        _limit: usize,
    ) -> Result<Vec<Version>, BusError> {
        Err(not_yet())
    }

    pub(super) async fn history_name(
        &self,
        _canvas: &CanvasId,
        _at: (u64, u64),
        _name: &str,
        _json: Bytes,
    ) -> Result<Named, BusError> {
        Err(not_yet())
    }

    pub(super) async fn history_unname(&self, _canvas: &CanvasId, _at: (u64, u64)) -> Result<bool, BusError> {
        Err(not_yet())
    }

    pub(super) async fn history_fork(&self, _to: &CanvasId, _fork: Fork) -> Result<Option<String>, BusError> {
        Err(not_yet())
    }

    pub(super) async fn history_due(&self, _before: i64, _limit: usize) -> Result<Vec<HistoryDue>, BusError> {
        Ok(Vec::new())
    }

    pub(super) async fn history_thin(
        &self,
        _canvas: &CanvasId,
        _generation: u64,
        _thinning: Thinning,
    ) -> Result<(), BusError> {
        Err(not_yet())
    }
}
