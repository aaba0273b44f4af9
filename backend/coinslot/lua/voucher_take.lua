-- Take one use of a voucher for one wallet; the voucher's own keys only.
-- KEYS: 1 voucher hash, 2 set of wallets that redeemed it. ARGV: 1 wallet id
-- Returns {'ok'|'again', site, amount, currency} | {'unknown'} | {'used-up'} | {'disabled'}; 'again'
-- when this wallet already holds a use (the caller's credit script tells whether it was credited).
local v = redis.call('HMGET', KEYS[1], 'site', 'amount', 'currency', 'uses_left', 'disabled')
if not v[1] then return {'unknown'} end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return {'again', v[1], tonumber(v[2]), v[3]} end
if v[5] == '1' then return {'disabled'} end
if tonumber(v[4]) <= 0 then return {'used-up'} end
redis.call('HINCRBY', KEYS[1], 'uses_left', -1)
redis.call('SADD', KEYS[2], ARGV[1])
return {'ok', v[1], tonumber(v[2]), v[3]}
