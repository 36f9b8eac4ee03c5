-- wrk script for bench/runtime_bench.py: POST the body in $BENCH_BODY_FILE to the wrk URL.
local f = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
