-- Forgets the canvases whose forget time has passed (`relay:forget`; the head's `forget_at` is the truth:
-- a commit since moved or cleared it): a canvas left with neither objects nor connections, idle since. Its
-- keys go (UNLINK: freed off Redis's main thread) and it leaves every index; created again, it starts in a
-- new generation. One whose log still holds an entry kept for the webhook waits until it is not; one with
-- a named version is not forgotten (it leaves the index until its last name goes: `unname_version.lua`),
-- and one forgotten loses its whole history. At most
-- `limit` canvases are looked at per call (each one is forgotten, or leaves the index, or is scored past
-- now), so the caller calls again while a call says more may be due.
-- ARGV: keep_ms (how long any entry is kept at most: the TTL, or the webhook's retention if longer), limit
-- Returns: { how many canvases were forgotten, 1 if more may be due else 0 }

local keep = tonumber(ARGV[1])
local now = now_ms()
local forgotten = 0
local due = redis.call('ZRANGEBYSCORE', 'relay:forget', '-inf', now, 'LIMIT', 0, ARGV[2])
for _, canvas in ipairs(due) do
  local h = read_head(canvas)
  local newest = redis.call('XREVRANGE', canvas_key(canvas, 'log'), '+', '-', 'COUNT', 1)[1]
  local kept_until = newest and tonumber(newest[2][2]) + keep or 0
  if not h or not h.forget_at then
    redis.call('ZREM', 'relay:forget', canvas)
  elseif h.forget_at > now or kept_until > now then
    redis.call('ZADD', 'relay:forget', math.max(h.forget_at, kept_until), canvas)
  elseif redis.call('EXISTS', canvas_key(canvas, 'vnames')) == 1 then
    redis.call('ZREM', 'relay:forget', canvas)
  else
    local keys = { 'head', 'log', 'ops', 'conns', 'pstates', 'webhook', 'cursors' }
    for k, part in ipairs(keys) do
      keys[k] = canvas_key(canvas, part)
    end
    drop_history(canvas, h)
    redis.call('UNLINK', unpack(keys))
    for _, index in ipairs({ 'relay:canvases', 'relay:forget', 'relay:trim', 'relay:unsnapped' }) do
      redis.call('ZREM', index, canvas)
    end
    forgotten = forgotten + 1
  end
end
return { forgotten, #due == tonumber(ARGV[2]) and 1 or 0 }
