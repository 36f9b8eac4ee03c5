"""`serin operator`: runs the kopf operator (flags mirror the Helm chart's Deployment args)."""

from __future__ import annotations

import argparse
import logging
import os

from serin.operator.executors import kind_from_environment


def _boolean(text: str) -> bool:
    """A flag's or env var's true|false (what the chart writes: --require-analysis=true)."""
    value = text.strip().lower()
    if value not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")
    return value == "true"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="serin operator", description=__doc__)
    parser.add_argument("--namespace", "-n", action="append", default=[],
                        help="watch only this namespace (repeatable); default: all namespaces")
    parser.add_argument("--executor", choices=["local", "job"], default=kind_from_environment(),
                        help="where conversions run: Kubernetes Job (job, the default) or a subprocess of the "
                             "operator (local: development only, the model is unpickled in the operator's Pod)")
    parser.add_argument("--prometheus-url", default=os.environ.get("SERIN_PROMETHEUS_URL", "http://localhost:9090"))
    parser.add_argument("--model-store", default=os.environ.get("SERIN_MODEL_STORE"),
                        help="local: a directory; job: pvc://CLAIM[/prefix] or s3://BUCKET[/prefix]")
    parser.add_argument("--max-conversions", type=int, default=int(os.environ.get("SERIN_MAX_CONVERSIONS") or 0),
                        help="conversions running at once, the rest wait in line "
                             "(default: one per core locally, 4 Jobs in a cluster)")
    parser.add_argument("--max-conversions-per-namespace", type=int,
                        default=int(os.environ.get("SERIN_MAX_CONVERSIONS_PER_NAMESPACE") or 0),
                        help="conversions one namespace may run at once, so others always find a slot "
                             "(default 0: no limit of its own; free slots go to namespaces in turn anyway)")
    parser.add_argument("--require-analysis", type=_boolean, metavar="true|false",
                        default=os.environ.get("SERIN_REQUIRE_ANALYSIS", "").strip().lower() != "false",
                        help="refuse a new version whose canary nothing could stop: no canary steps, or no "
                             "metric that is not dryRun (default: true)")
    parser.add_argument("--metrics-port", type=int, default=int(os.environ.get("SERIN_METRICS_PORT", "0")))
    parser.add_argument("--health-port", type=int, default=0, help="liveness endpoint /healthz (0: off)")
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args(argv)

    os.environ["SERIN_EXECUTOR"] = args.executor
    os.environ["SERIN_PROMETHEUS_URL"] = args.prometheus_url
    os.environ["SERIN_METRICS_PORT"] = str(args.metrics_port)
    os.environ["SERIN_NAMESPACES"] = ",".join(dict.fromkeys(args.namespace))
    if args.executor == "job" and not os.environ.get("SERIN_CONVERTER_IMAGE"):
        parser.error("--executor job (the default) runs conversions in Jobs of SERIN_CONVERTER_IMAGE, which is "
                     "not set; --executor local runs them as subprocesses of the operator (development only)")
    if args.max_conversions < 0:
        parser.error("--max-conversions must be at least 1 (0: the default)")
    if args.max_conversions:
        os.environ["SERIN_MAX_CONVERSIONS"] = str(args.max_conversions)
    if args.max_conversions_per_namespace < 0:
        parser.error("--max-conversions-per-namespace must be at least 1 (0: no limit of its own)")
    os.environ["SERIN_MAX_CONVERSIONS_PER_NAMESPACE"] = str(args.max_conversions_per_namespace)
    os.environ["SERIN_REQUIRE_ANALYSIS"] = "true" if args.require_analysis else "false"
    if args.model_store:
        os.environ["SERIN_MODEL_STORE"] = args.model_store
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # kopf logs every watch event it hands over; Serin logs the transitions that matter.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)

    import kopf
    from serin.operator import handlers  # noqa: F401  (registers the handlers)

    kopf.run(
        standalone=True,  # no kopf peering CRDs: leader election is a Lease (serin.operator.leader)
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=f"http://0.0.0.0:{args.health_port}/healthz" if args.health_port else None,
    )
    return 0
