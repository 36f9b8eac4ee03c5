-- wrk script for bench/runtime_bench.py: POST the request bodies in $BENCH_BODY_FILE (one JSON
-- body per line) to the wrk URL, in turn, so that the model sees different rows as in real
-- traffic (one row repeated would keep one path through every tree in the CPU caches).
local bodies = {}
for line in io.lines(os.getenv("BENCH_BODY_FILE")) do
  if #line > 0 then bodies[#bodies + 1] = line end
end
local requests = {}
local n = 0

function init(args)
  for i, body in ipairs(bodies) do
    requests[i] = wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
  end
end

function request()
  n = n % #requests + 1
  return requests[n]
end
