-- A canvas at one point of its log, for the fold or a joiner: its head, its connection rows with their
-- presence states, and unless the reader wants no objects, the newest snapshot's seq and key with the
-- object ops after it.
-- The snapshot itself is read beside this script with one GET of its key, which no write changes (a newer
-- snapshot gets a key of its own, and the old one outlives it for a while): this script never reads a
-- state whole, so it never holds Redis for long.
--
-- ARGV: canvas, unless generation ('' for none) and version (no objects when the head is at them), up to
--   (no objects when the state's bytes + 1 are more).
-- Returns { 0, conns, states } for a canvas without a head; { 1, head, conns, states } when the reader wants
--   no objects; else { 2, head, conns, states, snapshot seq (0: none), snapshot key ('' for none), ops }.
--   head: gen, seq, rev, version, bytes, objects, connections, users; conns and states flat
--   (conn, row / conn, state JSON); ops the ops stream's entries.

local canvas = ARGV[1]
local h = read_head(canvas)
local conns = redis.call('HGETALL', canvas_key(canvas, 'conns'))
local states = redis.call('HGETALL', canvas_key(canvas, 'pstates'))
if not h then
  return { 0, conns, states }
end
local head = head_reply(h)
local unless = ARGV[2] ~= '' and tonumber(ARGV[2]) == h.gen and tonumber(ARGV[3]) == h.version
if unless or h.bytes + 1 > tonumber(ARGV[4]) then
  return { 1, head, conns, states }
end
local ops = {}
if h.snap < h.seq then
  ops = redis.call('XRANGE', canvas_key(canvas, 'ops'), entry_id(h.gen, h.snap + 1), entry_id(h.gen, h.seq))
end
return { 2, head, conns, states, h.snap, h.snapkey or '', ops }
