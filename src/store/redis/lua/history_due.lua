-- Canvases whose history may be thinned (`relay:history`: a floor below the newest snapshot), not thinned
-- since a time, least recently thinned first, each with its generation, floor, when the generation started
-- and its kept snapshots, oldest first. An entry whose canvas has nothing to thin any more (forgotten, or
-- its floor at its snapshot) leaves the index here; at most 1,000 such per call, so that Redis is never
-- held for long.
-- ARGV: before (unix ms, exclusive), limit
-- Returns: { { canvas, generation, floor, genat, { seq, ts, bytes, name, ... } }, ... } (names as in
--   `versions_of`)

local before, limit = ARGV[1], tonumber(ARGV[2])
local out, offset, budget = {}, 0, limit + 1000
while #out < limit and budget > 0 do
  local want = limit - #out
  local ids = redis.call('ZRANGEBYSCORE', 'relay:history', '-inf', '(' .. before, 'LIMIT', offset, want)
  for _, canvas in ipairs(ids) do
    budget = budget - 1
    local h = read_head(canvas)
    if h and floor_of(h) < h.snap then
      local range = redis.call('ZRANGE', canvas_key(canvas, 'snaps'), 0, -1, 'WITHSCORES')
      out[#out + 1] = { canvas, h.gen, floor_of(h), h.genat or 0, versions_of(canvas, range) }
      offset = offset + 1
    else
      redis.call('ZREM', 'relay:history', canvas)
    end
  end
  if #ids < want then
    break
  end
end
return out
