-- A canvas at one seq of its history, at one point: its head, its floor, the newest kept snapshot at or
-- below the seq (capped at the head), and the object ops after that snapshot up to the seq, when they are
-- all kept (the snapshot is at or above the floor, or is the state asked for; no snapshot: the floor is
-- the generation's start). The snapshot itself is read beside this script with one GET of its key, which a
-- thinning may delete in between: the caller then reads again.
-- ARGV: canvas, at
-- Returns { 0 } for a canvas without a head, else { 1, head, floor, snapshot seq (0: none), snapshot key
--   ('' for none), ops }; head: gen, seq, rev, version, bytes, objects, connections, users; ops the ops
--   stream's entries.

local canvas = ARGV[1]
local h = read_head(canvas)
if not h then
  return { 0 }
end
adopt_newest(canvas, h)
local floor = floor_of(h)
local upto = math.min(tonumber(ARGV[2]), h.seq)
local found = redis.call('ZREVRANGEBYSCORE', canvas_key(canvas, 'snaps'), upto, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
local key, from = found[1] or '', tonumber(found[2] or '0')
local ops = {}
if (from >= floor or from == upto) and from < upto then
  ops = redis.call('XRANGE', canvas_key(canvas, 'ops'), entry_id(h.gen, from + 1), entry_id(h.gen, upto))
end
return { 1, head_reply(h), floor, from, key, ops }
