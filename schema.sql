-- canvas-relay: the whole current schema (what migrations/ builds, in order). Read this to know the tables;
-- change the schema by adding a numbered file to migrations/ and updating this file to match
-- (a unit test in src/store/sqlite/schema.rs checks the two agree). Times are unix milliseconds.
PRAGMA user_version = 12;

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE canvases (
    canvas_id  TEXT PRIMARY KEY,
    last_seq   INTEGER NOT NULL DEFAULT 0,
    generation INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    -- bytes of the objects' JSON (id, colon, data, separator per object): checked against --max-canvas-state
    state_bytes INTEGER NOT NULL DEFAULT 0,
    -- seq of the last message that changed the objects: the state's version (shared by joiners)
    state_seq INTEGER NOT NULL DEFAULT 0,
    -- 0011: what the fold keeps (the SQL only stores it). rev: bumped by every commit that changes the
    -- state, what a commit is checked against; the counts
    rev INTEGER NOT NULL DEFAULT 0,
    objects INTEGER NOT NULL DEFAULT 0,
    connections INTEGER NOT NULL DEFAULT 0,
    users INTEGER NOT NULL DEFAULT 0,
    -- the newest snapshot's seq (of this generation)
    snap_seq INTEGER NOT NULL DEFAULT 0,
    -- up to where cleanup dropped object ops (of this generation)
    pruned_seq INTEGER NOT NULL DEFAULT 0,
    -- an empty canvas (no objects, no connections) is forgotten forget_after ms after its last commit
    forget_after INTEGER,
    forget_at INTEGER,
    -- 0012: history's floor (every state from it to the head is kept, and the object ops after it,
    -- whatever the TTL; 0 while the generation's start is), when the generation started, and when its
    -- history was last thinned
    hist_seq INTEGER NOT NULL DEFAULT 0,
    gen_at INTEGER NOT NULL DEFAULT 0,
    thinned_at INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX idx_canvases_updated_at ON canvases (updated_at);
CREATE INDEX idx_canvases_forget_at ON canvases (forget_at) WHERE forget_at IS NOT NULL;
CREATE INDEX idx_canvases_stale ON canvases (updated_at) WHERE state_seq > snap_seq;
CREATE INDEX idx_canvases_history ON canvases (thinned_at) WHERE hist_seq < snap_seq;

CREATE TABLE message_queue (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    canvas_id       TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    message_type    TEXT NOT NULL,
    payload         TEXT NOT NULL,
    sender          TEXT NOT NULL,
    origin_instance TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    generation      INTEGER NOT NULL DEFAULT 0,
    -- when cleanup may delete it: expires_at, or later while a webhook has not delivered it
    purge_at        INTEGER NOT NULL DEFAULT 0,
    -- 0011: 1 for an object op the fold applied (0012: 2 for one a restore logged); past purge_at, one
    -- above its canvas's history floor (hist_seq) is kept for history only, as 3 (4), out of every reader
    -- of the log, with purge_at at i64::MAX, until the floor passes it
    op              INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX idx_message_queue_canvas_seq ON message_queue (canvas_id, seq, generation);
CREATE INDEX idx_message_queue_purge_at ON message_queue (purge_at);
CREATE INDEX idx_message_queue_ops ON message_queue (canvas_id, generation, seq) WHERE op > 0;

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

CREATE TABLE instances (
    instance_id  TEXT PRIMARY KEY,
    pid          INTEGER NOT NULL,
    listen       TEXT NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    -- where its watcher takes wake-up datagrams (loopback UDP), or NULL
    wake_addr    TEXT) WITHOUT ROWID;

CREATE TABLE cursor_batches (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    canvas_id       TEXT NOT NULL,
    origin_instance TEXT NOT NULL,
    frames          TEXT NOT NULL,
    expires_at      INTEGER NOT NULL
);
CREATE INDEX idx_cursor_batches_expires_at ON cursor_batches (expires_at);

CREATE TABLE connections (
    conn_id      TEXT PRIMARY KEY,
    instance_id  TEXT NOT NULL,
    canvas_id    TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    name         TEXT,
    connected_at INTEGER NOT NULL,
    -- 0010: its latest presence state (v1.1) as JSON text, NULL until it sets one (welcome.peers).
    presence     TEXT,
    -- 0011: when it opened (unix microseconds): the newest named connection names its user
    opened       INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX idx_connections_canvas_user ON connections (canvas_id, user_id);
CREATE INDEX idx_connections_user ON connections (user_id);
CREATE INDEX idx_connections_instance ON connections (instance_id);

-- A user message for the other instances to relay; user_id '*' (never a user id) is every connection of
-- every canvas (POST /api/v1/broadcast).
CREATE TABLE user_messages (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id         TEXT NOT NULL,
    origin_instance TEXT NOT NULL,
    frame           TEXT NOT NULL,
    expires_at      INTEGER NOT NULL
);
CREATE INDEX idx_user_messages_expires_at ON user_messages (expires_at);

-- A user removed from a canvas through the API: relayed to the other instances, which close that user's
-- connections there with 4003; until blocked_until (0: no block) the user's new connections are refused.
CREATE TABLE removals (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    canvas_id       TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    origin_instance TEXT NOT NULL,
    blocked_until   INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL
);
CREATE INDEX idx_removals_canvas_user ON removals (canvas_id, user_id, blocked_until);

-- Idempotency keys of logged messages, within the TTL: a repeat from the same user on the same canvas and
-- generation is acked with the original seq and logs nothing.
CREATE TABLE idempotency_keys (
    canvas_id  TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    key        TEXT NOT NULL,
    generation INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (canvas_id, user_id, key)
) WITHOUT ROWID;
CREATE INDEX idx_idempotency_keys_expires_at ON idempotency_keys (expires_at);

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

-- 0011: snapshots of canvas states: a canvas's state is its newest snapshot plus the object ops after it.
CREATE TABLE snapshots (
    id         INTEGER PRIMARY KEY,
    canvas_id  TEXT NOT NULL,
    generation INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    -- the objects' JSON, {"id":object,...} in id order, as the fold writes it
    json       BLOB NOT NULL,
    -- 0012: the commit time of its seq, and its name for a named version (kept until unnamed)
    ts         INTEGER NOT NULL DEFAULT 0,
    name       TEXT,
    UNIQUE (canvas_id, generation, seq)
);
