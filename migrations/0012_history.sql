-- 0012: history (PROTOCOL v1.2 "History"). Snapshots are kept past the newest, thinned as they age, each
-- with the commit time of its seq and an optional name; a canvas's object ops are kept back to its
-- history's floor (hist_seq: every state from it to the head is kept; 0 while the generation's start,
-- the empty state, is), no longer to its newest snapshot. Canvases that had only their newest snapshot
-- start with their floor there: the ops before it are gone.
ALTER TABLE snapshots ADD COLUMN ts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE snapshots ADD COLUMN name TEXT;
UPDATE snapshots SET ts = created_at;
-- gen_at: when the generation started; thinned_at: when its history was last thinned.
ALTER TABLE canvases ADD COLUMN hist_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE canvases ADD COLUMN gen_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE canvases ADD COLUMN thinned_at INTEGER NOT NULL DEFAULT 0;
UPDATE canvases SET hist_seq = snap_seq, gen_at = created_at;
CREATE INDEX idx_canvases_history ON canvases (thinned_at) WHERE hist_seq < snap_seq;
-- op = 2: an object op logged by a restore (a client's queue counts a restore's frames as one entry);
-- op 3 and 4: those past their keep time that only history keeps (no reader of the log sees them).
DROP INDEX idx_message_queue_ops;
CREATE INDEX idx_message_queue_ops ON message_queue (canvas_id, generation, seq) WHERE op > 0;
