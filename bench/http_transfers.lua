-- wrk script of the benchmark's HTTP scenario (bench/http_load.py): random transfers between the
-- first ACCOUNTS accounts, each with an Idempotency-Key of its own: one POST /transfers per
-- request, or with BATCH > 1, BATCH of them per POST /transfers/batch. Counts the transfers done
-- (a 2xx, or a batch's "succeeded") and every other status per thread; done() prints one line,
-- "BENCH-JSON {...}", with the counts, wrk's socket errors and its latency percentiles
-- (microseconds).
--
--   EVENTBANK_BENCH_TOKEN=... wrk -t2 -c16 -d15s --latency -s bench/http_transfers.lua \
--       http://127.0.0.1:8000/transfers -- ACCOUNTS SEED KEY_PREFIX [BATCH]
--
-- Lua 5.1 (Debian's wrk runs LuaJIT): no integer division, no utf8, no goto.

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  accounts = tonumber(args[1])
  prefix = args[3] .. "-" .. id .. "-"
  batch = tonumber(args[4] or "1")
  math.randomseed(tonumber(args[2]) * 1000 + id)
  counter, ok, statuses = 0, 0, {}
  headers = {
    ["Authorization"] = "Bearer " .. (os.getenv("EVENTBANK_BENCH_TOKEN") or ""),
    ["Content-Type"] = "application/json",
  }
end

-- A random transfer's fields, and the key-value text of its idempotency key when keyed.
local function transfer(key)
  local source = math.random(0, accounts - 1)
  local target = math.random(0, accounts - 2)
  if target >= source then target = target + 1 end
  local minor = math.random(1, 10000) -- 0.01 to 100.00, as bench/workload.py
  return string.format(
    '{"from_account_id":"acct-%04d","to_account_id":"acct-%04d","amount":"%d.%02d"%s}',
    source, target, math.floor(minor / 100), minor % 100, key)
end

function request()
  counter = counter + 1
  if batch == 1 then
    headers["Idempotency-Key"] = prefix .. counter
    return wrk.format("POST", nil, headers, transfer(""))
  end
  headers["Idempotency-Key"] = nil
  local items = {}
  for i = 1, batch do
    items[i] = transfer(string.format(',"idempotency_key":"%s%d-%d"', prefix, counter, i))
  end
  return wrk.format("POST", "/transfers/batch", headers,
                    '{"items":[' .. table.concat(items, ",") .. ']}')
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + (batch == 1 and 1 or tonumber(string.match(body, '"succeeded":(%d+)')))
  else
    statuses[status] = (statuses[status] or 0) + 1
  end
end

function done(summary, latency, requests)
  local total_ok, by_status = 0, {}
  for _, thread in ipairs(threads) do
    total_ok = total_ok + thread:get("ok")
    for status, count in pairs(thread:get("statuses")) do
      by_status[status] = (by_status[status] or 0) + count
    end
  end
  local refused = {}
  for status, count in pairs(by_status) do
    refused[#refused + 1] = string.format('"%d":%d', status, count)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH-JSON {"duration_us":%d,"requests":%d,"ok":%d,"non_2xx":{%s},' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
    summary.duration, summary.requests, total_ok, table.concat(refused, ","),
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end
