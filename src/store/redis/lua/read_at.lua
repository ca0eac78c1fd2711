-- Where a canvas's state at one seq of its history is: its head, its floor, the newest kept snapshot at or
-- below the seq (capped at the head), and whether the object ops after that snapshot up to the seq are to
-- be read (they are all kept: the snapshot is at or above the floor, or is the state asked for; no
-- snapshot: the floor is the generation's start). The ops and the snapshot's blob are read beside this
-- script, in one MULTI with the head's generation and floor (an XRANGE of tens of thousands of entries is
-- several times faster as a command than through Lua, and holds nothing else up): a thinning in between
-- shows there, and the caller reads again.
-- ARGV: canvas, at
-- Returns { 0 } for a canvas without a head, else { 1, head, floor, snapshot seq (0: none), snapshot key
--   ('' for none), 1 if the ops are to be read else 0, the seq read up to }; head: gen, seq, rev, version,
--   bytes, objects, connections, users.

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
local read_ops = (from >= floor or from == upto) and from < upto
return { 1, head_reply(h), floor, from, key, read_ops and 1 or 0, upto }
