-- Make a new recovery code the wallet's current one, on the wallet's hash alone (coinslot.recovery).
-- KEYS: 1 wallet hash
-- ARGV: 1 generation of the reader's token, 2 the new code's HMAC, 3 now_ms
-- Returns {'ok', the HMAC of the code it replaces, or nil} | {'stale'}
-- An erased or expired wallet has no generation: no token of it may save a code.
local w = redis.call('HMGET', KEYS[1], 'gen', RECOVERY_FIELD)
if not w[1] or w[1] ~= ARGV[1] then return {'stale'} end
redis.call('HSET', KEYS[1], RECOVERY_FIELD, ARGV[2], RECOVERY_AT_FIELD, ARGV[3])
return {'ok', w[2]}
