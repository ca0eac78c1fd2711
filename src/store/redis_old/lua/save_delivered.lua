-- Records how far the webhook has delivered a canvas (`webhook`, see `delivered_to`), only for the holder
-- of the canvas's lease: an instance that lost it (it stalled past the lease, and another took the canvas
-- over) writes nothing. Nor does a position that may not replace the stored one (`Delivered::may_replace`):
-- a position never moves backwards (generation, then seq), and a batch's range fixed at a position (`p`
-- past `s`) stays fixed until that batch is delivered; a holder whose view is stale is refused both ways.
-- Messages up to the new position are no longer kept for the webhook: the canvas's log is settled again
-- (see `settle_log`), back to the TTL's expiry once it is delivered up to its head.
-- ARGV: canvas, lease, holder, generation, seq, in-flight last seq ('' for none), ttl_ms, retention ms
-- Returns: 1 if recorded, 0 if the lease is not the holder's, -1 if the stored position is not replaced.

local canvas = ARGV[1]
if redis.call('GET', 'relay:lease:' .. ARGV[2]) ~= ARGV[3] then
  return 0
end
local key = canvas_key(canvas, 'webhook')
local g, s, p = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local stored = redis.call('HMGET', key, 'g', 's', 'p')
if stored[1] then
  local sg, ss = tonumber(stored[1]), tonumber(stored[2] or '0')
  local sp = stored[3] and tonumber(stored[3])
  if g < sg or (g == sg and s < ss) or (g == sg and s == ss and sp and sp > ss and p ~= sp) then
    return -1
  end
end
redis.call('HSET', key, 'g', ARGV[4], 's', ARGV[5])
if ARGV[6] == '' then
  redis.call('HDEL', key, 'p')
else
  redis.call('HSET', key, 'p', ARGV[6])
end
local newest = redis.call('XREVRANGE', canvas_key(canvas, 'log'), '+', '-', 'COUNT', 1)[1]
settle_log(canvas, now_ms(), tonumber(ARGV[7]), tonumber(ARGV[8]), newest and tonumber(newest[2][2]))
return 1
