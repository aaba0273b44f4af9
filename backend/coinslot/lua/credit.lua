-- Credit a wallet once per external reference (checkout session, voucher code), atomically.
-- KEYS: 1 wallet hash, 2 credited-refs set, 3 ledger list, 4 top-up hash (or any key of the
--       wallet's slot when the credit is not a top-up)
-- ARGV: 1 now_ms, 2 ref, 3 amount, 4 currency, 5 kind ('topup'|'voucher'),
--       6 counter account, 7 site ('' if none), 8 '1' when KEYS[4] is a top-up to check and settle,
--       9 the provider's payment id for refunds and disputes ('' or absent if none)
-- Returns {'ok', balance} | {'duplicate', balance} | {'no-wallet'} | {'currency', wallet_currency}
--       | {'mismatch', stored_amount, stored_currency} | {'no-topup'}
-- wallet_account and wallet_id_of are coinslot.keyspace's, defined in front of this script (coinslot.scripts).
local now, ref, amount, currency = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local w = redis.call('HMGET', KEYS[1], 'currency', 'balance', 'frozen', 'gen')
-- An erased wallet keeps its ledger but no generation: no token, and no new money, reaches it.
if not w[1] or not w[4] then return {'no-wallet'} end
if redis.call('SISMEMBER', KEYS[2], ref) == 1 then return {'duplicate', tonumber(w[2])} end
-- A paid top-up is checked against what was stored first: another amount or currency there
-- is the operator's alarm, not the reader's mistake.
if ARGV[8] == '1' then
  local t = redis.call('HMGET', KEYS[4], 'amount', 'currency')
  if not t[1] then return {'no-topup'} end
  if tonumber(t[1]) ~= amount or t[2] ~= currency then return {'mismatch', tonumber(t[1]), t[2]} end
end
if w[1] ~= currency then return {'currency', w[1]} end
if ARGV[8] == '1' then
  redis.call('HSET', KEYS[4], 'status', 'paid', 'paid_at', now)
  if ARGV[9] and ARGV[9] ~= '' then redis.call('HSET', KEYS[4], 'payment', ARGV[9]) end
end
local balance = tonumber(w[2]) + amount
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
-- Its first entry: the wallet holds something now, so it no longer expires as an empty one.
if seq == 1 then redis.call('PERSIST', KEYS[1]) end
redis.call('SADD', KEYS[2], ref)
redis.call('HSET', KEYS[1], 'balance', balance)
-- A refund or dispute may have frozen the wallet; money that brings it back to zero thaws it.
if w[3] == '1' and balance >= 0 then redis.call('HDEL', KEYS[1], 'frozen') end
local entry = {seq = seq, at = tonumber(now), kind = ARGV[5], ref = ref, currency = currency, balance = balance,
  postings = {{account = wallet_account(wallet_id_of(KEYS[1])), amount = amount},
              {account = ARGV[6], amount = -amount}}}
if ARGV[7] ~= '' then entry.site = ARGV[7] end
redis.call('RPUSH', KEYS[3], cjson.encode(entry))
return {'ok', balance}
