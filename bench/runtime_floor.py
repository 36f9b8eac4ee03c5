"""The floor for bench/runtime_bench.py: a bare ASGI app on the stack Serin's runtime runs on
(uvicorn, httptools, uvloop, the same settings as serin.runtime.server), which reads the request
body and answers a fixed JSON. No server of this stack can be faster per request.

With --model it also runs that ONNX model once per request, on one of 64 fixed rows in turn (as
the benchmark's requests carry 64 rows in turn), before answering:
the floor plus the model's own cost in a server (where it is far more than in a tight loop,
because the network stack and the event loop evict the model's memory from the CPU caches
between requests). Serin's own handling is what a Serin worker spends beyond this one.

    python bench/runtime_floor.py --http_port 8080 [--model model.onnx] [--host 127.0.0.1]
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import uvicorn

ANSWER = b'{"model_name":"floor","outputs":[]}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]


def build(model: str | None) -> Callable[..., Awaitable[None]]:
    run: Callable[[], object] | None = None
    if model:
        import onnxruntime as ort

        opts = ort.SessionOptions()  # as serin.runtime.model._session
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        arg = session.get_inputs()[0]
        width = int(arg.shape[1]) if len(arg.shape) > 1 and isinstance(arg.shape[1], int) else 1
        rows = np.random.default_rng(0).normal(size=(64, 1, width)).astype(np.float32)
        feeds = itertools.cycle([{arg.name: row} for row in rows])

        def run() -> object:
            return session.run(None, next(feeds))

    async def app(scope: dict[str, Any], receive: Callable[..., Awaitable[dict[str, Any]]],
                  send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        if run is not None:
            run()
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        await send({"type": "http.response.body", "body": ANSWER})

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--http_port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--model")
    args = ap.parse_args()
    uvicorn.run(build(args.model), host=args.host, port=args.http_port, loop="uvloop",
                http="httptools", lifespan="on", access_log=False, log_config=None,
                log_level="warning", proxy_headers=False, timeout_keep_alive=65)


if __name__ == "__main__":
    main()
