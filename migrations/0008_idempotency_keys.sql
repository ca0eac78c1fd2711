-- 0008: idempotent publish (v1.1). A logged message with an idempotency key records it here in the same
-- transaction; a repeat from the same user on the same canvas and generation before expires_at is acked with
-- seq and logs nothing. Rows go with the cleanup once expired.
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
