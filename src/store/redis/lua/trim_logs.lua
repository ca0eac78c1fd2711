-- Trims the logs that are due (`relay:trim`, scored by when a canvas's oldest entry passes the TTL): entries
-- leave a log from its front, in seq order, once past the TTL; with a webhook (`retention` > 0, in ms), an
-- entry after the webhook's delivered position (`webhook`: g, s) stays until it is also `retention` old.
-- A log left empty is deleted; one with entries is scored again by its new oldest entry (`save_position.lua`
-- scores a canvas again when the webhook delivers). At most `limit` entries (128 at a time) and 64 canvases
-- are looked at per call, so that Redis is never held for long: the caller calls again while a call says
-- more may be due (each canvas it is done with is scored past now, so the calls end).
-- ARGV: ttl_ms, retention_ms (0: no webhook), limit
-- Returns: { how many entries were dropped, 1 if more may be due else 0 }

local ttl, retention, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local CANVASES = 64 -- canvases looked at per call at most
local now = now_ms()
local budget, dropped = limit, 0

-- How far the webhook has delivered a canvas: generation and seq, or nil when it never has.
local function delivered_to(canvas)
  local at = redis.call('HMGET', canvas_key(canvas, 'webhook'), 'g', 's')
  if not at[1] then
    return nil
  end
  return tonumber(at[1]), tonumber(at[2] or '0')
end

-- Trims one canvas's log; returns false when the budget ran out before it was done.
local function trim(canvas)
  local log = canvas_key(canvas, 'log')
  local dgen, dseq
  if retention > 0 then
    dgen, dseq = delivered_to(canvas)
  end
  local function droppable(entry)
    local ts = tonumber(entry[2][2])
    if ts > now - ttl then
      return false
    elseif retention == 0 or ts <= now - retention then
      return true
    elseif not dgen then
      return false
    end
    local time_part, s = string.match(entry[1], '^(%d+)-(%d+)$')
    local g = tonumber(time_part) - 1 -- see entry_id
    return g < dgen or (g == dgen and tonumber(s) <= dseq)
  end
  while budget > 0 do
    local entries = redis.call('XRANGE', log, '-', '+', 'COUNT', math.min(128, budget))
    budget = budget - #entries
    local kept
    for _, entry in ipairs(entries) do
      if not droppable(entry) then
        kept = entry
        break
      end
      dropped = dropped + 1
    end
    if kept then
      redis.call('XTRIM', log, 'MINID', kept[1])
      local ts = tonumber(kept[2][2])
      redis.call('ZADD', 'relay:trim', ts + ttl > now and ts + ttl or ts + retention, canvas)
      return true
    end
    if #entries == 0 then
      redis.call('DEL', log)
      redis.call('ZREM', 'relay:trim', canvas)
      return true
    end
    local last = entries[#entries][1]
    local ms, seq = string.match(last, '^(%d+)-(%d+)$')
    redis.call('XTRIM', log, 'MINID', ms .. '-' .. int(tonumber(seq) + 1))
  end
  return false
end

local due = redis.call('ZRANGEBYSCORE', 'relay:trim', '-inf', now, 'LIMIT', 0, CANVASES)
for _, canvas in ipairs(due) do
  if not trim(canvas) then
    return { dropped, 1 }
  end
end
return { dropped, #due == CANVASES and 1 or 0 }
