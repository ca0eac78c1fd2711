-- Starts a new store epoch because this store lost writes an instance saw (a restart from an older
-- snapshot): every canvas's epoch changes, so clients reload instead of trusting seqs that will be reused.
-- Only if the epoch is still the one the caller knew (another instance may have rotated it already).
-- ARGV: epoch the caller knew, new epoch
-- Returns: the epoch now in force

local current = redis.call('GET', 'relay:epoch')
if current == false or current == ARGV[1] then
  redis.call('SET', 'relay:epoch', ARGV[2])
  return ARGV[2]
end
return current
