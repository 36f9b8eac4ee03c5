#!/usr/bin/env python3
"""mypy over Serin's four import packages, as they are installed (`serin.operator`, …).

setuptools maps each top-level folder into the `serin` namespace (`package-dir` in pyproject.toml),
and the editable install resolves that mapping with an import hook at run time. mypy can follow
neither, so checking the folders by path made every `serin.*` import an unresolved `Any`. This
script links the folders into build/typecheck/serin/ (the `mypy_path` in pyproject.toml) and checks
the packages by name there, so cross-module types are the real ones.

    python hack/typecheck.py            # the whole check (exit status is mypy's)
    python hack/typecheck.py -c 'CODE'  # check a snippet against the real packages
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FARM = ROOT / "build" / "typecheck" / "serin"
PACKAGES = ("operator", "converters", "runtime", "local")


def link_packages() -> None:
    FARM.mkdir(parents=True, exist_ok=True)
    for name in PACKAGES:
        link = FARM / name
        target = os.path.relpath(ROOT / name, FARM)
        if link.is_symlink() and os.readlink(link) == target:
            continue
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target, target_is_directory=True)


def main(argv: list[str]) -> int:
    link_packages()
    targets = argv or [arg for name in PACKAGES for arg in ("-p", f"serin.{name}")]
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), *targets]
    # mypy also searches PYTHONPATH: another copy of `serin` there would answer for the links.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MYPYPATH")}
    return subprocess.run(cmd, cwd=ROOT, check=False, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
