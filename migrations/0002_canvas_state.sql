-- 0002: canvas state. Object ops are folded into it by the writer in the same transaction that logs them,
-- so the state always matches the canvas's last_seq. It does not expire with the message TTL.
CREATE TABLE canvas_objects (
    canvas_id TEXT NOT NULL,
    object_id TEXT NOT NULL,
    data      TEXT NOT NULL,  -- the object as JSON (an object with at least "id")
    PRIMARY KEY (canvas_id, object_id)
) WITHOUT ROWID;
