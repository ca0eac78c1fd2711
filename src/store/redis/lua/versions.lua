-- A page of a canvas's kept snapshots of one generation, newest first: those with a seq below `before`.
-- ARGV: canvas, generation, before, limit
-- Returns: { seq, ts, bytes, name ('' for none, else '=' and the name), ... }

local canvas, gen = ARGV[1], tonumber(ARGV[2])
local h = read_head(canvas)
if not h or h.gen ~= gen then
  return {}
end
adopt_newest(canvas, h)
local range = redis.call('ZREVRANGEBYSCORE', canvas_key(canvas, 'snaps'), '(' .. ARGV[3], '-inf', 'WITHSCORES',
  'LIMIT', 0, ARGV[4])
return versions_of(canvas, range)
