-- Records how far the webhook has delivered a canvas (`webhook`: g = generation, s = seq, p = the last seq
-- of the batch being sent, absent when none), over the position the holder expects the store to hold, if
-- it still holds the lease: the lease check, the comparison and the write at once (a holder whose view is
-- stale is refused). What may replace what is the webhook's rule, checked before. Messages up to the new
-- position are no longer kept for the webhook: the canvas's log is due for trimming again now.
-- ARGV: canvas, lease, holder, expected ('1' then generation, seq, in-flight last seq or '' ; '0' then
--   three '' for none), then the new generation, seq, in-flight last seq ('' for none)
-- Returns: 1 if recorded, 0 if the lease is not the holder's, -1 if the store does not hold `expected`

local canvas = ARGV[1]
if redis.call('GET', 'relay:lease:' .. ARGV[2]) ~= ARGV[3] then
  return 0
end
local key = canvas_key(canvas, 'webhook')
local stored = redis.call('HMGET', key, 'g', 's', 'p')
local held = stored[1] and { stored[1], stored[2] or '0', stored[3] or '' }
if ARGV[4] == '1' then
  if not held or held[1] ~= ARGV[5] or held[2] ~= ARGV[6] or held[3] ~= ARGV[7] then
    return -1
  end
elseif held then
  return -1
end
redis.call('HSET', key, 'g', ARGV[8], 's', ARGV[9])
if ARGV[10] == '' then
  redis.call('HDEL', key, 'p')
else
  redis.call('HSET', key, 'p', ARGV[10])
end
if redis.call('EXISTS', canvas_key(canvas, 'log')) == 1 then
  redis.call('ZADD', 'relay:trim', now_ms(), canvas)
end
return 1
