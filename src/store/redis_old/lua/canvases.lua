-- A page of canvases in id order for `GET /api/v1/canvases`, from the `relay:canvases` index (every canvas
-- head ever made; `ensure_head` adds to it). An entry whose head has expired (an idle canvas forgotten) is
-- dropped from the index here. At most 10 × limit entries are looked at per call, so that Redis is never
-- held for long: a page may then hold fewer than `limit` canvases and still have a next.
-- ARGV: after ('' for the start), limit, active ('1': only canvases with a connection), epoch candidate
-- Returns: { store epoch, next ('' at the end), then per canvas: id, seq, generation, connections, users,
--   objects }

local after, limit, active = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1'
local out = { store_epoch(ARGV[4]), '' }
local from = after == '' and '-' or '(' .. after
local budget, listed, last, exhausted = 10 * limit, 0, nil, false
while listed < limit and budget > 0 and not exhausted do
  local want = math.min(limit - listed, budget)
  local ids = redis.call('ZRANGEBYLEX', 'relay:canvases', from, '+', 'LIMIT', 0, want)
  exhausted = #ids < want
  for _, canvas in ipairs(ids) do
    budget = budget - 1
    last = canvas
    local head = redis.call('HMGET', canvas_key(canvas, 'head'), 'seq', 'gen')
    if not head[2] then
      redis.call('ZREM', 'relay:canvases', canvas)
    else
      local connections = redis.call('HLEN', canvas_key(canvas, 'conns'))
      if not active or connections > 0 then
        local users = redis.call('HLEN', canvas_key(canvas, 'users'))
        local objects = redis.call('HLEN', canvas_key(canvas, 'objects'))
        for _, value in ipairs({ canvas, head[1], head[2], connections, users, objects }) do
          out[#out + 1] = value
        end
        listed = listed + 1
      end
    end
  end
  if last then
    from = '(' .. last
  end
end
if last and not exhausted then
  out[2] = last
end
return out
