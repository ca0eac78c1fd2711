-- Names the state at (generation, seq) of a canvas: the kept snapshot at that seq gets the name (a seq has
-- one name: naming it again renames it), or, when none is kept there, the blob written beside this script
-- to a key of its own with an expiry becomes one (the head's newest if it is newer). A canvas in another
-- generation, or whose head is below the seq, gets nothing, and the new key is deleted.
-- ARGV: canvas, generation, seq, name, key
-- Returns: 1 if named, 0 if the canvas moved

local canvas, gen, seq, key = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[5]
local h = read_head(canvas)
if not h or h.gen ~= gen or seq > h.seq then
  redis.call('DEL', key)
  return 0
end
adopt_newest(canvas, h)
if snapshot_at(canvas, seq) then
  redis.call('DEL', key)
else
  keep_snapshot(canvas, seq, key, seq_ts(canvas, h, seq))
  if seq > h.snap then
    -- The floor stays where it is; a head without one had it at its old snapshot.
    redis.call('HSET', canvas_key(canvas, 'head'), 'snap', int(seq), 'snapkey', key, 'hfrom', int(floor_of(h)))
    h.hfrom, h.snap = floor_of(h), seq
    mark_due(canvas, h)
  end
end
redis.call('HSET', canvas_key(canvas, 'vnames'), int(seq), ARGV[4])
return 1
