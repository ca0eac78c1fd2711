-- Resets a canvas: a new generation at seq 0, its log and objects dropped, and the generation's reset
-- marker (seq 0) as the first entry of its new stream, which tells every instance's readers.
-- ARGV: canvas, epoch candidate, ttl_ms, instance
-- Returns: { epoch, generation }

local canvas, ttl = ARGV[1], tonumber(ARGV[3])
local epoch = store_epoch(ARGV[2])
local gen = redis.call('HINCRBY', canvas_key(canvas, 'head'), 'gen', 1)
redis.call('HSET', canvas_key(canvas, 'head'), 'seq', 0)
for _, id in ipairs(redis.call('SMEMBERS', canvas_key(canvas, 'ids'))) do
  redis.call('DEL', canvas_key(canvas, 'o:' .. id))
end
redis.call('DEL', canvas_key(canvas, 'ids'), canvas_key(canvas, 'log'))
local log = canvas_key(canvas, 'log')
redis.call('XADD', log, entry_id(gen, 0), 'ts', now_ms(), 's', 0, 't', 'reset', 'f', 'server', 'd', 'null',
  'i', ARGV[4], 'c', '', 'r', '')
redis.call('PEXPIRE', log, ttl)
redis.call('INCR', 'relay:writes')
return { epoch, gen }
