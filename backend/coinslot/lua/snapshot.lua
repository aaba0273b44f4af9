-- A consistent read of one wallet for reconcile: its hash and its whole ledger.
-- KEYS: 1 wallet hash, 2 ledger list
return {redis.call('HGETALL', KEYS[1]), redis.call('LRANGE', KEYS[2], 0, -1)}
