-- Connected users across instances (all, or only ARGV[1] when not ''), with their connections and canvases.
-- Returns: { user, connections, {canvas, ...}, ... }

local out = {}
local function add(user, connections)
  out[#out + 1] = user
  out[#out + 1] = tonumber(connections)
  out[#out + 1] = redis.call('HKEYS', 'relay:u:' .. user)
end
if ARGV[1] ~= '' then
  local connections = redis.call('HGET', 'relay:users', ARGV[1])
  if connections then
    add(ARGV[1], connections)
  end
else
  local all = redis.call('HGETALL', 'relay:users')
  for k = 1, #all, 2 do
    add(all[k], all[k + 1])
  end
end
return out
