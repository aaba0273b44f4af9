-- Set the reader's one-click budget, if the token's generation is current (an erased or recovered
-- wallet's old token must not write into it).
-- KEYS: 1 wallet hash. ARGV: 1 generation, 2 budget (minor units)
-- Returns 1, or 0 when the wallet is gone or the token stale.
if redis.call('HGET', KEYS[1], 'gen') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], BUDGET_FIELD, ARGV[2])
return 1
