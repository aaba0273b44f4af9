-- Add a batch of the dashboard's counts to one hash of a site's day (coinslot.insights), and set
-- when it expires: one call for what were hundreds of HINCRBYs, each its own command to parse.
-- KEYS: 1 the day's counts hash. ARGV: 1 when it expires (unix s), then field, increment, ...
for i = 2, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('EXPIREAT', KEYS[1], ARGV[1])
return #ARGV / 2
