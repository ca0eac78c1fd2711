-- The end of a state read that scanned a canvas's objects (HSCAN, a chunk at a time, so that Redis is never
-- held for the whole state): the canvas's head, presence, and the objects every object op since the scan
-- began changed, as they are now. Objects no op touched since then were the same throughout the scan, so
-- the scan overlaid with these is the state at exactly the head returned. Object ops name their object in
-- their entry's `o` field.
--
-- ARGV: canvas, epoch candidate, generation the scan began in, seq it began at
-- Returns: { 'ok', epoch, generation, seq, state version, state bytes, 0, {user, count, ...},
--   {user, name, ...}, {object id, JSON or nil (deleted), ...}, 1, peers and their states as snapshot.lua }; { 'moved' } when the canvas was reset
--   or the entries since the scan began are no longer all there (read again); { 'legacy' } when an entry
--   does not name its object (written before `o` existed: read the state whole instead).

local canvas = ARGV[1]
local epoch = store_epoch(ARGV[2])
local head = redis.call('HMGET', canvas_key(canvas, 'head'), 'seq', 'gen', 'oseq', 'bytes')
local seq, gen = tonumber(head[1] or '0'), tonumber(head[2] or '0')
if gen ~= tonumber(ARGV[3]) then
  return { 'moved' }
end
local since = tonumber(ARGV[4])
local ids, seen = {}, {}
if seq > since then
  local entries = redis.call('XRANGE', canvas_key(canvas, 'log'), entry_id(gen, since + 1), entry_id(gen, seq))
  if #entries ~= seq - since then
    return { 'moved' }
  end
  for _, entry in ipairs(entries) do
    local kind, object
    for k = 1, #entry[2], 2 do
      if entry[2][k] == 't' then
        kind = entry[2][k + 1]
      elseif entry[2][k] == 'o' then
        object = entry[2][k + 1]
      end
    end
    if kind and string.sub(kind, 1, 7) == 'object-' then
      if not object then
        return { 'legacy' }
      end
      if not seen[object] then
        seen[object] = true
        ids[#ids + 1] = object
      end
    end
  end
end
local changed = {}
for _, id in ipairs(ids) do
  changed[#changed + 1] = id
  changed[#changed + 1] = redis.call('HGET', canvas_key(canvas, 'objects'), id)
end
return { 'ok', epoch, gen, seq, tonumber(head[3] or '0'), tonumber(head[4] or '0'), 0,
  redis.call('HGETALL', canvas_key(canvas, 'users')), redis.call('HGETALL', canvas_key(canvas, 'names')), changed, 1,
  redis.call('HGETALL', canvas_key(canvas, 'peers')), redis.call('HGETALL', canvas_key(canvas, 'pstates')) }
