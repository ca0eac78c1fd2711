-- Removes a user from a canvas through the API: an entry on the user-message stream (field `k`: the canvas)
-- that every other instance's reader turns into closing the user's connections to the canvas (4003), and,
-- with a block, a key that refuses the user's new connections to the canvas until it expires. A block only
-- ever lengthens: one already longer is kept.
-- ARGV: canvas, user, instance, ttl_ms, block_ms (0 for none)

local canvas, user, block = ARGV[1], ARGV[2], tonumber(ARGV[5])
local cutoff = now_ms() - tonumber(ARGV[4])
redis.call('XADD', 'relay:user-messages', 'MINID', '~', cutoff, '*', 'u', user, 'k', canvas, 'i', ARGV[3])
local blocked = canvas_key(canvas, 'block:' .. user)
if block > 0 and redis.call('PTTL', blocked) < block then
  redis.call('SET', blocked, '1', 'PX', block)
end
return 1
