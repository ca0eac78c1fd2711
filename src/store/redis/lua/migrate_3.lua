-- Brings one canvas of layout 3 to layout 4, after the caller wrote its objects as a snapshot blob (read
-- from the `objects` hash a chunk at a time, serialized by the fold's own code) and deleted the per-object
-- field hashes. The head gets what the fold keeps (rev, version, the counts, the snapshot at its seq); the
-- connections (layout 3: `conns` conn -> instance, `peers` conn -> user and encoded name, `names` user ->
-- name) become rows with their place in the order they were opened: a user's connection whose name is the
-- user's name comes last among the user's, so the user keeps that name; the indexes of connections by
-- instance and by user are written again (the caller emptied them first). An idle canvas's expiry becomes
-- its forget time, and the log no longer expires whole (cleanup trims it). Idempotency keys, the log, the
-- presence states and the webhook's position keep their layout-3 form. Safe to run twice: a canvas already
-- converted only has its connections indexed again.
-- ARGV: canvas, snapshot key ('' for none: no objects), bytes, objects, forget_after (ms)
-- Returns: how many connections the canvas has

local canvas = ARGV[1]
local key = canvas_key(canvas, 'head')

-- Writes the canvas's connection rows into the indexes.
local function index_all()
  local rows = redis.call('HGETALL', canvas_key(canvas, 'conns'))
  for k = 1, #rows, 2 do
    local instance, user = string.match(rows[k + 1], '^([^\n]*)\n([^\n]*)\n')
    if instance then
      index_conn(canvas, rows[k], instance, user, rows[k + 1], 0) -- an instance gone already: stopped
    end
  end
  return #rows / 2
end

local h = read_head(canvas)
if not h then
  return 0
end
redis.call('ZADD', 'relay:canvases', 0, canvas)
if redis.call('HEXISTS', key, 'rev') == 1 then
  return index_all()
end

local owners = redis.call('HGETALL', canvas_key(canvas, 'conns'))
local peers, names = {}, {}
local flat = redis.call('HGETALL', canvas_key(canvas, 'peers'))
for k = 1, #flat, 2 do
  peers[flat[k]] = flat[k + 1]
end
flat = redis.call('HGETALL', canvas_key(canvas, 'names'))
for k = 1, #flat, 2 do
  names[flat[k]] = flat[k + 1]
end
local list, users = {}, {}
for k = 1, #owners, 2 do
  local peer = peers[owners[k]]
  local user, name
  if peer then
    user, name = string.match(peer, '^([^\n]*)\n(.*)$')
  end
  if user then
    local naming = name ~= '' and names[user] == string.sub(name, 2) and 1 or 0
    list[#list + 1] = { conn = owners[k], instance = owners[k + 1], user = user, name = name, naming = naming }
    users[user] = true
  end
end
table.sort(list, function(a, b)
  if a.naming ~= b.naming then
    return a.naming < b.naming
  end
  return a.conn < b.conn
end)
local conns = canvas_key(canvas, 'conns')
redis.call('DEL', conns)
for k, c in ipairs(list) do
  redis.call('HSET', conns, c.conn, conn_row(c.instance, c.user, int(k), c.name))
end
local user_count = 0
for _ in pairs(users) do
  user_count = user_count + 1
end

local oseq = tonumber(redis.call('HGET', key, 'oseq') or '0')
local snapkey, now = ARGV[2], now_ms()
redis.call('HSET', key, 'rev', 1, 'version', int(oseq), 'bytes', ARGV[3], 'objects', ARGV[4],
  'connections', #list, 'users', user_count, 'snap', snapkey ~= '' and int(h.seq) or 0,
  'updated', int(now))
redis.call('HDEL', key, 'oseq')
if snapkey ~= '' then
  redis.call('HSET', key, 'snapkey', snapkey)
end
local left = redis.call('PTTL', key)
if left > 0 then
  redis.call('HSET', key, 'forget_after', ARGV[5], 'forget_at', int(now + left))
  redis.call('ZADD', 'relay:forget', now + left, canvas)
  redis.call('PERSIST', key)
end
redis.call('PERSIST', canvas_key(canvas, 'webhook'))
redis.call('PERSIST', canvas_key(canvas, 'log'))
if redis.call('EXISTS', canvas_key(canvas, 'log')) == 1 then
  redis.call('ZADD', 'relay:trim', now, canvas)
end
-- UNLINK: a big objects hash is freed off Redis's main thread.
redis.call('UNLINK', canvas_key(canvas, 'names'), canvas_key(canvas, 'users'), canvas_key(canvas, 'peers'),
  canvas_key(canvas, 'objects'))
return index_all()
