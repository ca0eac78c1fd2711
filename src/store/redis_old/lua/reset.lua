-- Resets a canvas: a new generation (from the shared counter) at seq 0, its log and objects dropped, and the
-- generation's reset marker (seq 0) as the first entry of its new stream, which tells every instance's
-- readers, and of the log of every canvas, which tells the event stream. Messages of the old generation the
-- webhook had not delivered go with the log: the webhook's next batch of the canvas is the reset.
-- ARGV: canvas, epoch candidate, ttl_ms, instance, the webhook's retention in ms (0: no webhook)
-- Returns: { epoch, generation }

local canvas, ttl, retention = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[5])
local epoch = store_epoch(ARGV[2])
local objects = canvas_key(canvas, 'objects')
for _, id in ipairs(redis.call('HKEYS', objects)) do
  redis.call('DEL', object_key(canvas, id))
end
local gen = redis.call('INCR', 'relay:generations')
redis.call('HSET', canvas_key(canvas, 'head'), 'seq', 0, 'gen', gen, 'bytes', 0, 'oseq', 0)
redis.call('ZADD', 'relay:canvases', 0, canvas)
local log = canvas_key(canvas, 'log')
redis.call('DEL', objects, log)
local now = now_ms()
redis.call('XADD', log, entry_id(gen, 0), 'ts', now, 's', 0, 't', 'reset', 'f', 'server', 'd', 'null',
  'i', ARGV[4], 'c', '', 'r', '')
log_everywhere(canvas, gen, 0, 'reset', 'server', 'null', now)
trim_everywhere(now, ttl)
settle_log(canvas, now, ttl, retention, now)
redis.call('INCR', 'relay:writes')
return { epoch, gen }
