-- Keeps a snapshot of a canvas's objects, written beside this script to a key of its own with an expiry
-- (`snap:<generation>-<seq>-<nonce>`), if it is newer than the canvas's newest of that generation and at or
-- below its head: the key is kept (its expiry dropped) in the history with the commit time of its seq, and
-- the head names it. With history (`--history-retention` > 0) the older snapshots stay, for thinning to
-- drop as they age, and so do the ops back to the floor. Without, the unnamed older ones expire a little
-- later (a reader that found a key just before still reads it), the floor moves up to the new snapshot and
-- the ops stream drops the ops it covers. Otherwise the new key is deleted. A compare-and-set: whichever
-- instance gets there first wins.
-- ARGV: canvas, generation, seq, key, grace_ms (how long a replaced snapshot stays readable), history ('1'
--   keeps older snapshots, '0' does not)
-- Returns: 1 if kept, 0 if not

local canvas, gen, seq, key = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local h = read_head(canvas)
if not h or h.gen ~= gen or seq <= h.snap or seq > h.seq then
  redis.call('DEL', key)
  return 0
end
adopt_newest(canvas, h)
keep_snapshot(canvas, seq, key, seq_ts(canvas, h, seq))
local floor = floor_of(h)
if ARGV[6] ~= '1' then
  local older = redis.call('ZRANGEBYSCORE', canvas_key(canvas, 'snaps'), '-inf', '(' .. int(seq), 'WITHSCORES')
  local names = canvas_key(canvas, 'vnames')
  for k = 1, #older, 2 do
    if redis.call('HEXISTS', names, older[k + 1]) == 0 then
      drop_snapshot(canvas, older[k + 1], older[k], ARGV[5])
    end
  end
  floor = seq
end
-- The floor is written whenever the snapshot moves: a head without one has it at its snapshot.
redis.call('HSET', canvas_key(canvas, 'head'), 'snap', int(seq), 'snapkey', key, 'hfrom', int(floor))
redis.call('XTRIM', canvas_key(canvas, 'ops'), 'MINID', entry_id(gen, floor + 1))
h.snap, h.hfrom = seq, floor
mark_due(canvas, h)
if h.version <= seq then
  redis.call('ZREM', 'relay:unsnapped', canvas)
end
return 1
