-- Thins a canvas's history, in the generation thinned only: drops the snapshots listed, unless one is
-- named or the newest, raises the floor (never lowers it, nor lifts it past the newest snapshot) and trims
-- the ops stream to it, and records the canvas as thinned now.
-- ARGV: canvas, generation, floor, then the seqs of the snapshots to drop
-- Returns: how many snapshots went

local canvas, gen = ARGV[1], tonumber(ARGV[2])
local h = read_head(canvas)
if not h or h.gen ~= gen then
  return 0
end
local names = canvas_key(canvas, 'vnames')
local dropped = 0
for k = 4, #ARGV do
  local seq = tonumber(ARGV[k])
  local key = seq and seq < h.snap and redis.call('HEXISTS', names, int(seq)) == 0 and snapshot_at(canvas, seq)
  if key then
    drop_snapshot(canvas, seq, key)
    dropped = dropped + 1
  end
end
local now = now_ms()
h.hfrom = math.min(math.max(floor_of(h), tonumber(ARGV[3])), h.snap)
h.thinned = now
redis.call('HSET', canvas_key(canvas, 'head'), 'hfrom', int(h.hfrom), 'thinned', int(now))
redis.call('XTRIM', canvas_key(canvas, 'ops'), 'MINID', entry_id(gen, h.hfrom + 1))
mark_due(canvas, h)
return dropped
