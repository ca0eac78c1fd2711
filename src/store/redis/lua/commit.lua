-- Commits a batch of staged canvases: each canvas's part is applied whole under its expectation, or not at
-- all and answered with what is new. The script only stores: every value it writes was decided by the fold
-- in Rust, except the seqs (each entry takes the next after the head), the version (the seq of the last
-- entry that changes the objects), the rev (one more, when a guarded part writes anything) and the
-- generation of a head it creates (the next of `relay:generations`). No object logic, no JSON.
--
-- Per canvas, self-contained (its keys share the canvas's hash tag): the batch marker, the head check, the
-- idempotency keys, the appends to its log (and object ops to its ops stream), its connection rows, its
-- head. Written beside them, global: the log of every canvas, the write count, the indexes (canvases,
-- connections by instance and user, what cleanup and snapshots visit).
--
-- All or nothing: every argument is checked before the first write, and the script declares flags (the
-- shebang the loader puts first), so Redis refuses it whole when out of memory. Answered as it was when sent
-- again: a part applied leaves a marker per canvas and instance (`batch:<instance>`: the batch number and
-- the part's reply), so a batch whose reply was lost and that is sent again gets the first replies instead
-- of being applied twice. A batch is for the store epoch its instance knew when it first sent it: if the
-- store has another (it lost its data, or was rotated after a rollback), nothing is applied.
--
-- ARGV: instance, batch number, store epoch the batch is for ('' if the instance knows none yet), epoch
--   candidate, ttl_ms (idempotency keys, and when the log is next due for trimming), marker_ttl_ms; then
--   per canvas 12 fields: canvas, expect ('' to append, else the rev the head must have; 0: no head), the
--   generation and seq the fold knew (a guarded part checks the generation too: a canvas forgotten and
--   created again starts its rev over), the head's bytes, objects, connections and users as staged,
--   forget_after ('' for none), then how many entries, connection writes and keys follow; per entry 6:
--   type, from, data, conn ('' for none), ref ('' for none, else '=' and the ref), changes objects ('1' or
--   '0', or '2' for an object op of a restore, which changes the objects and is marked `x` 1 in the log
--   and the ops stream); per connection write 6: 'p' (put) or 'r' (remove), conn, instance, user, then
--   for a put the encoded name and opened, for a remove '' and unless_alive_within ('' for none, else ms:
--   a survivor's expiry, applied only if the row's instance has had no heartbeat for that long); per key
--   3: user, key, the entry it names (0-based; '' for a key only checked: its publish was refused by the
--   state, and is a duplicate if the key is taken; nothing is kept for it).
-- Returns { 'ok', epoch, writes, now, then per canvas one of:
--   { 'p', head..., first seq }: applied (head: gen, seq, rev, version, bytes, objects, connections,
--     users, as kept now),
--   { 's', head..., ops, conns }: the head moved; the object ops after the seq the fold knew (stream
--     entries) and the connection rows (flat: conn, row),
--   { 'w' }: the head moved and the ops since are not all kept (another generation, or a snapshot past
--     the seq the fold knew): read the canvas whole,
--   { 'k', n, user, key, seq, ... (n of them), conn, ... }: the head is as expected but claimed keys are
--     taken (their seqs), or a survivor's expiry would remove connections whose instance is alive after
--     all (those connections): nothing applied }
-- or { 'epoch', epoch }: the store is in another epoch, and nothing was applied.

local HEADER, PART = 6, 12
local instance, batch, known_epoch, candidate = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ttl, marker_ttl = tonumber(ARGV[5]), tonumber(ARGV[6])
if not string.match(batch, '^%d+$') or not ttl or not marker_ttl or instance == '' then
  return redis.error_reply('malformed batch header')
end

local function count(value)
  return value and string.match(value, '^%d+$') and tonumber(value)
end

-- Check every part before writing anything.
local parts = {}
local at = HEADER + 1
while at <= #ARGV do
  local expect, forget = ARGV[at + 1], ARGV[at + 8]
  local ne, nc, nk = count(ARGV[at + 9]), count(ARGV[at + 10]), count(ARGV[at + 11])
  local ok = ARGV[at] ~= '' and (expect == '' or count(expect)) and (forget == '' or count(forget))
  for k = 2, 7 do
    ok = ok and count(ARGV[at + k])
  end
  ok = ok and ne and nc and nk and at + PART - 1 + 6 * ne + 6 * nc + 3 * nk <= #ARGV
  local claims = 0
  if ok then
    local e = at + PART
    for k = 0, ne - 1 do
      local changes = ARGV[e + 6 * k + 5]
      ok = ok and (changes == '1' or changes == '0' or changes == '2')
    end
    local c = e + 6 * ne
    for k = 0, nc - 1 do
      local op, last = ARGV[c + 6 * k], ARGV[c + 6 * k + 5]
      ok = ok and ((op == 'p' and count(last)) or (op == 'r' and (last == '' or count(last))))
    end
    local y = c + 6 * nc
    for k = 0, nk - 1 do
      local entry = ARGV[y + 3 * k + 2]
      ok = ok and (entry == '' or (count(entry) and count(entry) < ne))
      if entry ~= '' then
        claims = claims + 1
      end
    end
  end
  if not ok then
    return redis.error_reply('malformed batch at argument ' .. at)
  end
  parts[#parts + 1] = { at = at, ne = ne, nc = nc, nk = nk, claims = claims }
  at = at + PART + 6 * ne + 6 * nc + 3 * nk
end

local epoch = store_epoch(candidate)
if known_epoch ~= '' and known_epoch ~= epoch then
  return { 'epoch', epoch }
end
local now = now_ms()
local out = { 'ok', epoch, redis.call('INCR', 'relay:writes'), now }

-- Where a user's idempotency key is kept: per canvas and generation (a reset starts afresh; generations
-- start at 1, so a canvas without a head has none), the user's id length-prefixed so that no user and key
-- pair can spell another's. It expires with the TTL.
local function idempotency_key(canvas, gen, user, key)
  return canvas_key(canvas, 'idem:' .. int(gen) .. ':' .. #user .. ':' .. user .. ':' .. key)
end

-- What is new since the generation and seq the fold knew: the ops after it when they are all kept (the ops
-- stream keeps them back to the history's floor, which is never above the newest snapshot), else a read of
-- the whole canvas.
local function moved(canvas, h, known_gen, known_seq)
  if not h or h.gen ~= known_gen or known_seq < h.snap or known_seq > h.seq then
    return { 'w' }
  end
  local ops = {}
  if known_seq < h.seq then
    ops = redis.call('XRANGE', canvas_key(canvas, 'ops'), entry_id(h.gen, known_seq + 1), entry_id(h.gen, h.seq))
  end
  local reply = head_reply(h)
  table.insert(reply, 1, 's')
  reply[#reply + 1] = ops
  reply[#reply + 1] = redis.call('HGETALL', canvas_key(canvas, 'conns'))
  return reply
end

-- A new head, in a generation never used before by any canvas (so a canvas forgotten when idle and created
-- again starts a new epoch), added to the index of canvases; its history starts now, from seq 0.
local function create_head(canvas)
  redis.call('ZADD', 'relay:canvases', 0, canvas)
  local h = { created = true }
  h.gen = redis.call('INCR', 'relay:generations')
  for _, name in ipairs({ 'seq', 'rev', 'version', 'bytes', 'objects', 'connections', 'users', 'snap', 'hfrom' }) do
    h[name] = 0
  end
  h.genat = now
  return h
end

-- The claimed keys some entry of the head's generation holds already: { user, key, seq, ... }.
local function taken_keys(p, canvas, gen)
  local taken = {}
  local y = p.at + PART + 6 * p.ne + 6 * p.nc
  for k = 0, p.nk - 1 do
    local user, key = ARGV[y + 3 * k], ARGV[y + 3 * k + 1]
    local seq = redis.call('GET', idempotency_key(canvas, gen, user, key))
    if seq then
      taken[#taken + 1] = user
      taken[#taken + 1] = key
      taken[#taken + 1] = tonumber(seq)
    end
  end
  return taken
end

-- The connections a survivor's expiry of the part would remove whose instance has had a heartbeat within the
-- time the expiry allows: it came back, and they stay.
local function spared_conns(p, canvas)
  local spared = {}
  local conns = canvas_key(canvas, 'conns')
  local c = p.at + PART + 6 * p.ne
  for k = 0, p.nc - 1 do
    local w = c + 6 * k
    if ARGV[w] == 'r' and ARGV[w + 5] ~= '' then
      local row = redis.call('HGET', conns, ARGV[w + 1])
      local owner = row and string.match(row, '^([^\n]*)\n')
      local beat = owner and tonumber(redis.call('HGET', 'relay:instances', owner) or '')
      if beat and beat >= now - tonumber(ARGV[w + 5]) then
        spared[#spared + 1] = ARGV[w + 1]
      end
    end
  end
  return spared
end

-- The connection rows a guarded part puts and removes, with the global indexes.
local function write_conns(p, canvas)
  local conns, states = canvas_key(canvas, 'conns'), canvas_key(canvas, 'pstates')
  local c = p.at + PART + 6 * p.ne
  for k = 0, p.nc - 1 do
    local w = c + 6 * k
    local conn, owner, user = ARGV[w + 1], ARGV[w + 2], ARGV[w + 3]
    if ARGV[w] == 'p' then
      local row = conn_row(owner, user, ARGV[w + 5], ARGV[w + 4])
      redis.call('HSET', conns, conn, row)
      index_conn(canvas, conn, owner, user, row, now)
    elseif redis.call('HDEL', conns, conn) == 1 then
      redis.call('HDEL', states, conn)
      unindex_conn(conn, owner, user)
    end
  end
end

-- Appends the part's entries after the head's seq, to the canvas's log, its ops stream (object ops) and the
-- log of every canvas. Returns the first seq.
local function append(p, canvas, h)
  local log, ops = canvas_key(canvas, 'log'), canvas_key(canvas, 'ops')
  local first = h.seq + 1
  local e = p.at + PART
  for k = 0, p.ne - 1 do
    local w = e + 6 * k
    local kind, from, data = ARGV[w], ARGV[w + 1], ARGV[w + 2]
    h.seq = h.seq + 1
    local id = entry_id(h.gen, h.seq)
    -- `ts` first: cleanup reads an entry's time there. A restore's op is marked last.
    local restore = ARGV[w + 5] == '2' and { 'x', '1' } or {}
    redis.call('XADD', log, id, 'ts', now, 's', h.seq, 't', kind, 'f', from, 'd', data, 'i', instance,
      'c', ARGV[w + 3], 'r', ARGV[w + 4], unpack(restore))
    if ARGV[w + 5] ~= '0' then
      redis.call('XADD', ops, id, 'ts', now, 's', h.seq, 't', kind, 'f', from, 'd', data, 'i', instance,
        unpack(restore))
      h.version = h.seq
    end
    log_everywhere(canvas, h.gen, h.seq, kind, from, data, now)
  end
  return first
end

-- Saves the head, and the indexes cleanup and snapshots visit: a canvas left with neither objects nor
-- connections may be forgotten `forget_after` ms after its last commit (an append keeps the rule the last
-- guarded commit set, counted from now); a log with entries is trimmed once its oldest passes the TTL; a
-- canvas with object ops after its newest snapshot is snapshotted once it goes quiet.
local function save_head(p, canvas, h, guarded)
  local key = canvas_key(canvas, 'head')
  if guarded or h.created then
    h.forget_after = ARGV[p.at + 8] ~= '' and tonumber(ARGV[p.at + 8]) or nil
  end
  h.updated = now
  -- An append to a head that exists moves only its seq and time (and forget time).
  local names = (guarded or h.created) and HEAD_FIELDS or { 'seq', 'updated' }
  local fields = {}
  for _, name in ipairs(names) do
    if name ~= 'snapkey' and name ~= 'forget_at' and h[name] then
      fields[#fields + 1] = name
      fields[#fields + 1] = int(h[name])
    end
  end
  if h.forget_after then
    h.forget_at = now + h.forget_after
    fields[#fields + 1] = 'forget_at'
    fields[#fields + 1] = int(h.forget_at)
    redis.call('ZADD', 'relay:forget', h.forget_at, canvas)
  elseif h.forget_at then
    redis.call('HDEL', key, 'forget_after', 'forget_at')
    redis.call('ZREM', 'relay:forget', canvas)
  end
  redis.call('HSET', key, unpack(fields))
  if p.ne > 0 then
    redis.call('ZADD', 'relay:trim', 'NX', now + ttl, canvas)
  end
  if h.version > h.snap then
    redis.call('ZADD', 'relay:unsnapped', guarded and 'CH' or 'XX', now, canvas)
  end
end

-- One canvas's part: answered as before if this batch applied it already, else checked, then written.
local function commit_part(p)
  local canvas = ARGV[p.at]
  local marker = canvas_key(canvas, 'batch:' .. instance)
  local done = redis.call('GET', marker)
  if done then
    local number, reply = string.match(done, '^(%d+) (.*)$')
    if number == batch then
      local replayed = {}
      for item in string.gmatch(reply, '%S+') do
        replayed[#replayed + 1] = item
      end
      return replayed
    end
  end
  local h = read_head(canvas)
  local expect = ARGV[p.at + 1]
  local guarded = expect ~= ''
  if guarded then
    local known_gen, known_seq = tonumber(ARGV[p.at + 2]), tonumber(ARGV[p.at + 3])
    if (h and h.rev or 0) ~= tonumber(expect) or (h and h.gen or 0) ~= known_gen then
      return moved(canvas, h, known_gen, known_seq)
    end
    local taken = taken_keys(p, canvas, h and h.gen or 0)
    local spared = spared_conns(p, canvas)
    if #taken > 0 or #spared > 0 then
      local reply = { 'k', #taken / 3 }
      for _, list in ipairs({ taken, spared }) do
        for _, item in ipairs(list) do
          reply[#reply + 1] = item
        end
      end
      return reply
    end
    if p.ne == 0 and p.nc == 0 and p.claims == 0 then
      local reply = head_reply(h or { gen = 0, seq = 0, rev = 0, version = 0, bytes = 0, objects = 0,
        connections = 0, users = 0 })
      table.insert(reply, 1, 'p')
      reply[#reply + 1] = reply[3] + 1
      return reply
    end
  end
  h = h or create_head(canvas)
  local first = append(p, canvas, h)
  if guarded then
    write_conns(p, canvas)
    local y = p.at + PART + 6 * p.ne + 6 * p.nc
    for k = 0, p.nk - 1 do
      local user, key, entry = ARGV[y + 3 * k], ARGV[y + 3 * k + 1], tonumber(ARGV[y + 3 * k + 2])
      if entry then
        redis.call('SET', idempotency_key(canvas, h.gen, user, key), int(first + entry), 'PX', ttl)
      end
    end
    local names = { 'bytes', 'objects', 'connections', 'users' }
    for k, name in ipairs(names) do
      h[name] = tonumber(ARGV[p.at + 3 + k])
    end
    h.rev = h.rev + 1
  end
  save_head(p, canvas, h, guarded)
  local reply = head_reply(h)
  table.insert(reply, 1, 'p')
  reply[#reply + 1] = first
  local text = {}
  for k, item in ipairs(reply) do
    text[k] = type(item) == 'number' and int(item) or item
  end
  redis.call('SET', marker, batch .. ' ' .. table.concat(text, ' '), 'PX', marker_ttl)
  return reply
end

for _, p in ipairs(parts) do
  out[#out + 1] = commit_part(p)
end
return out
