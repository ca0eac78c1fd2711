-- An instance's heartbeat: records it as alive (`relay:instances`, Redis's clock) and reports the store's
-- epoch and write count (so the instance can tell that Redis lost data: see `upkeep.rs`) and the live
-- instances. An instance silent for the presence timeout whose connections are all gone (survivors expired
-- them) is forgotten with its keys.
-- ARGV: instance, epoch candidate, presence timeout (ms)
-- Returns: { epoch, writes, { instance, heartbeat, ... } of the live instances (this one included) }

local epoch = store_epoch(ARGV[2])
local now = now_ms()
redis.call('HSET', 'relay:instances', ARGV[1], now)
local live = {}
local beats = redis.call('HGETALL', 'relay:instances')
for k = 1, #beats, 2 do
  local id, beat = beats[k], tonumber(beats[k + 1])
  if beat > now - tonumber(ARGV[3]) then
    live[#live + 1] = id
    live[#live + 1] = beat
  elseif redis.call('HLEN', 'relay:i:' .. id .. ':conns') == 0 then
    redis.call('HDEL', 'relay:instances', id)
    redis.call('DEL', 'relay:i:' .. id .. ':conns', 'relay:i:' .. id .. ':wake')
  end
end
return { epoch, tonumber(redis.call('GET', 'relay:writes') or '0'), live }
