-- wrk script for relay's ingest benchmark: every request carries fresh event ids.
--
-- Settings come from the environment (wrk's done() runs in a Lua state that never sees the
-- script's command-line arguments):
--   BENCH_TEMPLATE   file holding one event as JSON, with BENCH_MARKER where the id goes
--   BENCH_MARKER     the placeholder text in the template
--   BENCH_EVENTS     events per request: 1 sends the bare event, more send {"events": [...]}
--   BENCH_PREFIX     per-run random prefix of every event id
--   BENCH_SEED       seed of this run's random ids
--   BENCH_KEY        source key, sent as "Authorization: Bearer <key>"
--   BENCH_OUT        done() writes its JSON summary line here

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("*a")
  f:close()
  return text
end

local function split(text, sep)
  local parts, start = {}, 1
  while true do
    local i, j = string.find(text, sep, start, true)
    if not i then
      parts[#parts + 1] = string.sub(text, start)
      return parts
    end
    parts[#parts + 1] = string.sub(text, start, i - 1)
    start = j + 1
  end
end

local parts = split(read_file(os.getenv("BENCH_TEMPLATE")), os.getenv("BENCH_MARKER"))
local per_request = tonumber(os.getenv("BENCH_EVENTS"))
local prefix = os.getenv("BENCH_PREFIX")
local out_path = os.getenv("BENCH_OUT")
local headers = {
  ["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY"),
  ["Content-Type"] = "application/json",
}
math.randomseed(tonumber(os.getenv("BENCH_SEED")))

local random, format, concat = math.random, string.format, table.concat

-- prefix-xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx: a UUIDv4 behind the run's prefix
local function new_id()
  return format(
    "%s-%08x-%04x-4%03x-%04x-%04x%08x",
    prefix,
    random(0, 0xffffffff),
    random(0, 0xffff),
    random(0, 0xfff),
    0x8000 + random(0, 0x3fff),
    random(0, 0xffff),
    random(0, 0xffffffff)
  )
end

-- appends one event with a fresh id to buf, returns the next free index
local function add_event(buf, n)
  local id = new_id()
  buf[n] = parts[1]
  n = n + 1
  for p = 2, #parts do
    buf[n] = id
    buf[n + 1] = parts[p]
    n = n + 2
  end
  return n
end

function request()
  local buf, n = {}, 1
  if per_request == 1 then
    add_event(buf, n)
  else
    buf[1] = '{"events":['
    n = 2
    for i = 1, per_request do
      if i > 1 then
        buf[n] = ","
        n = n + 1
      end
      n = add_event(buf, n)
    end
    buf[n] = "]}"
  end
  return wrk.format("POST", nil, headers, concat(buf))
end

function done(summary, latency, requests)
  local e = summary.errors
  local f = assert(io.open(out_path, "w"))
  f:write(format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean
  ))
  f:close()
end
