-- Shared by every script (prepended to each): the clock, the store's epoch, key names and the head.
--
-- Keys of canvas C are `relay:{C}:...`: the braces keep a canvas's keys apart from any other name and in one
-- Redis Cluster slot. Time is Redis's own clock, so instances on hosts whose clocks disagree still agree on
-- message timestamps and on what has expired. Numbers go out through `int`, never Lua's own formatting
-- (which writes 1e+15 for big ones).

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function int(n)
  return string.format('%d', n)
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

-- Stream entry id of (generation, seq): generation + 1 in the time part, so ids grow across resets and a
-- generation's reset marker (seq 0) is a valid id. The log and the ops stream of a canvas both use it.
local function entry_id(gen, seq)
  return string.format('%d-%d', gen + 1, seq)
end

-- The head of a canvas (`head`): what the fold computed, kept as given, and what the store itself keeps:
-- gen, seq, rev, version (the seq of the last object op), bytes, objects, connections, users (the fold's
-- counts), snap and snapkey (the newest snapshot's seq and key), updated (ms of the last commit),
-- forget_after and forget_at (ms; absent while the canvas holds objects or connections).
local HEAD_FIELDS = { 'gen', 'seq', 'rev', 'version', 'bytes', 'objects', 'connections', 'users', 'snap', 'snapkey',
  'updated', 'forget_after', 'forget_at' }

-- The head as a table of numbers (snapkey a string), or nil for a canvas nothing was committed to.
local function read_head(canvas)
  local values = redis.call('HMGET', canvas_key(canvas, 'head'), unpack(HEAD_FIELDS))
  if not values[1] then
    return nil
  end
  local h = {}
  for k, name in ipairs(HEAD_FIELDS) do
    if name == 'snapkey' then
      h[name] = values[k] or nil
    else
      h[name] = tonumber(values[k] or '') -- nil when absent
    end
  end
  for _, name in ipairs({ 'seq', 'rev', 'version', 'bytes', 'objects', 'connections', 'users', 'snap' }) do
    h[name] = h[name] or 0
  end
  return h
end

-- The head as the reply carries it: gen, seq, rev, version, bytes, objects, connections, users.
local function head_reply(h)
  return { h.gen, h.seq, h.rev, h.version, h.bytes, h.objects, h.connections, h.users }
end

-- A connection row of a canvas (`conns`: connection id -> row): instance, user, opened and the encoded name
-- ('' for none, else '=' and the name), one per line, the name last (it may hold a newline). The indexes of
-- an instance's and a user's connections (`relay:i:{instance}:conns`, `relay:u:{user}`) hold the canvas
-- and the row.
local function conn_row(instance, user, opened, name)
  return instance .. '\n' .. user .. '\n' .. opened .. '\n' .. name
end

-- An instance that holds a connection is always in `relay:instances` (`beat` when it is not there yet: one
-- forgotten while its heartbeat was late that registers a connection before its next one), so that
-- survivors find its connections if it dies.
local function index_conn(canvas, conn, instance, user, row, beat)
  redis.call('HSETNX', 'relay:instances', instance, beat)
  redis.call('HSET', 'relay:i:' .. instance .. ':conns', conn, canvas .. '\n' .. row)
  redis.call('HSET', 'relay:u:' .. user, conn, canvas .. '\n' .. row)
  redis.call('HINCRBY', 'relay:users', user, 1)
end

local function unindex_conn(conn, instance, user)
  redis.call('HDEL', 'relay:i:' .. instance .. ':conns', conn)
  redis.call('HDEL', 'relay:u:' .. user, conn)
  if redis.call('HINCRBY', 'relay:users', user, -1) <= 0 then
    redis.call('HDEL', 'relay:users', user)
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
