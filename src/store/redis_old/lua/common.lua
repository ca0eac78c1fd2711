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

-- A canvas with neither objects nor connections expires when idle, `ms` from now (its log expires before its
-- head does); one with either is kept. The webhook's position of the canvas (`webhook`) goes with its head.
local function keep_or_expire(canvas, ms)
  local key, webhook = canvas_key(canvas, 'head'), canvas_key(canvas, 'webhook')
  if redis.call('HLEN', canvas_key(canvas, 'objects')) == 0 and redis.call('HLEN', canvas_key(canvas, 'conns')) == 0 then
    redis.call('PEXPIRE', key, ms)
    redis.call('PEXPIRE', webhook, ms)
  else
    redis.call('PERSIST', key)
    redis.call('PERSIST', webhook)
  end
end

-- The log of every canvas in commit order (`relay:stream`), which the event stream reads: one entry per
-- logged message and reset marker, with the fields of the canvas's own entry that a reader needs, and the
-- canvas and generation. Ids are Redis's (`*`: its clock, never going back), so they follow the order in
-- which scripts committed, across canvases and instances.
local function log_everywhere(canvas, gen, seq, kind, from, data, now)
  redis.call('XADD', 'relay:stream', '*', 'ts', now, 'canvas', canvas, 'g', gen, 's', seq, 't', kind, 'f', from,
    'd', data)
end

-- Drops the entries of the log of every canvas older than the TTL, recording the newest id dropped
-- (`relay:stream:trimmed`): a reader whose position is before it missed entries. (XINFO's
-- `max-deleted-entry-id` would not say so: Redis 7.0 moves it on XDEL only, not on a trim.) Called after an
-- append, so the newest entry always stays. The common case costs one XRANGE of the oldest entry: the
-- trim runs only once that entry is a tenth of the TTL (at most a second) past it, because finding the
-- newest entry to drop (XREVRANGE from the cutoff) costs some 250 us on a long stream, which every publish
-- paid when it ran each time. So entries outlive the TTL by up to that slack here.
local function trim_everywhere(now, ttl)
  local cutoff_ms = now - ttl
  if cutoff_ms <= 0 then
    return
  end
  local slack = math.min(1000, math.floor(ttl / 10))
  local oldest = redis.call('XRANGE', 'relay:stream', '-', '+', 'COUNT', 1)[1]
  if not oldest or tonumber(string.match(oldest[1], '^(%d+)')) >= cutoff_ms - slack then
    return
  end
  local cutoff = string.format('%d-0', cutoff_ms)
  local newest = redis.call('XREVRANGE', 'relay:stream', '(' .. cutoff, '-', 'COUNT', 1)[1]
  if newest then
    redis.call('SET', 'relay:stream:trimmed', newest[1])
    redis.call('XTRIM', 'relay:stream', 'MINID', cutoff)
  end
end

-- Drops entries from the front of a stream while `droppable(entry)` holds, 128 at a time; the common case
-- (the oldest entry stays) costs one XRANGE of one entry.
local function trim(log, droppable)
  while true do
    local oldest = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)[1]
    if not oldest or not droppable(oldest) then
      return
    end
    local entries = redis.call('XRANGE', log, '-', '+', 'COUNT', 128)
    for _, entry in ipairs(entries) do
      if not droppable(entry) then
        redis.call('XTRIM', log, 'MINID', entry[1])
        return
      end
    end
    for _, entry in ipairs(entries) do
      redis.call('XDEL', log, entry[1])
    end
  end
end

-- How far the webhook has delivered a canvas (`webhook`: g = generation, s = seq, p = the last seq of the
-- batch being sent, absent when none): generation and seq, or nil when it never has.
local function delivered_to(canvas)
  local at = redis.call('HMGET', canvas_key(canvas, 'webhook'), 'g', 's')
  if not at[1] then
    return nil
  end
  return tonumber(at[1]), tonumber(at[2] or '0')
end

-- A canvas's log after a commit or a delivery: the entries past the TTL dropped from its front, and the
-- expiry of the log (`newest` is when its newest entry was committed; nil: no entry) and of its head set.
-- With a webhook (`retention` > 0, in ms), entries after its delivered position stay until they are also
-- `retention` old, and the log and head of a canvas it has not delivered up to the head are kept as long
-- (the head, as always, a TTL longer than the log). Entries leave in seq order: each rule drops a prefix.
local function settle_log(canvas, now, ttl, retention, newest)
  local log = canvas_key(canvas, 'log')
  local dgen, dseq
  local keep = ttl
  if retention > 0 then
    local seq, gen = head(canvas)
    dgen, dseq = delivered_to(canvas)
    if dgen ~= gen or dseq < seq then
      keep = math.max(ttl, retention)
    end
  end
  trim(log, function(entry)
    local ts = tonumber(entry[2][2])
    if ts > now - ttl then
      return false
    elseif retention == 0 or ts <= now - retention then
      return true
    elseif not dgen then
      return false
    end
    local time_part, s = string.match(entry[1], '^(%d+)-(%d+)$')
    local g = tonumber(time_part) - 1 -- see entry_id
    return g < dgen or (g == dgen and tonumber(s) <= dseq)
  end)
  if newest then
    redis.call('PEXPIREAT', log, newest + keep)
  end
  keep_or_expire(canvas, keep + ttl)
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
