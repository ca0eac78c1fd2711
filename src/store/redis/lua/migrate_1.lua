-- Brings one canvas of the store's first layouts to layout 3, which `migrate_3.lua` then takes to layout 4.
-- Layout 1 (an `ids` set, and field hashes keyed by plain field names) becomes the `objects` hash of whole
-- JSON texts and field hashes keyed by JSON-quoted names, with the state's bytes and version in the head;
-- the generation counter is moved past its generation. Layout 3 added the index of canvases
-- (`relay:canvases`). Safe to run twice: a canvas without an `ids` set keeps its objects as they are.
-- ARGV: canvas. Returns: how many objects were converted.

local canvas = ARGV[1]
local head = canvas_key(canvas, 'head')

-- The JSON text of an object from its fields (a flat {field as JSON, value as JSON, ...} list).
local function object_text(fields)
  local parts = {}
  for k = 1, #fields, 2 do
    parts[#parts + 1] = fields[k] .. ':' .. fields[k + 1]
  end
  return '{' .. table.concat(parts, ',') .. '}'
end

redis.call('ZADD', 'relay:canvases', 0, canvas)
local gen = tonumber(redis.call('HGET', head, 'gen') or '0')
if gen > tonumber(redis.call('GET', 'relay:generations') or '0') then
  redis.call('SET', 'relay:generations', gen)
end
local ids_key = canvas_key(canvas, 'ids')
if redis.call('EXISTS', ids_key) == 0 then
  return 0
end
local ids = redis.call('SMEMBERS', ids_key)
local bytes = 0
for _, id in ipairs(ids) do
  local key = canvas_key(canvas, 'o:' .. id)
  local plain = redis.call('HGETALL', key)
  local fields = {}
  for k = 1, #plain, 2 do
    fields[#fields + 1] = cjson.encode(plain[k])
    fields[#fields + 1] = plain[k + 1]
  end
  local text = object_text(fields)
  redis.call('HSET', canvas_key(canvas, 'objects'), id, text)
  bytes = bytes + #cjson.encode(id) + #text + 2
end
redis.call('DEL', ids_key)
redis.call('HSET', head, 'bytes', bytes, 'oseq', redis.call('HGET', head, 'seq') or 0)
return #ids
