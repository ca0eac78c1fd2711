-- What the webhook reads of a canvas: its head and, in the head's generation, the entries its stream still
-- holds after a seq, without the TTL filter of client reads (entries kept for the webhook count; see
-- `settle_log`). The reset marker (seq 0) is not a message and is never returned.
-- ARGV: canvas, generation, after (a seq), limit
-- Returns: { generation, seq, entries }

local canvas, after, limit = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4])
local seq, gen = head(canvas)
local entries = {}
if gen == tonumber(ARGV[2]) and after < seq and limit > 0 then
  local range = redis.call('XRANGE', canvas_key(canvas, 'log'), entry_id(gen, after + 1), entry_id(gen, seq),
    'COUNT', limit)
  for _, entry in ipairs(range) do
    if not string.match(entry[1], '%-0$') then
      entries[#entries + 1] = entry
    end
  end
end
return { gen, seq, entries }
