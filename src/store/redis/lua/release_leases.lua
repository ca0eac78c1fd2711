-- Gives up leases (see `hold_leases.lua`): those of the names the holder holds are dropped, others left.
-- ARGV: holder, then the names. Returns: how many were dropped.

local dropped = 0
for k = 2, #ARGV do
  local key = 'relay:lease:' .. ARGV[k]
  if redis.call('GET', key) == ARGV[1] then
    dropped = dropped + redis.call('DEL', key)
  end
end
return dropped
