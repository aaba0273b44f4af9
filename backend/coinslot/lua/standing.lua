-- What the card shows a reader about one item: a read, as a script only so that it travels the
-- hot path's pipelined connection (coinslot.pipe) in one round trip instead of redis-py's pipeline.
-- KEYS: 1 wallet hash, 2 owned hash. ARGV: 1 owned_field(site, item)
-- Returns {currency, balance, generation, owned value or false}
local w = redis.call('HMGET', KEYS[1], 'currency', 'balance', 'gen')
return {w[1], w[2], w[3], redis.call('HGET', KEYS[2], ARGV[1])}
