-- 0007: removing a user from a canvas through the API (v1.1 roles).
-- Each row is relayed once to every other instance, which closes that user's connections on the canvas with
-- 4003 (expires_at bounds the relay, as for user messages). blocked_until (unix ms; 0 for no block) refuses
-- the user's new connections to the canvas, on every instance, until then. A row goes once both are past.
CREATE TABLE removals (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    canvas_id       TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    origin_instance TEXT NOT NULL,
    blocked_until   INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL
);
CREATE INDEX idx_removals_canvas_user ON removals (canvas_id, user_id, blocked_until);
