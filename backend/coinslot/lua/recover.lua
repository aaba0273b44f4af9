-- Hand a wallet to whoever holds its current recovery code (coinslot.recovery): bump its generation,
-- so that every token issued before stops working in the very scripts that move its money.
-- KEYS: 1 wallet hash
-- ARGV: 1 the HMAC of the code given
-- Returns {'ok', new generation, currency, balance} | {'no-match'}
-- 'no-match': the wallet is gone, erased (no generation), or names another code (this one was replaced).
local w = redis.call('HMGET', KEYS[1], 'gen', RECOVERY_FIELD, 'currency', 'balance')
if not w[1] or w[2] ~= ARGV[1] then return {'no-match'} end
local gen = redis.call('HINCRBY', KEYS[1], 'gen', 1)
return {'ok', gen, w[3], tonumber(w[4])}
