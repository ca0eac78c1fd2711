-- 0006: big canvases and bounded growth.
-- state_bytes: bytes of the canvas's objects as the welcome's JSON carries them (each object's quoted id, a
--   colon, its data and a separator), kept by the writer to refuse ops past --max-canvas-state.
-- state_seq: the seq of the last message that changed the objects: the state's version, under which joiners
--   share one serialized copy.
ALTER TABLE canvases ADD COLUMN state_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE canvases ADD COLUMN state_seq INTEGER NOT NULL DEFAULT 0;
UPDATE canvases SET
    state_bytes = coalesce((SELECT sum(length(CAST(json_quote(o.object_id) AS BLOB)) + length(CAST(o.data AS BLOB)) + 2)
                            FROM canvas_objects o WHERE o.canvas_id = canvases.canvas_id), 0),
    state_seq = last_seq;
-- Canvases that are empty and idle are deleted (see the writer's cleanup), so a canvas created again must
-- never reuse an epoch it had: every new canvas and every reset takes its generation from this counter.
INSERT INTO meta (key, value) SELECT 'last_generation', coalesce(max(generation), 0) FROM canvases;
CREATE INDEX idx_canvases_updated_at ON canvases (updated_at);
