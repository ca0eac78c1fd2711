-- Keeps the presence states (v1.1) a round of cursor batches carries, for joiners' welcome.peers: each
-- connection's latest state, only while the connection is registered (a state that arrives after its
-- disconnect is dropped, so a gone connection never comes back as a peer). Every canvas of the round in one
-- call: one round trip per --cursor-batch, however many canvases.
--
-- ARGV: (canvas, connection, state JSON) triples.
-- Returns: how many states were kept.

local kept = 0
for k = 1, #ARGV - 2, 3 do
  local canvas, conn = ARGV[k], ARGV[k + 1]
  if redis.call('HEXISTS', canvas_key(canvas, 'peers'), conn) == 1 then
    redis.call('HSET', canvas_key(canvas, 'pstates'), conn, ARGV[k + 2])
    kept = kept + 1
  end
end
return kept
