-- 0010: presence state (v1.1). Each connection's latest presence state as JSON text, NULL until it sets
-- one: what a joiner on any instance reads as welcome.peers. Written with the cursor batches that carry the
-- states to the other instances (at most one write per canvas per --cursor-batch), and gone with the row.
ALTER TABLE connections ADD COLUMN presence TEXT;
