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
-- forget_after and forget_at (ms; absent while the canvas holds objects or connections), and its history's:
-- hfrom (the floor: every state from it to the head is kept; see `floor_of`), genat (ms the generation
-- started; absent on heads older than history: 0), thinned (ms its history was last thinned; absent: 0).
local HEAD_FIELDS = { 'gen', 'seq', 'rev', 'version', 'bytes', 'objects', 'connections', 'users', 'snap', 'snapkey',
  'updated', 'forget_after', 'forget_at', 'hfrom', 'genat', 'thinned' }

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

-- A canvas's history (PROTOCOL v1.2 "History"), all of its current generation: its kept snapshots (`snaps`:
-- a sorted set of snapshot keys scored by seq; the head's `snapkey` is the newest), each one's commit time
-- and size (`vmeta`: seq -> 'ts bytes'), the names of named ones (`vnames`: seq -> name); its object ops
-- are kept in the ops stream back to the floor. The canvases whose history may be thinned, those with a
-- floor below the newest snapshot, are in `relay:history`, scored by the head's `thinned`.

-- The floor: a head written before history has none, and its ops were trimmed up to its snapshot.
local function floor_of(h)
  return h.hfrom or h.snap
end

-- The commit time of a seq of the head's generation: its entry's while the log or the ops stream keeps
-- it, else the canvas's last commit's.
local function seq_ts(canvas, h, seq)
  local id = entry_id(h.gen, seq)
  for _, part in ipairs({ 'log', 'ops' }) do
    local entry = redis.call('XRANGE', canvas_key(canvas, part), id, id)[1]
    if entry then
      return tonumber(entry[2][2]) -- ts, the first field
    end
  end
  return h.updated or now_ms()
end

-- Keeps a snapshot blob written beside the script (its expiry dropped) in the history at `seq`.
local function keep_snapshot(canvas, seq, key, ts)
  redis.call('PERSIST', key)
  redis.call('ZADD', canvas_key(canvas, 'snaps'), seq, key)
  local bytes = redis.call('STRLEN', key)
  redis.call('HSET', canvas_key(canvas, 'vmeta'), int(seq), int(ts) .. ' ' .. int(bytes))
end

-- The key of the kept snapshot at `seq`, or nil.
local function snapshot_at(canvas, seq)
  return redis.call('ZRANGEBYSCORE', canvas_key(canvas, 'snaps'), seq, seq, 'LIMIT', 0, 1)[1]
end

-- Takes a snapshot out of the history: at once (UNLINK), or after `grace_ms` (a reader that found its key
-- just before still reads it).
local function drop_snapshot(canvas, seq, key, grace_ms)
  redis.call('ZREM', canvas_key(canvas, 'snaps'), key)
  redis.call('HDEL', canvas_key(canvas, 'vmeta'), int(seq))
  if grace_ms then
    redis.call('PEXPIRE', key, grace_ms)
  else
    redis.call('UNLINK', key)
  end
end

-- A head written before history names a snapshot that no index holds: it joins the history (with the
-- commit time of its seq if the log still has it), so that every script finds it where it finds the others.
local function adopt_newest(canvas, h)
  if h.snapkey and not redis.call('ZSCORE', canvas_key(canvas, 'snaps'), h.snapkey)
    and redis.call('EXISTS', h.snapkey) == 1 then
    keep_snapshot(canvas, h.snap, h.snapkey, seq_ts(canvas, h, h.snap))
  end
end

-- Keeps `relay:history` in step with the head: a canvas is in it while its floor is below its newest
-- snapshot, scored by when it was last thinned.
local function mark_due(canvas, h)
  if floor_of(h) < h.snap then
    redis.call('ZADD', 'relay:history', h.thinned or 0, canvas)
  else
    redis.call('ZREM', 'relay:history', canvas)
  end
end

-- Drops a canvas's whole history (a reset, a fork over it, forgetting it): every snapshot, named or not.
local function drop_history(canvas, h)
  local snaps = canvas_key(canvas, 'snaps')
  local keys = redis.call('ZRANGE', snaps, 0, -1)
  if h and h.snapkey then
    keys[#keys + 1] = h.snapkey
  end
  for k = 1, #keys, 1000 do
    redis.call('UNLINK', unpack(keys, k, math.min(k + 999, #keys)))
  end
  redis.call('UNLINK', snaps, canvas_key(canvas, 'vmeta'), canvas_key(canvas, 'vnames'))
  redis.call('ZREM', 'relay:history', canvas)
end

-- Versions of the history as replies carry them: seq, ts, bytes, name ('' for none, else '=' and the
-- name), for each key of a WITHSCORES range of `snaps`, in its order.
local function versions_of(canvas, range)
  local out = {}
  local meta, names = canvas_key(canvas, 'vmeta'), canvas_key(canvas, 'vnames')
  for k = 2, #range, 2 do
    local seq = range[k]
    local ts, bytes = string.match(redis.call('HGET', meta, seq) or '', '^(%d+) (%d+)$')
    local name = redis.call('HGET', names, seq)
    out[#out + 1] = seq
    out[#out + 1] = ts or '0'
    out[#out + 1] = bytes or '0'
    out[#out + 1] = name and ('=' .. name) or ''
  end
  return out
end
