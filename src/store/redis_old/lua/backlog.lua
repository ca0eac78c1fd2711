-- A page of the canvases the webhook has yet to deliver, in id order from the index of canvases: those whose
-- head is past the webhook's position (see `delivered_to`), in another generation or at a later seq. A canvas
-- the webhook never delivered is due once it has a message. As in `canvases.lua`, an entry whose head has
-- expired leaves the index.
-- ARGV: after ('' for the start), limit (canvases looked at)
-- Returns: { last canvas looked at ('' at the end), then per canvas due: id, generation, seq }

local after, limit = ARGV[1], tonumber(ARGV[2])
local from = after == '' and '-' or '(' .. after
local ids = redis.call('ZRANGEBYLEX', 'relay:canvases', from, '+', 'LIMIT', 0, limit)
local out = { #ids == limit and ids[#ids] or '' }
for _, canvas in ipairs(ids) do
  local at = redis.call('HMGET', canvas_key(canvas, 'head'), 'seq', 'gen')
  if not at[2] then
    redis.call('ZREM', 'relay:canvases', canvas)
  else
    local seq, gen = tonumber(at[1] or '0'), tonumber(at[2])
    local dgen, dseq = delivered_to(canvas)
    if (dgen and (dgen ~= gen or dseq < seq)) or (not dgen and seq > 0) then
      out[#out + 1] = canvas
      out[#out + 1] = gen
      out[#out + 1] = seq
    end
  end
end
return out
