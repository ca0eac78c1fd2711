-- Keeps a snapshot of a canvas's objects, written beside this script to a key of its own with an expiry
-- (`snap:<generation>-<seq>-<nonce>`), if it is newer than the canvas's newest of that generation and at or
-- below its head: the key is kept (its expiry dropped) and the head names it; the old snapshot expires a
-- little later (a reader that found its key just before still reads it); the ops stream drops the ops the
-- new snapshot covers. Otherwise the new key is deleted. A compare-and-set: whichever instance gets there
-- first wins.
-- ARGV: canvas, generation, seq, key, grace_ms (how long the old snapshot stays readable)
-- Returns: 1 if kept, 0 if not

local canvas, gen, seq, key = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local h = read_head(canvas)
if not h or h.gen ~= gen or seq <= h.snap or seq > h.seq then
  redis.call('DEL', key)
  return 0
end
if h.snapkey then
  redis.call('PEXPIRE', h.snapkey, ARGV[5])
end
redis.call('PERSIST', key)
redis.call('HSET', canvas_key(canvas, 'head'), 'snap', int(seq), 'snapkey', key)
redis.call('XTRIM', canvas_key(canvas, 'ops'), 'MINID', entry_id(gen, seq + 1))
if h.version <= seq then
  redis.call('ZREM', 'relay:unsnapped', canvas)
end
return 1
