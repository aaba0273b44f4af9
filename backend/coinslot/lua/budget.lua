-- Set the reader's one-click budget and the wallet's daily spending limit, if the token's generation
-- is current (an erased or recovered wallet's old token must not write into it).
-- KEYS: 1 wallet hash. ARGV: 1 generation, 2 budget (minor units; '' = unchanged),
--       3 daily limit (minor units; '' = unchanged, '0' = none)
-- Returns {budget or '', the daily limit's field or ''}, or 0 when the wallet is gone or the token stale.
local w = redis.call('HMGET', KEYS[1], 'gen', BUDGET_FIELD, DAILY_LIMIT_FIELD)
if w[1] ~= ARGV[1] then return 0 end
local budget, limit = w[2] or '', w[3] or ''
if ARGV[2] ~= '' then
  budget = ARGV[2]
  redis.call('HSET', KEYS[1], BUDGET_FIELD, budget)
end
if ARGV[3] == '0' then
  limit = ''
  redis.call('HDEL', KEYS[1], DAILY_LIMIT_FIELD)
elseif ARGV[3] ~= '' then
  -- A changed limit keeps what was spent today: it counts against the new limit too.
  limit = ARGV[3] .. (string.match(limit, '^%d+(|.*)$') or '||')
  redis.call('HSET', KEYS[1], DAILY_LIMIT_FIELD, limit)
end
return {budget, limit}
