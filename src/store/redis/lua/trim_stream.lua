-- Drops the entries of the log of every canvas (`relay:stream`) older than the TTL, at most `limit` per
-- call (the caller calls again while a call comes back full), recording the newest id dropped
-- (`relay:stream:trimmed`): a reader whose position is before it missed entries. (XINFO's
-- `max-deleted-entry-id` would not say so: Redis 7.0 moves it on XDEL only, not on a trim.)
-- ARGV: ttl_ms, limit
-- Returns: { how many entries were dropped, 1 if more may be due else 0 }

local cutoff = now_ms() - tonumber(ARGV[1])
if cutoff <= 0 then
  return { 0, 0 }
end
local old = redis.call('XRANGE', 'relay:stream', '-', '(' .. cutoff .. '-0', 'COUNT', ARGV[2])
if #old == 0 then
  return { 0, 0 }
end
local last = old[#old][1]
local ms, seq = string.match(last, '^(%d+)-(%d+)$')
redis.call('XTRIM', 'relay:stream', 'MINID', ms .. '-' .. int(tonumber(seq) + 1))
redis.call('SET', 'relay:stream:trimmed', last)
return { #old, #old == tonumber(ARGV[2]) and 1 or 0 }
