-- 0011: the canvas state is the newest snapshot plus the object ops after it, folded in Rust for every
-- store (the SQL only stores). canvas_objects is turned into one snapshot per canvas at its head by the
-- code that follows this file (schema.rs), then dropped.
-- The head keeps what the fold computes: rev (bumped by every commit that changes the state: what a commit
-- is checked against) and the counts; snap_seq (the newest snapshot's seq: the object ops are kept back to
-- it), pruned_seq (up to where cleanup dropped them) and when an empty canvas may be forgotten.
ALTER TABLE canvases ADD COLUMN rev INTEGER NOT NULL DEFAULT 0;
ALTER TABLE canvases ADD COLUMN objects INTEGER NOT NULL DEFAULT 0;
ALTER TABLE canvases ADD COLUMN connections INTEGER NOT NULL DEFAULT 0;
ALTER TABLE canvases ADD COLUMN users INTEGER NOT NULL DEFAULT 0;
ALTER TABLE canvases ADD COLUMN snap_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE canvases ADD COLUMN pruned_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE canvases ADD COLUMN forget_after INTEGER;
ALTER TABLE canvases ADD COLUMN forget_at INTEGER;
CREATE INDEX idx_canvases_forget_at ON canvases (forget_at) WHERE forget_at IS NOT NULL;
CREATE INDEX idx_canvases_stale ON canvases (updated_at) WHERE state_seq > snap_seq;
-- op = 1: an object op the fold applied; kept past its TTL until a snapshot covers it.
ALTER TABLE message_queue ADD COLUMN op INTEGER NOT NULL DEFAULT 0;
CREATE INDEX idx_message_queue_ops ON message_queue (canvas_id, generation, seq) WHERE op = 1;
-- opened: when the connection opened (unix microseconds): the newest named one names its user.
ALTER TABLE connections ADD COLUMN opened INTEGER NOT NULL DEFAULT 0;
CREATE TABLE snapshots (
    id         INTEGER PRIMARY KEY,
    canvas_id  TEXT NOT NULL,
    generation INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    -- the objects' JSON, {"id":object,...} in id order, as the fold writes it
    json       BLOB NOT NULL,
    UNIQUE (canvas_id, generation, seq)
);
