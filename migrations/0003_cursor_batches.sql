-- 0003: cursors between instances. Each instance writes, every --cursor-batch, one row per canvas holding the
-- latest cursor of each of its users there; other instances' watchers relay them. Rows live seconds.
CREATE TABLE cursor_batches (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    canvas_id       TEXT NOT NULL,
    origin_instance TEXT NOT NULL,
    frames          TEXT NOT NULL,     -- JSON array of cursor frames, as relayed
    expires_at      INTEGER NOT NULL
);
CREATE INDEX idx_cursor_batches_expires_at ON cursor_batches (expires_at);
