-- Shared by every script (prepended to each): the clock, the store's epoch and key names.
--
-- Keys of canvas C are `relay:{C}:...`: the braces keep a canvas's keys apart from any object id and in one
-- Redis Cluster slot. Time is Redis's own clock, so instances on hosts whose clocks disagree still agree on
-- message timestamps and on what has expired.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The store's random id, part of every canvas epoch. Created by whichever script runs first on an empty
-- store (`candidate` is a fresh id from the caller): a Redis that lost its data starts a new epoch.
local function store_epoch(candidate)
  local epoch = redis.call('GET', 'relay:epoch')
  if not epoch then
    epoch = candidate
    redis.call('SET', 'relay:epoch', epoch)
  end
  return epoch
end

local function canvas_key(canvas, part)
  return 'relay:{' .. canvas .. '}:' .. part
end

-- A canvas's head: last seq and reset generation (0, 0 for a canvas nobody wrote to).
local function head(canvas)
  local h = redis.call('HMGET', canvas_key(canvas, 'head'), 'seq', 'gen')
  return tonumber(h[1] or '0'), tonumber(h[2] or '0')
end

-- Stream entry id of (generation, seq): generation + 1 in the time part, so ids grow across resets and a
-- generation's reset marker (seq 0) is a valid id.
local function entry_id(gen, seq)
  return string.format('%d-%d', gen + 1, seq)
end

-- The objects of canvas C: `objects` maps each object id to its whole JSON text (what a welcome carries, read
-- in one HGETALL), `o:<id>` maps each of its top-level fields (JSON-quoted) to the field's JSON text (what an
-- update merges into, without a JSON parser in Lua).
local function object_key(canvas, id)
  return canvas_key(canvas, 'o:' .. id)
end

-- The head of a canvas about to be written, created in a new generation if it has none: every new canvas and
-- every reset takes its generation from one counter, so a canvas that expired when idle and is created again
-- never reuses an epoch. A new head is added to the index of canvases (`canvases.lua` lists it and drops
-- entries whose head has expired).
local function ensure_head(canvas)
  local key = canvas_key(canvas, 'head')
  if redis.call('EXISTS', key) == 0 then
    redis.call('HSET', key, 'seq', 0, 'gen', redis.call('INCR', 'relay:generations'), 'bytes', 0, 'oseq', 0)
    redis.call('ZADD', 'relay:canvases', 0, canvas)
  end
  return key
end

-- A canvas with neither objects nor connections expires when idle (its log expires with the TTL before its
-- head does); one with either is kept.
local function keep_or_expire(canvas, ttl)
  local key = canvas_key(canvas, 'head')
  if redis.call('HLEN', canvas_key(canvas, 'objects')) == 0 and redis.call('HLEN', canvas_key(canvas, 'conns')) == 0 then
    redis.call('PEXPIRE', key, 2 * ttl)
  else
    redis.call('PERSIST', key)
  end
end

-- The JSON text of an object from its fields (a flat {field as JSON, value as JSON, ...} list).
local function object_text(fields)
  local parts = {}
  for k = 1, #fields, 2 do
    parts[#parts + 1] = fields[k] .. ':' .. fields[k + 1]
  end
  return '{' .. table.concat(parts, ',') .. '}'
end

-- HSET of a flat {field, value, ...} list, in chunks that stay within Lua's stack.
local function hset_all(key, fields)
  for first = 1, #fields, 256 do
    redis.call('HSET', key, unpack(fields, first, math.min(first + 255, #fields)))
  end
end
