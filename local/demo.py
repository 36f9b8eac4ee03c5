"""`serin demo`: the local platform doing Serin's job, start to finish, in one command.

This first version brings up the real control plane, installs the CRDs and applies the example
Models; the full rollout story (convert, serve, canary, promote, roll back) builds on it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from serin.local import dev
from serin.local.controlplane import REPO_ROOT, ControlPlaneError

EXAMPLES = REPO_ROOT / "manifests" / "examples"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="serin demo", description=__doc__)
    parser.add_argument("--home", type=Path, default=dev.DEFAULT_HOME)
    args = parser.parse_args(argv)
    args.home.mkdir(parents=True, exist_ok=True)
    try:
        state = dev.up(args.home)
        kubectl = [f"{state['bin']}/kubectl", "--kubeconfig", state["kubeconfig"]]
        subprocess.run([*kubectl, "apply", "-n", "default", "-f", str(EXAMPLES)], check=True)
        print()
        subprocess.run([*kubectl, "get", "models", "-n", "default"], check=True)
    except (ControlPlaneError, OSError) as err:
        print(f"serin demo: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print()
    dev.print_usage_hint(state)
    print("Stop it with: serin dev down")
    return 0
