"""`serin serve` and `python -m serin.runtime`: one parser for both spellings.

KServe starts custom runtimes with underscore flags (`--model_name {{.Name}} --model_dir
/mnt/models --http_port 8080`); people type `serin serve --model-dir DIR --name N --port P`.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
from pathlib import Path

from serin.runtime.batching import DEFAULT_BATCH_ROWS

log = logging.getLogger("serin.runtime")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="serin serve", description="Serve a Serin model directory "
                                "(model.onnx + profile.json) with the KServe V1/V2 protocol.")
    p.add_argument("--model_dir", "--model-dir", dest="model_dir", required=True, type=Path)
    p.add_argument("--model_name", "--model-name", "--name", dest="name",
                   help="name on the endpoint paths (default: the directory's name)")
    p.add_argument("--http_port", "--http-port", "--port", dest="port", type=int, default=8080)
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--grpc_port", "--grpc-port", dest="grpc_port", type=int,
                   help="serve the V2 protocol over gRPC on this port too (default: HTTP only)")
    p.add_argument("--workers", type=int, default=int(os.environ.get("SERIN_WORKERS", "1")),
                   help="worker processes (one per core)")
    p.add_argument("--revision", help="revision label (default: $K_REVISION, $SERIN_REVISION, "
                   "'local')")
    p.add_argument("--no-monitoring", dest="monitoring", action="store_false",
                   help="no Prometheus metrics and no drift monitoring")
    p.add_argument("--no-direct-path", dest="direct_path", action="store_false",
                   help="answer every request through the ASGI app (default: small inference "
                   "requests are answered in the HTTP protocol itself; docs/runtime.md)")
    p.add_argument("--batch-rows", dest="batch_rows", type=int,
                   help="most rows in one run of requests that arrive together (default: "
                   f"{DEFAULT_BATCH_ROWS} when the conversion proved the model's rows independent, "
                   "else 0: no batching; docs/runtime.md)")
    p.add_argument("--max-body-bytes", dest="max_body", type=int, default=8 * 1024 * 1024)
    p.add_argument("--drift-window", type=int, default=2000, help="rows in the drift window")
    p.add_argument("--drift-min-rows", type=int, default=500,
                   help="rows needed before PSI gauges are published")
    p.add_argument("--drift-interval", type=float, default=2.0, help="seconds between PSI updates")
    p.add_argument("--allow-nan", action="store_true",
                   help="accept NaN in every float input (default: only inputs the profile or "
                   "the ONNX metadata `serin.allow_nan` allow)")
    p.add_argument("--log-level", default=os.environ.get("SERIN_LOG_LEVEL", "INFO"))
    return p


def revision(flag: str | None) -> str:
    return flag or os.environ.get("K_REVISION") or os.environ.get("SERIN_REVISION") or "local"


def main(argv: list[str]) -> int:
    args, unknown = _parser().parse_known_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    if unknown:
        log.warning("ignoring arguments this runtime does not use: %s", " ".join(unknown))
    model_dir: Path = args.model_dir
    if not (model_dir / "model.onnx").is_file():
        log.error("%s has no model.onnx", model_dir)
        return 2
    metrics_dir = None
    if args.monitoring:
        # Must be set before anything imports prometheus_client: it picks its value store
        # (in-process or mmap files shared by workers) at import time.
        metrics_dir = tempfile.mkdtemp(prefix="serin-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir

    from serin.runtime.server import ServeConfig, serve

    cfg = ServeConfig(
        model_dir=model_dir, name=args.name or model_dir.resolve().name, host=args.host,
        port=args.port, workers=max(1, args.workers), revision=revision(args.revision),
        monitoring=args.monitoring, max_body=args.max_body, drift_window=args.drift_window,
        drift_min_rows=args.drift_min_rows, drift_interval=args.drift_interval,
        allow_nan=args.allow_nan, log_level=args.log_level.upper(), direct_path=args.direct_path,
        batch_rows=args.batch_rows, grpc_port=args.grpc_port or None,
    )
    try:
        return serve(cfg)
    except OSError as exc:
        log.error("cannot serve on %s:%d: %s", cfg.host, cfg.port, exc)
        return 1
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
