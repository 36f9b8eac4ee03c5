"""The `serin` command (also `kubectl serin`): one entry point, one module per verb group.

Verbs import their module lazily so `serin status` never loads onnxruntime or scikit-learn, and
so the operator process never imports the converters (which unpickle models).
"""

from __future__ import annotations

import importlib
import sys

# verb -> (module, help). Each module exposes `main(argv: list[str]) -> int`.
VERBS: dict[str, tuple[str, str]] = {
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
    module = importlib.import_module(VERBS[verb][0])
    return int(module.main(rest))


if __name__ == "__main__":
    sys.exit(main())
