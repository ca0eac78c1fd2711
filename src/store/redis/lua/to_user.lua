-- A user message for every instance: appended to the shared user-message stream, whose entries older than
-- the TTL are trimmed as it grows (on Redis's clock, which the readers also judge it by).
-- ARGV: user ('*' for everyone), frame, instance, ttl_ms

local cutoff = now_ms() - tonumber(ARGV[4])
redis.call('XADD', 'relay:user-messages', 'MINID', '~', cutoff, '*', 'u', ARGV[1], 'd', ARGV[2], 'i', ARGV[3])
return 1
