-- An instance's heartbeat: records it as alive and reports the store's epoch and write count (so the
-- instance can tell that Redis lost data: see `RedisBus::heartbeat`), and the dead instances. It also trims
-- the log of every canvas (`trim_everywhere`), as publishes do, so that an idle store's log loses what the
-- TTL expired too.
-- ARGV: instance, epoch candidate, dead_after_ms, ttl_ms
-- Returns: { epoch, writes, {dead instance, ...}, live instances (this one included) }

local epoch = store_epoch(ARGV[2])
local now = now_ms()
redis.call('HSET', 'relay:instances', ARGV[1], now)
local dead, live = {}, 0
local beats = redis.call('HGETALL', 'relay:instances')
for k = 1, #beats, 2 do
  if tonumber(beats[k + 1]) <= now - tonumber(ARGV[3]) then
    dead[#dead + 1] = beats[k]
  else
    live = live + 1
  end
end
trim_everywhere(now, tonumber(ARGV[4]))
return { epoch, tonumber(redis.call('GET', 'relay:writes') or '0'), dead, live }
