"""Where a request's time goes inside Serin's runtime (issue 16), without a server or a network:
the ASGI app called in-process with a ready request, then each stage of the request path alone,
all in one run on the same model, printed as shares of the whole. The server's own cost (uvicorn,
httptools, the socket) is what bench/runtime_bench.py measures against a bare ASGI app; this
splits what Serin adds on top of it.

Model: RandomForestClassifier, 100 trees, depth 12, 30 float features (as runtime_bench.py);
request: one V1 row.

    python bench/runtime_stages.py [--requests 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "runtime"))
import model_factory as mf  # the runtime tests' model generator


def per_call(fn: Callable[[], Any], n: int) -> float:
    for _ in range(min(500, n)):
        fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


async def through_app(app: Any, body: bytes, path: str, n: int) -> float:
    scope = {"type": "http", "path": path, "method": "POST",
             "headers": [(b"content-length", str(len(body)).encode())]}
    message = {"type": "http.request", "body": body, "more_body": False}

    async def receive() -> dict[str, Any]:
        return message

    async def send(_: dict[str, Any]) -> None:
        return None

    for _ in range(min(500, n)):
        await app(scope, receive, send)
    t = time.perf_counter()
    for _ in range(n):
        await app(scope, receive, send)
    return (time.perf_counter() - t) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="serin-stages-"))
    try:
        measure(args.requests, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def measure(n: int, tmp: Path) -> None:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(tmp / "prometheus")
    (tmp / "prometheus").mkdir()
    clf, x = mf.sklearn_forest(features=30, trees=100, depth=12)
    model_dir = mf.forest_dir(tmp / "onnx", clf, x)

    from serin.runtime.decode import decode_v1, parse_json
    from serin.runtime.server import ServeConfig, build_app

    body = orjson.dumps({"instances": [x[0].tolist()]})
    path = "/v1/models/forest:predict"
    with_monitoring = build_app(ServeConfig(model_dir=model_dir, name="forest", monitoring=True))
    without = build_app(ServeConfig(model_dir=model_dir, name="forest", monitoring=False))
    whole_on = asyncio.run(through_app(with_monitoring, body, path, n))
    whole_off = asyncio.run(through_app(without, body, path, n))
    model = without.model
    feeds, _ = decode_v1(parse_json(body), model.inputs)
    results = model.run(feeds, None)
    parse = per_call(lambda: parse_json(body), n)
    stages = {
        "parse JSON (orjson)": parse,
        "decode + validate (after parsing)": per_call(lambda: decode_v1(parse_json(body), model.inputs), n) - parse,
        "model.run (onnxruntime and its wrapper)": per_call(lambda: model.run(feeds, None), n),
        "encode the V1 response": per_call(lambda: model.v1_response(results), n),
    }
    print(f"{n} single-row V1 requests through the ASGI app, no server: monitoring on "
          f"{whole_on * 1e6:.1f} µs each, off {whole_off * 1e6:.1f} µs (on/off {whole_on / whole_off:.2f})")
    for name, seconds in stages.items():
        print(f"  {name:42s} {seconds * 1e6:6.1f} µs  {seconds / whole_off:5.0%} of the app without monitoring")
    rest = whole_off - sum(stages.values())
    print(f"  {'the rest (routing, body, response, metrics)':42s} {rest * 1e6:6.1f} µs  {rest / whole_off:5.0%}")


if __name__ == "__main__":
    sys.exit(main())
