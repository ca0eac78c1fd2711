-- A canvas at one point of its log, read atomically: what a join's welcome carries and what the canvas API
-- reports. With a resume whose epoch matches, the retained entries after `since` (only if every one of them
-- is still there and there are at most max_resume).
--
-- ARGV: canvas, epoch candidate, resume epoch ('' for none), since, max_resume, ttl_ms, want objects (1/0)
-- Returns: { epoch, generation, seq, resumed (1/0), replay entries, {user, count, ...}, {user, name, ...},
--   {object id, {field, value, ...}, ...} }

local canvas = ARGV[1]
local epoch = store_epoch(ARGV[2])
local seq, gen = head(canvas)
local resumed, replay = 0, {}
if ARGV[3] ~= '' and ARGV[3] == epoch .. '-' .. gen then
  local since = tonumber(ARGV[4])
  if since <= seq and seq - since <= tonumber(ARGV[5]) then
    local cutoff = now_ms() - tonumber(ARGV[6])
    if since < seq then
      replay = redis.call('XRANGE', canvas_key(canvas, 'log'), entry_id(gen, since + 1), entry_id(gen, seq))
    end
    resumed = 1
    if #replay ~= seq - since then
      resumed = 0
    end
    for _, entry in ipairs(replay) do
      if tonumber(entry[2][2]) <= cutoff then
        resumed = 0
      end
    end
    if resumed == 0 then
      replay = {}
    end
  end
end
local objects = {}
if resumed == 0 and ARGV[7] == '1' then
  for _, id in ipairs(redis.call('SMEMBERS', canvas_key(canvas, 'ids'))) do
    objects[#objects + 1] = id
    objects[#objects + 1] = redis.call('HGETALL', canvas_key(canvas, 'o:' .. id))
  end
end
return { epoch, gen, seq, resumed, replay, redis.call('HGETALL', canvas_key(canvas, 'users')),
  redis.call('HGETALL', canvas_key(canvas, 'names')), objects }
