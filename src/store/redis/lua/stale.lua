-- Canvases with object ops after their newest snapshot and no commit since a time (`relay:unsnapped`, scored
-- by the last commit), for cleanup to snapshot, so that a join reads a snapshot rather than the ops (and,
-- without history, the ops stream can go). An entry whose canvas has no such ops any more (snapshotted
-- since, forgotten) leaves the index here.
-- ARGV: before (unix ms, exclusive), limit
-- Returns: the canvases

local out = {}
local ids = redis.call('ZRANGEBYSCORE', 'relay:unsnapped', '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[2])
for _, canvas in ipairs(ids) do
  local h = read_head(canvas)
  if h and h.version > h.snap then
    out[#out + 1] = canvas
  else
    redis.call('ZREM', 'relay:unsnapped', canvas)
  end
end
return out
