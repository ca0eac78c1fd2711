-- Takes or renews leases (`relay:lease:<name>`, holding the holder's id and expiring on Redis's clock): a
-- lease free or expired is taken, one the holder already has is renewed, one another holds is left alone.
-- ARGV: holder, ttl_ms, then the names
-- Returns: per name 1 if the holder holds it now, else 0

local holder, ttl = ARGV[1], ARGV[2]
local held = {}
for k = 3, #ARGV do
  local key = 'relay:lease:' .. ARGV[k]
  if redis.call('SET', key, holder, 'NX', 'PX', ttl) then
    held[#held + 1] = 1
  elseif redis.call('GET', key) == holder then
    redis.call('PEXPIRE', key, ttl)
    held[#held + 1] = 1
  else
    held[#held + 1] = 0
  end
end
return held
