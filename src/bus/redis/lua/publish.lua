-- Commits a batch of logged messages and presence changes, atomically and in order: the only place a seq is
-- assigned. For each message: fold object ops into the canvas state (refusing updates and deletes of missing
-- objects), record presence changes (logging only a user's first connect and last disconnect on the canvas),
-- take the canvas's next seq, append to its stream, trim what the TTL expired.
--
-- ARGV: ttl_ms, instance, epoch candidate, then per message 10 fields and its object fields:
--   op (log|create|update|delete|connect|disconnect), canvas, type, from, data, conn, ref, name, object id,
--   n, then n (field, raw JSON value) pairs of the object's top-level fields.
--   ref and name are '' for none, else '=' followed by the value.
-- Returns: { epoch, writes, now, then per message seq and generation }; seq -1 = refused (missing object),
--   0 = recorded, nothing logged (a presence change that is not the user's first or last).

local ttl, instance = tonumber(ARGV[1]), ARGV[2]
local epoch = store_epoch(ARGV[3])
local now = now_ms()
local out = { epoch, redis.call('INCR', 'relay:writes'), now }

-- Drops the entries older than the TTL from the front of a stream, 128 at a time; the common case (the
-- oldest entry is still fresh) costs one XRANGE of one entry.
local function trim(log)
  local cutoff = now - ttl
  while true do
    local oldest = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)[1]
    if not oldest or tonumber(oldest[2][2]) > cutoff then
      return
    end
    local entries = redis.call('XRANGE', log, '-', '+', 'COUNT', 128)
    for _, entry in ipairs(entries) do
      if tonumber(entry[2][2]) > cutoff then
        redis.call('XTRIM', log, 'MINID', entry[1])
        return
      end
    end
    for _, entry in ipairs(entries) do
      redis.call('XDEL', log, entry[1])
    end
  end
end

-- Streams appended to by this batch: trimmed and given the TTL once each, after the batch.
local appended = {}

local function append(canvas, kind, from, data, conn, ref)
  local seq = redis.call('HINCRBY', canvas_key(canvas, 'head'), 'seq', 1)
  local _, gen = head(canvas)
  local log = canvas_key(canvas, 'log')
  redis.call('XADD', log, entry_id(gen, seq), 'ts', now, 's', seq, 't', kind, 'f', from, 'd', data,
    'i', instance, 'c', conn, 'r', ref)
  appended[log] = true
  out[#out + 1] = seq
  out[#out + 1] = gen
end

local function skip(seq)
  out[#out + 1] = seq
  out[#out + 1] = 0
end

-- Sets an object's fields from ARGV[at..] (n pairs), in chunks that stay within Lua's stack.
local function set_fields(key, at, n)
  for first = 0, n - 1, 64 do
    local args = {}
    for k = first, math.min(first + 63, n - 1) do
      args[#args + 1] = ARGV[at + 2 * k]
      args[#args + 1] = ARGV[at + 2 * k + 1]
    end
    redis.call('HSET', key, unpack(args))
  end
end

-- HINCRBY -1 that removes the field at zero; returns whether it did.
local function decrement(key, field)
  if redis.call('HINCRBY', key, field, -1) <= 0 then
    redis.call('HDEL', key, field)
    return true
  end
  return false
end

local i = 4
while i <= #ARGV do
  local op, canvas, kind, from, data = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local conn, ref, name, id, n = ARGV[i + 5], ARGV[i + 6], ARGV[i + 7], ARGV[i + 8], tonumber(ARGV[i + 9])
  local fields = i + 10
  i = fields + 2 * n
  local object = canvas_key(canvas, 'o:' .. id)
  local ids = canvas_key(canvas, 'ids')
  if op == 'log' then
    append(canvas, kind, from, data, conn, ref)
  elseif op == 'create' then
    redis.call('DEL', object)
    redis.call('SADD', ids, id)
    set_fields(object, fields, n)
    append(canvas, kind, from, data, conn, ref)
  elseif op == 'update' then
    if redis.call('SISMEMBER', ids, id) == 0 then
      skip(-1)
    else
      set_fields(object, fields, n)
      append(canvas, kind, from, data, conn, ref)
    end
  elseif op == 'delete' then
    if redis.call('SREM', ids, id) == 0 then
      skip(-1)
    else
      redis.call('DEL', object)
      append(canvas, kind, from, data, conn, ref)
    end
  elseif op == 'connect' then
    if redis.call('HSETNX', canvas_key(canvas, 'conns'), conn, instance) == 0 then
      skip(0)
    else
      redis.call('HSET', 'relay:i:' .. instance .. ':conns', conn, canvas .. '\n' .. from .. '\n' .. name)
      if name ~= '' then
        redis.call('HSET', canvas_key(canvas, 'names'), from, string.sub(name, 2))
      else
        redis.call('HDEL', canvas_key(canvas, 'names'), from)
      end
      redis.call('HINCRBY', 'relay:u:' .. from, canvas, 1)
      redis.call('HINCRBY', 'relay:users', from, 1)
      if redis.call('HINCRBY', canvas_key(canvas, 'users'), from, 1) == 1 then
        append(canvas, kind, from, data, conn, ref)
      else
        skip(0)
      end
    end
  elseif op == 'disconnect' then
    local owner = redis.call('HGET', canvas_key(canvas, 'conns'), conn)
    if not owner then
      skip(0) -- already removed (by a survivor that took this instance for dead)
    else
      redis.call('HDEL', canvas_key(canvas, 'conns'), conn)
      redis.call('HDEL', 'relay:i:' .. owner .. ':conns', conn)
      decrement('relay:u:' .. from, canvas)
      decrement('relay:users', from)
      if decrement(canvas_key(canvas, 'users'), from) then
        redis.call('HDEL', canvas_key(canvas, 'names'), from)
        append(canvas, kind, from, data, conn, ref)
      else
        skip(0)
      end
    end
  else
    return redis.error_reply('unknown op ' .. op)
  end
end
for log in pairs(appended) do
  trim(log)
  redis.call('PEXPIRE', log, ttl)
end
return out
