-- wrk script: every request is a real debit. Request c goes to wallet w = c % #tokens and
-- buys that wallet's k-th item (k = c // #tokens), item-((w + k) % items): no wallet buys an
-- item twice, and requests in flight together name different items.
-- Arguments (after --): tokens file (a Lua chunk returning a table of wallet tokens), site,
-- number of items, number of wrk threads. done() prints one line "BENCH {json}" for bench/unlock.py.

local started = 0

function setup(thread)
  thread:set("id", started)  -- each thread takes every nthreads-th request index
  started = started + 1
end

function init(args)
  local tokens = dofile(args[1])
  site = args[2]
  items = tonumber(args[3])
  nthreads = tonumber(args[4])
  n = 0
  -- Each wallet's request line and headers, formatted once: only the body varies.
  wallets = {}
  for i, token in ipairs(tokens) do
    local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}
    local head = wrk.format("POST", "/v1/unlocks", headers)
    wallets[i] = string.sub(head, 1, -3) .. "Content-Length: "  -- without the blank line ending the headers
  end
end

function request()
  local c = n * nthreads + id
  n = n + 1
  local w = c % #wallets
  local k = math.floor(c / #wallets)
  local body = '{"site":"' .. site .. '","item":"item-' .. ((w + k) % items) .. '"}'
  return wallets[w + 1] .. #body .. "\r\n\r\n" .. body
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"errors_4xx_5xx":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
end
