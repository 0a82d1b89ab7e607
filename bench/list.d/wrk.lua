-- wrk script used by bench/list.
--
-- * done(): prints one machine-readable line
--     VBS_JSON {"requests":..,"duration_us":..,"p50_us":..,"p99_us":..,...}
--   so bench/list does not have to parse wrk's human-readable units.
-- * If the environment variable VBS_BENCH_PATHS is set (paths separated by
--   single spaces), request() cycles through those paths (used for the "page"
--   query: the first 10 pages of a marker-paginated listing). Headers given
--   with -H are kept (wrk.format merges wrk.headers).
--
-- request() must be defined at load time (not in init) because wrk decides on
-- the main Lua state whether the script is "static"; so the switch is an env
-- variable rather than a script argument.

local paths_env = os.getenv("VBS_BENCH_PATHS")

if paths_env ~= nil and paths_env ~= "" then
  local paths = {}
  for p in string.gmatch(paths_env, "%S+") do
    paths[#paths + 1] = p
  end
  local counter = 0
  local reqs = {}

  function init(args)
    -- pre-build the requests once per thread; start threads at different pages
    for i, p in ipairs(paths) do
      reqs[i] = wrk.format("GET", p)
    end
    counter = math.random(0, #paths - 1)
  end

  function request()
    counter = counter + 1
    return reqs[(counter % #reqs) + 1]
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'VBS_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,' ..
    '"mean_us":%.1f,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max))
end
