-- Keeps the presence states (v1.1) a cursor batch carries, for joiners' welcome.peers: each connection's
-- latest state, only while the connection is registered (a state that arrives after its disconnect is
-- dropped, so a gone connection never comes back as a peer).
--
-- ARGV: canvas, then (connection, state JSON) pairs.
-- Returns: how many states were kept.

local canvas = ARGV[1]
local peers, states = canvas_key(canvas, 'peers'), canvas_key(canvas, 'pstates')
local kept = 0
for k = 2, #ARGV - 1, 2 do
  if redis.call('HEXISTS', peers, ARGV[k]) == 1 then
    redis.call('HSET', states, ARGV[k], ARGV[k + 1])
    kept = kept + 1
  end
end
return kept
