-- Take back money Stripe took back: a refund or a dispute of a credited top-up, posted as a
-- compensating ledger entry on the wallet's own keys, each at most once, in any event order.
-- KEYS: 1 wallet hash, 2 credited-refs set, 3 ledger list, 4 chargebacks hash (what was posted)
-- ARGV: 1 now_ms, 2 op ('refund'|'dispute'), 3 credit ref of the top-up ('cs:<session>'),
--       4 currency reported, 5 top-up amount, 6 top-up currency, 7 top-up id,
--       8 refund id or dispute id, 9 the refund's or dispute's amount,
--       10 status (refund: 'pending'|'requires_action'|'succeeded'|'failed'|'canceled';
--       dispute: 'open'|'won'|'lost')
-- Returns {'ok', balance, frozen} | {'duplicate', balance} | {'void', balance} | {'not-credited'}
--       | {'no-wallet'} | {'mismatch', reported_amount, reported_currency, refunded_before}
-- Accounts and the fields of KEYS[4] are named by coinslot.keyspace, defined in front of this script
-- (coinslot.scripts); each field is also the ledger ref of the entry that posted it.
local now, op, topup_ref, status = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[10]
local currency, topup_amount, id, amount = ARGV[6], tonumber(ARGV[5]), ARGV[8], tonumber(ARGV[9])
local w = redis.call('HMGET', KEYS[1], 'currency', 'balance', 'frozen')
if not w[1] then return {'no-wallet'} end
-- Money can only be taken back after it was credited; until then the provider retries.
if redis.call('SISMEMBER', KEYS[2], topup_ref) == 0 then return {'not-credited'} end
if ARGV[4] ~= currency or w[1] ~= currency or amount < 0 or amount > topup_amount then
  return {'mismatch', amount, ARGV[4], 0}
end
local balance = tonumber(w[2])
local account = wallet_account(wallet_id_of(KEYS[1]))
local posted, net, none = 0, 0, 'duplicate'

local function post(kind, ref, delta, counter)
  local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
  balance = balance + delta
  net = net + delta
  redis.call('RPUSH', KEYS[3], cjson.encode({
    seq = seq, at = now, kind = kind, ref = ref, topup = ARGV[7], currency = currency, balance = balance,
    postings = {{account = account, amount = delta}, {account = counter, amount = -delta}}}))
  posted = posted + 1
end

if op == 'refund' then
  -- Each refund by its own id: its refund_field holds the amount debited, or 'dead' for a refund
  -- that failed before it was ever debited; its give_back_field marks the give-back. Stripe
  -- never revives a failed or cancelled refund, so a late 'pending' or 'succeeded' of it is stale.
  local field, total_field = refund_field(id), refunded_field(ARGV[7])
  local state = redis.call('HGET', KEYS[4], field)
  local returned = status == 'failed' or status == 'canceled'
  if state == 'dead' then
    none = 'void'
  elseif not state and returned then
    redis.call('HSET', KEYS[4], field, 'dead')
    none = 'void'
  elseif not state then
    -- What the top-up's live refunds took (failed ones given back excluded) bounds the next one.
    local before = tonumber(redis.call('HGET', KEYS[4], total_field) or '0')
    if before + amount > topup_amount then return {'mismatch', amount, ARGV[4], before} end
    redis.call('HSET', KEYS[4], field, amount)
    redis.call('HINCRBY', KEYS[4], total_field, amount)
    post('refund', field, -amount, ACCOUNT_TOPUP_CLEARING)
  elseif returned and redis.call('HSETNX', KEYS[4], give_back_field(field), now) == 1 then
    -- Give back exactly what was debited for this refund.
    local debited = tonumber(state)
    redis.call('HINCRBY', KEYS[4], total_field, -debited)
    post('refund-failed', give_back_field(field), debited, ACCOUNT_TOPUP_CLEARING)
  end
else
  local field = dispute_field(id)
  local debited = tonumber(redis.call('HGET', KEYS[4], field) or '-1')
  -- 'won' or 'lost' may come before 'created': the funds were withdrawn either way.
  if debited < 0 then
    debited = amount
    redis.call('HSET', KEYS[4], field, debited)
    post('dispute', field, -debited, ACCOUNT_TOPUP_DISPUTES)
  end
  if status == 'won' and redis.call('HSETNX', KEYS[4], dispute_won_field(field), now) == 1 then
    post('dispute-won', dispute_won_field(field), debited, ACCOUNT_TOPUP_DISPUTES)
  end
end
if posted == 0 then return {none, balance} end
redis.call('HSET', KEYS[1], 'balance', balance)
-- Taken below zero, the wallet is frozen until a top-up (credit.lua) or a give-back brings it back to >= 0.
-- Only a net debit freezes: money given back (a failed refund, a won dispute) to a wallet that is on a
-- tab it was allowed leaves it as free to unlock as it was.
local frozen = w[3] == '1' and 1 or 0
if balance >= 0 then
  frozen = 0
elseif net < 0 then
  frozen = 1
end
if frozen == 1 then
  redis.call('HSET', KEYS[1], 'frozen', '1')
elseif w[3] == '1' then
  redis.call('HDEL', KEYS[1], 'frozen')
end
return {'ok', balance, frozen}
