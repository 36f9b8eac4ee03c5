"""`serin serve` and `python -m serin.runtime`: one parser for both spellings.

KServe starts custom runtimes with underscore flags (`--model_name {{.Name}} --model_dir
/mnt/models --http_port 8080`); people type `serin serve --model-dir DIR --name N --port P`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
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
    p.add_argument("--state-dir", type=Path, default=default_state_dir(),
                   help="where the ids that got their feedback are kept, shared by the workers; "
                   f"keep it over restarts (default: $SERIN_STATE_DIR, else {STATE_DIR} when it is a "
                   "writable directory (the operator mounts one), else a directory removed at exit)")
    p.add_argument("--feedback-max-age", type=float, default=7 * 24 * 3600.0,
                   help="seconds after a prediction that its ground truth is still taken")
    p.add_argument("--feedback-max-ids", type=int, default=1_000_000,
                   help="predictions whose truth one replica keeps at most (within the max age); "
                   "beyond, feedback gets 503 until older ids age out")
    p.add_argument("--feedback-rate", type=float, default=50.0,
                   help="feedback taken per second per worker, bursts of twice that (429 beyond); 0: no limit")
    p.add_argument("--feedback-gone-after", type=float, default=60.0,
                   help="seconds the replica that issued a prediction may not answer (a restart) before its "
                   "truth is taken by the replica it reached instead (503 until then)")
    p.add_argument("--feedback-senders", choices=("token", "anyone"), default="token",
                   help="who may send ground truth: holders of the sender token in $SERIN_FEEDBACK_TOKEN "
                   "(`Authorization: Bearer`; without one, feedback is refused), or anyone reaching the "
                   "runtime (a runtime of your own behind your own authentication)")
    p.add_argument("--model_sha256", "--model-sha256", dest="model_sha256",
                   default=os.environ.get("SERIN_MODEL_SHA256", ""),
                   help="serve model.onnx only if it has this digest (default: $SERIN_MODEL_SHA256; "
                   "the operator sets it from the conversion's record)")
    p.add_argument("--capture-share", dest="capture_share", type=float,
                   help="capture this share of the answers (0-1], and the truth sent back, to --capture-uri "
                        "(default: $SERIN_CAPTURE, a JSON object {share, uri, namespace, s3: {...}})")
    p.add_argument("--capture-uri", dest="capture_uri",
                   help="where captured rows go: s3://bucket[/prefix] (keys from AWS_ACCESS_KEY_ID and "
                        "AWS_SECRET_ACCESS_KEY) or a directory")
    p.add_argument("--log-level", default=os.environ.get("SERIN_LOG_LEVEL", "INFO"))
    return p


STATE_DIR = "/var/lib/serin"  # the operator's emptyDir mount (operator/routing/base.py STATE_DIR)


def default_state_dir() -> Path | None:
    if os.environ.get("SERIN_STATE_DIR"):
        return Path(os.environ["SERIN_STATE_DIR"])
    if os.path.isdir(STATE_DIR) and os.access(STATE_DIR, os.W_OK):
        return Path(STATE_DIR)
    return None


def _termination_message(text: str) -> None:
    """Kubernetes shows this file as the container's last message (and Serin as its reason). It
    exists in a container; elsewhere nothing is written."""
    path = Path(os.environ.get("SERIN_TERMINATION_LOG", "/dev/termination-log"))
    if path.is_file():
        with contextlib.suppress(OSError):
            path.write_text(text[:4096])


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

    from serin.runtime.feedback import KEY_ENV, POD_IP_ENV, TOKEN_ENV
    from serin.runtime.server import ServeConfig, serve

    feedback_key = os.environ.get(KEY_ENV, "")
    if args.monitoring and not feedback_key:
        # Workers are spawned with this environment: they share the key, so ids verify on any of
        # them; but not on other replicas or after a restart, which need the operator's Secret.
        feedback_key = os.environ[KEY_ENV] = secrets.token_hex(32)
        log.warning("%s is not set: prediction ids are signed with a key of this process only "
                    "(feedback must reach this replica before it restarts)", KEY_ENV)
    feedback_token = os.environ.get(TOKEN_ENV, "")
    if args.monitoring and args.feedback_senders == "token" and not feedback_token:
        log.warning("%s is not set: feedback is refused (403); set it, or --feedback-senders anyone", TOKEN_ENV)
    state_dir: Path | None = args.state_dir
    own_state_dir = None
    if args.monitoring and state_dir is None:
        state_dir = own_state_dir = Path(tempfile.mkdtemp(prefix="serin-state-"))

    from serin.runtime.capture import CAPTURE_ENV, CaptureSettings

    name = args.name or model_dir.resolve().name
    try:
        capture = None
        if args.capture_share is not None or args.capture_uri is not None:
            capture = CaptureSettings.parse(json.dumps({"share": args.capture_share or 0, "uri": args.capture_uri}),
                                            name, revision(args.revision))
        elif os.environ.get(CAPTURE_ENV):
            capture = CaptureSettings.parse(os.environ[CAPTURE_ENV], name, revision(args.revision))
    except (ValueError, TypeError) as exc:
        log.error("capture: %s", exc)
        _termination_message(f"capture: {exc}")
        return 2

    cfg = ServeConfig(
        model_dir=model_dir, name=name, host=args.host,
        port=args.port, workers=max(1, args.workers), revision=revision(args.revision),
        monitoring=args.monitoring, max_body=args.max_body, drift_window=args.drift_window,
        drift_min_rows=args.drift_min_rows, drift_interval=args.drift_interval,
        allow_nan=args.allow_nan, log_level=args.log_level.upper(), direct_path=args.direct_path,
        batch_rows=args.batch_rows, grpc_port=args.grpc_port or None,
        feedback_key=feedback_key if args.monitoring else "", state_dir=state_dir,
        feedback_max_age=args.feedback_max_age, feedback_max_ids=args.feedback_max_ids,
        feedback_rate=args.feedback_rate, model_sha256=args.model_sha256,
        feedback_token=feedback_token, feedback_senders_anyone=args.feedback_senders == "anyone",
        pod_ip=os.environ.get(POD_IP_ENV, ""), feedback_gone_after=args.feedback_gone_after,
        capture=capture,
    )
    from serin.runtime.model import ModelRefused

    try:
        return serve(cfg)
    except ModelRefused as exc:
        log.error("%s", exc)
        _termination_message(str(exc))
        return 2
    except OSError as exc:
        log.error("cannot serve on %s:%d: %s", cfg.host, cfg.port, exc)
        return 1
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        if own_state_dir is not None:
            shutil.rmtree(own_state_dir, ignore_errors=True)
