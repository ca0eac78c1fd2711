-- Creates a canvas from another's state: the blob written beside this script to a key of its own with an
-- expiry becomes the first snapshot (at seq 0, its time now) of a new generation of the canvas, from the
-- shared counter as every new head's is, with its floor at 0. Unless the canvas has a seq, an object or a
-- connection: then nothing is written and the new key is deleted. What the canvas had before (a head at
-- seq 0, say after a reset: its history, log and ops stream) is dropped. It joins the index of canvases; an
-- empty fork may be forgotten like any empty canvas, one with objects is kept.
-- ARGV: canvas, key, objects, bytes, forget_after (ms), epoch candidate
-- Returns: { epoch, generation }, or {} when the canvas exists

local canvas, key, objects = ARGV[1], ARGV[2], tonumber(ARGV[3])
local h = read_head(canvas)
local conns = canvas_key(canvas, 'conns')
if (h and (h.seq > 0 or h.objects > 0)) or redis.call('HLEN', conns) > 0 then
  redis.call('DEL', key)
  return {}
end
local epoch = store_epoch(ARGV[6])
local now = now_ms()
drop_history(canvas, h)
redis.call('UNLINK', canvas_key(canvas, 'log'), canvas_key(canvas, 'ops'))
local gen = redis.call('INCR', 'relay:generations')
redis.call('ZADD', 'relay:canvases', 0, canvas)
keep_snapshot(canvas, 0, key, now)
local head = canvas_key(canvas, 'head')
redis.call('HDEL', head, 'forget_after', 'forget_at', 'thinned')
redis.call('HSET', head, 'gen', gen, 'seq', 0, 'rev', int((h and h.rev or 0) + 1), 'version', 0, 'bytes', ARGV[4],
  'objects', ARGV[3], 'connections', 0, 'users', 0, 'snap', 0, 'snapkey', key, 'updated', int(now),
  'genat', int(now), 'hfrom', 0)
if objects == 0 then
  local forget_at = now + tonumber(ARGV[5])
  redis.call('HSET', head, 'forget_after', ARGV[5], 'forget_at', int(forget_at))
  redis.call('ZADD', 'relay:forget', forget_at, canvas)
else
  redis.call('ZREM', 'relay:forget', canvas)
end
for _, index in ipairs({ 'relay:trim', 'relay:unsnapped', 'relay:history' }) do
  redis.call('ZREM', index, canvas)
end
redis.call('INCR', 'relay:writes')
return { epoch, gen }
