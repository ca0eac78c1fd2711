-- Records how far the webhook has delivered a canvas (`webhook`, see `delivered_to`), only for the holder
-- of the canvas's lease: an instance that lost it (it stalled past the lease, and another took the canvas
-- over) writes nothing. Messages up to the new position are no longer kept for the webhook: the canvas's log
-- is settled again (see `settle_log`), back to the TTL's expiry once it is delivered up to its head.
-- ARGV: canvas, lease, holder, generation, seq, in-flight last seq ('' for none), ttl_ms, retention ms
-- Returns: 1 if recorded, 0 if the lease is not the holder's.

local canvas = ARGV[1]
if redis.call('GET', 'relay:lease:' .. ARGV[2]) ~= ARGV[3] then
  return 0
end
local key = canvas_key(canvas, 'webhook')
redis.call('HSET', key, 'g', ARGV[4], 's', ARGV[5])
if ARGV[6] == '' then
  redis.call('HDEL', key, 'p')
else
  redis.call('HSET', key, 'p', ARGV[6])
end
local newest = redis.call('XREVRANGE', canvas_key(canvas, 'log'), '+', '-', 'COUNT', 1)[1]
settle_log(canvas, now_ms(), tonumber(ARGV[7]), tonumber(ARGV[8]), newest and tonumber(newest[2][2]))
return 1
