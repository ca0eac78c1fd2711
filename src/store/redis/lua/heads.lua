-- A page of canvases in id order with their heads, from the index of canvases (`relay:canvases`: every head
-- ever made, until the canvas is forgotten). An entry whose head is gone (a key deleted by hand, say) is
-- dropped from the index here and the page goes on past it; at most 1,000 such entries per call, so that
-- Redis is never held for long.
-- ARGV: after ('' for the start), limit
-- Returns: { canvas, head (9 numbers: see read_canvas.lua), canvas, head, ... }

local after, limit = ARGV[1], tonumber(ARGV[2])
local out, listed, budget = {}, 0, limit + 1000
local from = after == '' and '-' or '(' .. after
while listed < limit and budget > 0 do
  local want = limit - listed
  local ids = redis.call('ZRANGEBYLEX', 'relay:canvases', from, '+', 'LIMIT', 0, want)
  for _, canvas in ipairs(ids) do
    budget = budget - 1
    local h = read_head(canvas)
    if h then
      out[#out + 1] = canvas
      out[#out + 1] = head_reply(h)
      listed = listed + 1
    else
      redis.call('ZREM', 'relay:canvases', canvas)
    end
    from = '(' .. canvas
  end
  if #ids < want then
    break
  end
end
return out
