-- Record what a provider said about a top-up that brought no money: 'awaiting' (completed, a
-- delayed payment such as SEPA under way; the top-up stays pending), 'failed' or 'expired'.
-- Events arrive in any order, so a paid top-up stays paid and a closed one stays closed.
-- KEYS: 1 top-up hash
-- ARGV: 1 state ('awaiting'|'failed'|'expired'), 2 now_ms
-- Returns the top-up's status afterwards ('pending'|'paid'|'failed'|'expired'), or 'no-topup'.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'no-topup' end
if status ~= 'pending' then return status end
if ARGV[1] == 'awaiting' then
  redis.call('HSETNX', KEYS[1], 'awaiting', ARGV[2])
  return status
end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'closed_at', ARGV[2])
return ARGV[1]
