-- A canvas at one point of its log, read atomically: what a join's welcome carries and what the canvas API
-- reports. With a resume whose epoch matches, whether every entry after `since` is still retained (the
-- entries themselves are read after, a page at a time). The objects only when asked for and small: a big
-- state is read with one HGETALL in a MULTI beside this script (see `RedisBus::snapshot`), never folded
-- through a Lua table.
--
-- ARGV: canvas, epoch candidate, resume epoch ('' for none), since, max_resume, ttl_ms, cached state
--   ('<canvas epoch>:<version>' the caller holds, so do not read it, or ''), inline limit (bytes; objects are
--   read only if their JSON is at most this big)
-- Returns: { epoch, generation, seq, state version, state bytes, resumed (1/0), {user, count, ...},
--   {user, name, ...}, {object id, object JSON, ...} or {}, objects read (1/0), {connection, user '\n'
--   encoded name, ...}, {connection, presence state JSON, ...} }

local canvas = ARGV[1]
local epoch = store_epoch(ARGV[2])
local head = redis.call('HMGET', canvas_key(canvas, 'head'), 'seq', 'gen', 'oseq', 'bytes')
local seq, gen = tonumber(head[1] or '0'), tonumber(head[2] or '0')
local version, bytes = tonumber(head[3] or '0'), tonumber(head[4] or '0')
local resumed = 0
if ARGV[3] ~= '' and ARGV[3] == epoch .. '-' .. gen then
  local since = tonumber(ARGV[4])
  if since <= seq and seq - since <= tonumber(ARGV[5]) then
    resumed = 1
    if since < seq then
      -- Entries leave a stream from its front only (trimmed, or the whole stream expiring), and in seq
      -- order, so the one after `since` being there and fresh means all after it are.
      local first = redis.call('XRANGE', canvas_key(canvas, 'log'), entry_id(gen, since + 1), entry_id(gen, since + 1))[1]
      if not first or tonumber(first[2][2]) <= now_ms() - tonumber(ARGV[6]) then
        resumed = 0
      end
    end
  end
end
local objects, read = {}, 0
local held = epoch .. '-' .. gen .. ':' .. version
if resumed == 0 and ARGV[7] ~= held and bytes + 1 <= tonumber(ARGV[8]) then
  objects, read = redis.call('HGETALL', canvas_key(canvas, 'objects')), 1
end
return { epoch, gen, seq, version, bytes, resumed, redis.call('HGETALL', canvas_key(canvas, 'users')),
  redis.call('HGETALL', canvas_key(canvas, 'names')), objects, read, redis.call('HGETALL', canvas_key(canvas, 'peers')),
  redis.call('HGETALL', canvas_key(canvas, 'pstates')) }
