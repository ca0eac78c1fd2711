-- Forgets a dead instance once every one of its connections has been disconnected.
-- ARGV: instance. Returns: its connections left (canvas, user and name of each, keyed by connection id).

local conns = redis.call('HGETALL', 'relay:i:' .. ARGV[1] .. ':conns')
if #conns == 0 then
  redis.call('HDEL', 'relay:instances', ARGV[1])
  redis.call('DEL', 'relay:i:' .. ARGV[1] .. ':wake', 'relay:i:' .. ARGV[1] .. ':batch')
end
return conns
