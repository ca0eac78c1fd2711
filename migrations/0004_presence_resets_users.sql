-- 0004: presence, canvas resets and user-targeted messages.

-- The canvas generation a row was logged in: a reset (DELETE through the API) bumps canvases.generation and
-- logs a `reset` marker at seq 0, so watchers can tell a new epoch's seq 1 from the old epoch's.
ALTER TABLE message_queue ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;

-- Every open WebSocket connection of every instance. `user-connected` / `user-disconnected` are logged in the
-- transaction that inserts a user's first / deletes a user's last row for a canvas, so presence read in a
-- snapshot always matches the seq read with it. Rows of dead instances are deleted by survivors.
CREATE TABLE connections (
    conn_id      TEXT PRIMARY KEY,
    instance_id  TEXT NOT NULL,
    canvas_id    TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    name         TEXT,
    connected_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX idx_connections_canvas_user ON connections (canvas_id, user_id);
CREATE INDEX idx_connections_user ON connections (user_id);
CREATE INDEX idx_connections_instance ON connections (instance_id);

-- Frames for one user's connections on other instances (POST /api/v1/users/{user}/messages). Rows live
-- for the message TTL; each watcher relays the ones written after it started.
CREATE TABLE user_messages (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id         TEXT NOT NULL,
    origin_instance TEXT NOT NULL,
    frame           TEXT NOT NULL,
    expires_at      INTEGER NOT NULL
);
CREATE INDEX idx_user_messages_expires_at ON user_messages (expires_at);
