-- Starts a canvas's next generation at seq 0: a new generation from the shared counter (so an epoch is
-- never reused), its log, ops stream and history dropped (UNLINK: freed off Redis's main thread; named
-- versions too: the new generation starts an empty history, its floor at 0), its presence kept, and the
-- generation's reset marker (seq 0) as the first entry of its new log, which tells every instance's
-- readers, and of the log of every canvas, which tells the event stream. Idempotency keys are per
-- generation: the old ones are no longer found, and expire. A canvas without a head gets one.
-- ARGV: canvas, epoch candidate, instance, ttl_ms
-- Returns: { epoch, generation }

local canvas, ttl = ARGV[1], tonumber(ARGV[4])
local epoch = store_epoch(ARGV[2])
local h = read_head(canvas)
if not h then
  redis.call('ZADD', 'relay:canvases', 0, canvas)
end
local gen = redis.call('INCR', 'relay:generations')
local log = canvas_key(canvas, 'log')
redis.call('UNLINK', log, canvas_key(canvas, 'ops'))
drop_history(canvas, h)
local now = now_ms()
local key = canvas_key(canvas, 'head')
redis.call('HDEL', key, 'snapkey', 'thinned')
redis.call('HSET', key, 'gen', gen, 'seq', 0, 'rev', int((h and h.rev or 0) + 1), 'version', 0, 'bytes', 0,
  'objects', 0, 'snap', 0, 'updated', int(now), 'connections', int(h and h.connections or 0),
  'users', int(h and h.users or 0), 'genat', int(now), 'hfrom', 0)
redis.call('XADD', log, entry_id(gen, 0), 'ts', now, 's', 0, 't', 'reset', 'f', 'server', 'd', 'null',
  'i', ARGV[3], 'c', '', 'r', '')
log_everywhere(canvas, gen, 0, 'reset', 'server', 'null', now)
redis.call('ZADD', 'relay:trim', 'NX', now + ttl, canvas)
redis.call('ZREM', 'relay:unsnapped', canvas)
redis.call('INCR', 'relay:writes')
return { epoch, gen }
