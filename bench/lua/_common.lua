-- Shared by every workload script (the harness puts it in front of the workload).
-- Each wrk thread gets its own Lua state; setup() numbers them so that they
-- start at different points of the context cycle.
local thread_count = 0

function setup(thread)
  thread:set("thread_id", thread_count)
  thread_count = thread_count + 1
end

HEADERS = { ["Content-Type"] = "application/json" }
MESSAGE_TEXT = "Could you summarise the last quarterly report in three short bullet points "
  .. "for the team meeting, please?"

-- args: prefix, number of contexts (ids are "<prefix>-0" .. "<prefix>-<n-1>").
function init(args)
  prefix = args[1]
  contexts = tonumber(args[2]) or 1
  counter = (thread_id or 0) * 7919
end

function next_context()
  counter = counter + 1
  return "/v1/contexts/" .. prefix .. "-" .. (counter % contexts)
end

function append_request(path)
  local body = string.format(
    '{"message":{"role":"user","parts":[{"type":"text","text":"%s (#%d)"}]}}',
    MESSAGE_TEXT, counter)
  return wrk.format("POST", path .. "/messages", HEADERS, body)
end

function read_request(path)
  return wrk.format("GET", path .. "/context", nil, nil)
end

-- One JSON line on stdout with every figure the harness reads (times in µs).
function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%.0f,"bytes":%.0f,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%.0f,"max":%.0f,"mean":%.1f,"p50":%.0f,"p90":%.0f,"p99":%.0f,"p999":%.0f}}\n',
    summary.requests, summary.duration, summary.bytes,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency.min, latency.max, latency.mean,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
