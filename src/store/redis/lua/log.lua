-- The log of every canvas (`relay:stream`, see `log_everywhere`) for the event stream: its head, the newest
-- id trimmed from it (see `trim_stream.lua`), and a page of entries after a position, read at one point. A
-- reader whose position is before the newest id trimmed missed entries (the caller compares: ids do not fit
-- Lua's numbers).
-- ARGV: after (a stream id; '' for the head alone), limit
-- Returns: { head (the last id given, '0-0' for none), newest id trimmed ('0-0' for none), entries }

local trimmed = redis.call('GET', 'relay:stream:trimmed') or '0-0'
local last = redis.call('XREVRANGE', 'relay:stream', '+', '-', 'COUNT', 1)[1]
local entries = {}
if last and ARGV[1] ~= '' and tonumber(ARGV[2]) > 0 then
  entries = redis.call('XRANGE', 'relay:stream', '(' .. ARGV[1], '+', 'COUNT', ARGV[2])
end
return { last and last[1] or trimmed, trimmed, entries }
