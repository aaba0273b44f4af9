-- Give a wallet a place among those a site lets start a tab from one address today.
-- KEYS: 1 set of wallets holding a place. ARGV: 1 wallet id, 2 places per address, 3 ttl (s)
-- Returns 1 if the wallet holds a place (already or now), 0 if the places are taken.
-- A refused wallet takes no place, and one that has a place keeps it, so the two copies of
-- a double click get the same answer whatever happens in between.
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
