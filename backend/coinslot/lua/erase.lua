-- Erase a wallet at its reader's request, on the wallet's own keys.
-- KEYS: 1 wallet hash, 2 owned hash, 3 purchases hash, 4 top-ups index
-- ARGV: 1 generation of the reader's token, 2 now_ms
-- Returns {'ok', balance left, currency, ledger entries kept, HMAC of its recovery code or nil}
--       | {'no-wallet'} | {'stale'}
-- What the reader bought (receipts, owned items) and the generation (so no token works again)
-- go. The ledger stays, because the sites' and the payment provider's accounts are derived from
-- it; with it, only what replaying it needs: currency, balance, sequence and frozen. The recovery
-- code's index lives in another slot: the caller deletes it, by the HMAC returned here.
local w = redis.call('HMGET', KEYS[1], 'currency', 'balance', 'gen', 'seq', 'frozen', RECOVERY_FIELD)
if not w[1] or not w[3] then return {'no-wallet'} end
if w[3] ~= ARGV[1] then return {'stale'} end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
local seq = tonumber(w[4]) or 0
if seq > 0 then
  redis.call('HSET', KEYS[1], 'currency', w[1], 'balance', w[2], 'seq', w[4], 'erased_ms', ARGV[2])
  if w[5] == '1' then redis.call('HSET', KEYS[1], 'frozen', '1') end
end
return {'ok', tonumber(w[2]), w[1], seq, w[6]}
