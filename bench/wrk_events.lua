-- wrk script of `make bench` (bench/delivery.py): POST the README's event, each request with a key of its own.
-- Arguments after `--`: the bearer token, then a run id that keeps keys unique across runs and threads.
-- done() prints one line the bench parses:
-- WRK_RESULT requests duration_us non_2xx connect_errors read_errors write_errors timeouts p50_us p99_us

local threads = 0
local counter = 0
local prefix = "run"

function setup(thread)
  thread:set("thread_index", threads)
  threads = threads + 1
end

function init(args)
  wrk.headers["Authorization"] = "Bearer " .. args[1]
  wrk.headers["Content-Type"] = "application/json"
  prefix = args[2] .. "-" .. tostring(thread_index or 0)
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"event": "FORGOT_PASSWORD", "key": "%s-%d", "contact": {"email": "user%d@ingest.example.com", '
      .. '"fields": {"first_name": "Ann"}}, "data": {"forgot_password_link": "https://app.example/reset/%d"}}',
    prefix, counter, counter, counter
  )
  return wrk.format("POST", nil, nil, body)
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    "WRK_RESULT %d %d %d %d %d %d %d %d %d\n",
    summary.requests, summary.duration, errors.status, errors.connect, errors.read, errors.write, errors.timeout,
    latency:percentile(50), latency:percentile(99)
  ))
end
