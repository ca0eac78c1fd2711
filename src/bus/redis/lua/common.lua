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
