-- A user message for every instance: appended to the shared user-message stream (entries older than the TTL
-- trimmed), with the user's connection count across instances.
-- ARGV: user, frame, instance, ttl_ms
-- Returns: connections of the user

local cutoff = now_ms() - tonumber(ARGV[4])
redis.call('XADD', 'relay:user-messages', 'MINID', '~', cutoff, '*', 'u', ARGV[1], 'd', ARGV[2], 'i', ARGV[3])
return tonumber(redis.call('HGET', 'relay:users', ARGV[1]) or '0')
