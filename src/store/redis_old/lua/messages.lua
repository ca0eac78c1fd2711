-- A page of a canvas's retained log for the API: entries after `since`, at most `limit`, with the head.
-- ARGV: canvas, epoch candidate, since, limit, ttl_ms
-- Returns: { epoch, generation, seq, entries }

local canvas = ARGV[1]
local epoch = store_epoch(ARGV[2])
local seq, gen = head(canvas)
local since, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local upto = math.min(seq, since + limit)
local entries = {}
if since < upto then
  local cutoff = now_ms() - tonumber(ARGV[5])
  for _, entry in ipairs(redis.call('XRANGE', canvas_key(canvas, 'log'), entry_id(gen, since + 1), entry_id(gen, upto))) do
    if tonumber(entry[2][2]) > cutoff then
      entries[#entries + 1] = entry
    end
  end
end
return { epoch, gen, seq, entries }
