-- Takes the name off the version at (generation, seq) of a canvas: its snapshot stays, as an automatic one.
-- A canvas left with no named version may be forgotten again (`forget.lua` passes over one with a name).
-- ARGV: canvas, generation, seq
-- Returns: 1 if there was a named version there, else 0

local canvas, gen = ARGV[1], tonumber(ARGV[2])
local h = read_head(canvas)
if not h or h.gen ~= gen then
  return 0
end
local names = canvas_key(canvas, 'vnames')
local removed = redis.call('HDEL', names, ARGV[3])
if removed == 1 and h.forget_at and redis.call('HLEN', names) == 0 then
  redis.call('ZADD', 'relay:forget', h.forget_at, canvas)
end
return removed
