-- Commits a batch of logged messages and presence changes, atomically and in order: the only place a seq is
-- assigned. For each message: fold object ops into the canvas state (refusing updates and deletes of missing
-- objects, and ops that would take the state past its size limit), record presence changes (logging only a
-- user's first connect and last disconnect on the canvas), take the canvas's next seq, append to its stream
-- and to the log of every canvas, trim what the TTL expired (keeping what a webhook has yet to deliver).
--
-- All or nothing: every argument is checked before the first write, and the script declares flags (the
-- shebang the loader puts first), so Redis refuses it whole when out of memory rather than fail a write half
-- way. Idempotent per batch: the instance numbers its batches and the reply of the last one is kept, so a
-- batch sent again after its reply was lost is answered, not applied twice. A batch is for the store epoch
-- the instance knew when it first sent it: if the store has another (it lost its data, or was rotated after
-- a rollback), nothing is applied and the reply is the new epoch alone, so a batch sent again after Redis
-- came back empty is not logged into a log its senders never saw.
--
-- ARGV: ttl_ms, instance, epoch candidate, batch number, max state bytes, the store epoch the batch is for
--   ('' if the instance knows none yet), the webhook's retention in ms (0: no webhook; see `settle_log`),
--   then per message 12 fields and its object fields: op (log|create|update|delete|connect|disconnect|expire),
--   canvas, type, from, data, conn, ref, name, object id, length of the object id as JSON, n, idempotency key
--   ('' for none), then n (field as JSON, value as JSON) pairs of the object's top-level fields. ref and name
--   are '' for none, else '=' followed by the value. `expire` is a survivor's disconnect of a dead instance's
--   connection, applied only if the owner's heartbeat is still older than `ref` ms (it may have come back and
--   registered the connection).
-- Returns: { epoch, writes, now, then per message seq and generation }; seq -1 = refused (missing object),
--   -2 = refused (state too big), 0 = recorded, nothing logged (a presence change not the user's first/last),
--   -4 = a presence change that changed nothing (registered already, or removed already),
--   -3 = a repeated idempotency key (the same user's, on the canvas, in its generation, within the TTL):
--   nothing logged, and the second number is the original's seq. Or { epoch } alone: the store's epoch is
--   not the one the batch was for, and nothing was applied.

local ttl, instance, batch, max_bytes = tonumber(ARGV[1]), ARGV[2], ARGV[4], tonumber(ARGV[5])
local retention = tonumber(ARGV[7])
local marker = 'relay:i:' .. instance .. ':batch'
local last = redis.call('GET', marker)
if last then
  local number, reply = string.match(last, '^(%S+) (.*)$')
  if number == batch then
    local out = {}
    for item in string.gmatch(reply, '%S+') do
      out[#out + 1] = item
    end
    return out
  end
  if tonumber(number) and tonumber(batch) and tonumber(number) > tonumber(batch) then
    return redis.error_reply('stale batch ' .. batch .. ' (last applied ' .. number .. ')')
  end
end

-- Check every message before writing anything.
local ops = { log = true, create = true, update = true, delete = true, connect = true, disconnect = true, expire = true }
local messages = {}
local i = 8
if not ttl or not max_bytes or not tonumber(batch) or not retention then
  return redis.error_reply('malformed batch header')
end
while i <= #ARGV do
  local n = tonumber(ARGV[i + 10])
  local bad_expire = ARGV[i] == 'expire' and not tonumber(ARGV[i + 6])
  if not ops[ARGV[i]] or bad_expire or not n or not tonumber(ARGV[i + 9]) or i + 11 + 2 * n > #ARGV then
    return redis.error_reply('malformed batch at argument ' .. i)
  end
  messages[#messages + 1] = i
  i = i + 12 + 2 * n
end

local epoch = store_epoch(ARGV[3])
if ARGV[6] ~= '' and ARGV[6] ~= epoch then
  return { epoch }
end
local now = now_ms()
local out = { epoch, redis.call('INCR', 'relay:writes'), now }

-- Canvases appended to by this batch: trimmed and given their expiry once each, after the batch.
local appended, logged = {}, false

-- Appends one message; `object` is the id of the object an object op changed (kept in the entry's `o`
-- field, which a state read catching up after a scan uses: see `state_tail.lua`).
local function append(canvas, kind, from, data, conn, ref, object)
  local head = ensure_head(canvas)
  local seq = redis.call('HINCRBY', head, 'seq', 1)
  local gen = tonumber(redis.call('HGET', head, 'gen'))
  local fields = { 'ts', now, 's', seq, 't', kind, 'f', from, 'd', data, 'i', instance, 'c', conn, 'r', ref }
  if object then
    redis.call('HSET', head, 'oseq', seq)
    fields[#fields + 1] = 'o'
    fields[#fields + 1] = object
  end
  redis.call('XADD', canvas_key(canvas, 'log'), entry_id(gen, seq), unpack(fields))
  log_everywhere(canvas, gen, seq, kind, from, data, now)
  appended[canvas], logged = true, true
  out[#out + 1] = seq
  out[#out + 1] = gen
end

local function skip(seq)
  out[#out + 1] = seq
  out[#out + 1] = 0
end

-- The fields of ARGV[at..] (n pairs) over `base` (a flat list), later values replacing earlier ones.
local function overlay(base, at, n)
  local fields, index = {}, {}
  for k = 1, #base, 2 do
    index[base[k]] = #fields + 1
    fields[#fields + 1] = base[k]
    fields[#fields + 1] = base[k + 1]
  end
  for k = 0, n - 1 do
    local field, value = ARGV[at + 2 * k], ARGV[at + 2 * k + 1]
    if index[field] then
      fields[index[field] + 1] = value
    else
      index[field] = #fields + 1
      fields[#fields + 1] = field
      fields[#fields + 1] = value
    end
  end
  return fields
end

-- Whether the state may grow by `delta` bytes; records the growth if so.
local function fits(canvas, delta)
  local head = ensure_head(canvas)
  local bytes = tonumber(redis.call('HGET', head, 'bytes') or '0')
  if delta > 0 and bytes + delta + 1 > max_bytes then
    return false
  end
  redis.call('HINCRBY', head, 'bytes', delta)
  return true
end

-- HINCRBY -1 that removes the field at zero; returns whether it did.
local function decrement(key, field)
  if redis.call('HINCRBY', key, field, -1) <= 0 then
    redis.call('HDEL', key, field)
    return true
  end
  return false
end

-- One message of the batch (see the ARGV above), applied or refused.
local function apply(at)
  local op, canvas, kind, from, data = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], ARGV[at + 4]
  local conn, ref, name, id = ARGV[at + 5], ARGV[at + 6], ARGV[at + 7], ARGV[at + 8]
  local id_len, n, pairs_at = tonumber(ARGV[at + 9]), tonumber(ARGV[at + 10]), at + 12
  local objects = canvas_key(canvas, 'objects')
  local exists, stored = false, 0
  if op == 'create' or op == 'update' or op == 'delete' then
    exists = redis.call('HEXISTS', objects, id) == 1
    stored = redis.call('HSTRLEN', objects, id)
  end
  if op == 'log' then
    append(canvas, kind, from, data, conn, ref, nil)
  elseif op == 'create' then
    local before = exists and (id_len + stored + 2) or 0
    if not fits(canvas, id_len + #data + 2 - before) then
      skip(-2)
      appended[canvas] = true -- a head made for nothing expires like any idle one
    else
      local key = object_key(canvas, id)
      redis.call('DEL', key)
      hset_all(key, overlay({}, pairs_at, n))
      redis.call('HSET', objects, id, data)
      append(canvas, kind, from, data, conn, ref, id)
    end
  elseif op == 'update' then
    if not exists then
      skip(-1)
    else
      local key = object_key(canvas, id)
      local fields = overlay(redis.call('HGETALL', key), pairs_at, n)
      local text = object_text(fields)
      if not fits(canvas, #text - stored) then
        skip(-2)
      else
        hset_all(key, fields)
        redis.call('HSET', objects, id, text)
        append(canvas, kind, from, data, conn, ref, id)
      end
    end
  elseif op == 'delete' then
    if not exists then
      skip(-1)
    else
      fits(canvas, -(id_len + stored + 2))
      redis.call('DEL', object_key(canvas, id))
      redis.call('HDEL', objects, id)
      append(canvas, kind, from, data, conn, ref, id)
    end
  elseif op == 'connect' then
    if redis.call('HSETNX', canvas_key(canvas, 'conns'), conn, instance) == 0 then
      skip(-4) -- registered already: nothing changed
    else
      redis.call('HSET', 'relay:i:' .. instance .. ':conns', conn, canvas .. '\n' .. from .. '\n' .. name)
      -- What a joiner reads as welcome.peers: the user and encoded name (its state, once set, in `pstates`).
      redis.call('HSET', canvas_key(canvas, 'peers'), conn, from .. '\n' .. name)
      if name ~= '' then
        redis.call('HSET', canvas_key(canvas, 'names'), from, string.sub(name, 2))
      else
        redis.call('HDEL', canvas_key(canvas, 'names'), from)
      end
      redis.call('HINCRBY', 'relay:u:' .. from, canvas, 1)
      redis.call('HINCRBY', 'relay:users', from, 1)
      if redis.call('HINCRBY', canvas_key(canvas, 'users'), from, 1) == 1 then
        append(canvas, kind, from, data, '', '', nil) -- presence: nobody gets an ack for it
      else
        skip(0)
        appended[canvas] = true
      end
    end
  else -- disconnect, expire
    local owner = redis.call('HGET', canvas_key(canvas, 'conns'), conn)
    local back = false
    if owner and op == 'expire' then
      back = tonumber(redis.call('HGET', 'relay:instances', owner) or '0') > now - tonumber(ref)
    end
    if not owner or back then
      if not owner then
        -- (an older instance's script, during a rolling upgrade, removes a connection and not its peer entry)
        redis.call('HDEL', canvas_key(canvas, 'peers'), conn)
        redis.call('HDEL', canvas_key(canvas, 'pstates'), conn)
      end
      skip(-4) -- already removed (by a survivor that took this instance for dead), or its instance is back
    else
      redis.call('HDEL', canvas_key(canvas, 'conns'), conn)
      redis.call('HDEL', canvas_key(canvas, 'peers'), conn)
      redis.call('HDEL', canvas_key(canvas, 'pstates'), conn)
      redis.call('HDEL', 'relay:i:' .. owner .. ':conns', conn)
      decrement('relay:u:' .. from, canvas)
      decrement('relay:users', from)
      if decrement(canvas_key(canvas, 'users'), from) then
        redis.call('HDEL', canvas_key(canvas, 'names'), from)
        append(canvas, kind, from, data, '', '', nil) -- presence: nobody gets an ack for it
      else
        skip(0)
        appended[canvas] = true
      end
    end
  end
end

-- Where a user's idempotency key is kept: per canvas and generation (a reset starts afresh; generations
-- start at 1, so a canvas without a head has none), the user's id length-prefixed so that no user and key
-- pair can spell another's. It expires with the TTL.
local function idempotency_key(canvas, from, key)
  local _, gen = head(canvas)
  return canvas_key(canvas, 'idem:' .. gen .. ':' .. #from .. ':' .. from .. ':' .. key)
end

for _, at in ipairs(messages) do
  local canvas, from, key = ARGV[at + 1], ARGV[at + 3], ARGV[at + 11]
  local original = key ~= '' and redis.call('GET', idempotency_key(canvas, from, key))
  if original then
    out[#out + 1] = -3
    out[#out + 1] = tonumber(original)
  else
    local before = #out
    apply(at)
    if key ~= '' and out[before + 1] > 0 then
      redis.call('SET', idempotency_key(canvas, from, key), out[before + 1], 'PX', ttl)
    end
  end
end
if logged then
  trim_everywhere(now, ttl)
end
for canvas in pairs(appended) do
  settle_log(canvas, now, ttl, retention, now)
end
redis.call('SET', marker, batch .. ' ' .. table.concat(out, ' '))
return out
