-- Return a use taken by voucher_take.lua when the wallet refused the credit.
-- KEYS: 1 voucher hash, 2 set of wallets that redeemed it. ARGV: 1 wallet id
if redis.call('SREM', KEYS[2], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'uses_left', 1)
end
return 1
