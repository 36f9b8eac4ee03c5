"""The `serin` command (also `kubectl serin`): one entry point, one module per verb group.

Verbs import their module lazily so `serin status` never loads onnxruntime or scikit-learn, and
so the operator process never imports the converters (which unpickle models).
"""

from __future__ import annotations

import importlib
import sys

# verb -> (module[:function], help). The function (default `main`) takes argv and returns the exit code.
VERBS: dict[str, tuple[str, str]] = {
    "operator": ("serin.operator.main", "run the operator (kopf)"),
    "status": ("serin.operator.control:status_main", "show a model's rollout: serin status MODEL [-n NS]"),
    "promote": ("serin.operator.control:promote_main", "promote the canary now"),
    "abort": ("serin.operator.control:abort_main", "roll the canary back now"),
    "pause": ("serin.operator.control:pause_main", "hold the canary at its current step"),
    "resume": ("serin.operator.control:resume_main", "let a paused canary continue"),
    "silence": ("serin.operator.control:silence_main",
                "no monitoring Events or alerts for a while: serin silence MODEL --for 2h"),
    "rebaseline": ("serin.operator.control:rebaseline_main",
                   "accept recent traffic as the reference: serin rebaseline MODEL --window 24h"),
    "approve": ("serin.operator.control:approve_main",
                "start a retraining awaiting approval: serin approve MODEL --generation G"),
    "capture": ("serin.runtime.capture_export",
                "captured traffic joined with its truth: serin capture export MODEL --since 24h --out rows.parquet"),
    "convert": ("serin.converters.cli", "convert a trained model to ONNX with a parity proof"),
    "serve": ("serin.runtime.cli", "serve a converted model directory (KServe V1/V2 protocol)"),
    "dev": ("serin.local.dev", "run the local platform: dev up|down|status"),
    "demo": ("serin.local.demo", "bring up the local platform and run the demo rollout"),
}


def usage() -> str:
    lines = ["usage: serin VERB [ARGS...]", "", "verbs:"]
    lines += [f"  {verb:<10} {help_}" for verb, (_, help_) in VERBS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    verb, rest = args[0], args[1:]
    if verb not in VERBS:
        print(f"serin: unknown verb {verb!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, _, function = VERBS[verb][0].partition(":")
    module = importlib.import_module(module_name)
    return int(getattr(module, function or "main")(rest))


if __name__ == "__main__":
    sys.exit(main())
