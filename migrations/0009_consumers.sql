-- 0009: server-side consumers (v1.1: the event stream and the webhook).
-- purge_at: when cleanup may delete the row. It is expires_at, except while a webhook has not delivered the
-- row: then the row is kept up to --webhook-retention after its commit, and delivering it brings purge_at back
-- to expires_at. Clients still see a row only until expires_at. The cleanup index moves to it.
ALTER TABLE message_queue ADD COLUMN purge_at INTEGER NOT NULL DEFAULT 0;
UPDATE message_queue SET purge_at = expires_at;
DROP INDEX idx_message_queue_expires_at;
CREATE INDEX idx_message_queue_purge_at ON message_queue (purge_at);
-- A reset no longer deletes the canvas's rows (it expires them for clients, and the event stream still reads
-- them within the TTL), so one canvas holds a seq once per generation. The seq stays second, for the
-- per-canvas range reads.
DROP INDEX idx_message_queue_canvas_seq;
CREATE UNIQUE INDEX idx_message_queue_canvas_seq ON message_queue (canvas_id, seq, generation);

-- How far the webhook has delivered each canvas: every message of `generation` up to `seq` answered 2xx;
-- `inflight` is the last seq of the batch being sent (so whoever sends it again sends the same range).
CREATE TABLE webhook_positions (
    canvas_id  TEXT PRIMARY KEY,
    generation INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    inflight   INTEGER,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Leases (the webhook's shards of canvases): held by one instance until expires_at unless renewed.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;

-- The highest message_queue id cleanup has deleted: an event stream reading from before it has a gap. On a
-- file that had rows already, every id below the oldest one left (or all of them) was deleted.
INSERT INTO meta (key, value) VALUES ('pruned_id', coalesce(
    (SELECT min(id) - 1 FROM message_queue),
    (SELECT seq FROM sqlite_sequence WHERE name = 'message_queue'),
    0));
