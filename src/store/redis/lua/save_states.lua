-- Keeps the presence states (v1.1) a round of cursor batches carries, for joiners' welcome.peers: each
-- connection's latest state, only while the connection is registered (a state that arrives after its
-- disconnect is dropped, so a gone connection never comes back as a peer). Every canvas of the round in one
-- call: one round trip per --cursor-batch, however many canvases.
-- ARGV: (canvas, connection, '1' and the state JSON, or '0' and '' for a connection that is gone) quads
-- Returns: how many states were kept

local kept = 0
for k = 1, #ARGV - 3, 4 do
  local canvas, conn = ARGV[k], ARGV[k + 1]
  local states = canvas_key(canvas, 'pstates')
  if ARGV[k + 2] == '0' then
    redis.call('HDEL', states, conn)
  elseif redis.call('HEXISTS', canvas_key(canvas, 'conns'), conn) == 1 then
    redis.call('HSET', states, conn, ARGV[k + 3])
    kept = kept + 1
  end
end
return kept
