-- 0001: the relay's first schema. Times are unix milliseconds (INTEGER): cheap to compare, and the same
-- clock the wire's `ts` uses.

-- One row per database file: `db_epoch` is part of every canvas epoch, so a fresh file means new epochs
-- and clients of the old file reload instead of resuming into a different log.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
INSERT INTO meta (key, value) VALUES ('db_epoch', lower(hex(randomblob(8))));

-- The head of each canvas's log. `last_seq` lives here, not in message_queue, so seq survives TTL cleanup
-- (guarantee 1); `generation` bumps when the canvas is reset, giving a new epoch.
CREATE TABLE canvases (
    canvas_id  TEXT PRIMARY KEY,
    last_seq   INTEGER NOT NULL DEFAULT 0,
    generation INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

-- The log every process writes and reads. `id` orders all commits of the file (AUTOINCREMENT: never reused,
-- so a reader's watermark never skips a row); `seq` orders one canvas.
CREATE TABLE message_queue (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    canvas_id       TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    message_type    TEXT NOT NULL,
    payload         TEXT NOT NULL,     -- the message's `data`, as JSON text
    sender          TEXT NOT NULL,     -- user id, sent as `from`
    origin_instance TEXT NOT NULL,     -- instance that committed it
    created_at      INTEGER NOT NULL,  -- commit time, sent as `ts`
    expires_at      INTEGER NOT NULL
);
CREATE UNIQUE INDEX idx_message_queue_canvas_seq ON message_queue (canvas_id, seq);
CREATE INDEX idx_message_queue_expires_at ON message_queue (expires_at);

-- How far each instance has delivered each canvas (persisted periodically; informational for operators and
-- the cleanup of dead instances).
CREATE TABLE canvas_watermarks (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    canvas_id          TEXT NOT NULL,
    server_instance_id TEXT NOT NULL,
    last_processed_id  INTEGER NOT NULL DEFAULT 0,
    last_seq           INTEGER NOT NULL DEFAULT 0,
    updated_at         INTEGER NOT NULL,
    UNIQUE (canvas_id, server_instance_id)
);
CREATE INDEX idx_canvas_watermarks_canvas_id ON canvas_watermarks (canvas_id);

-- Every running process, so processes know each other: live = heartbeat within the presence timeout.
CREATE TABLE instances (
    instance_id  TEXT PRIMARY KEY,
    pid          INTEGER NOT NULL,
    listen       TEXT NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
) WITHOUT ROWID;
