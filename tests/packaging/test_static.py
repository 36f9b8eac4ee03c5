"""Static checks run with the suite, so CI enforces them: ruff over the repository, and mypy over
the four import packages as installed (`serin.operator`, …; hack/typecheck.py says why it links
them, and pyproject.toml holds the settings: strict on the pure core)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True, timeout=600)


def typecheck(*argv: str) -> subprocess.CompletedProcess[str]:
    return run(str(REPO / "hack" / "typecheck.py"), *argv)


def test_ruff_finds_nothing() -> None:
    out = run("-m", "ruff", "check", "--no-cache", ".")
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_finds_nothing() -> None:
    out = typecheck()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Success: no issues found" in out.stdout, out.stdout
    # All four packages were checked, not a subset the import hook hid.
    checked = int(out.stdout.rsplit("in ", 1)[1].split()[0])
    modules = sum(1 for pkg in ("operator", "converters", "runtime", "local") for _ in (REPO / pkg).rglob("*.py"))
    assert checked >= modules, out.stdout


def test_mypy_sees_real_types_across_modules() -> None:
    snippet = ("from serin.operator.spec import ModelSpec\n"
               "from serin.operator.rollout import decide\n"
               "reveal_type(ModelSpec)\n"
               "reveal_type(decide)\n")
    out = typecheck("-c", snippet)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "serin.operator.spec.ModelSpec" in out.stdout and '"Any"' not in out.stdout, out.stdout
    assert "-> serin.operator.rollout.Decision" in out.stdout, out.stdout


@pytest.mark.parametrize(("snippet", "error"), [
    pytest.param("from serin.operator.spec import ModelSpec\nx: int = ModelSpec\n", "[assignment]",
                 id="a-class-where-an-int-goes"),
    pytest.param("from serin.operator.status import Canary\nCanary(2, 'k', step='one')\n", "[arg-type]",
                 id="a-string-for-a-step"),
    pytest.param("from serin.operator.analysis import judge_round\njudge_round(None, (), {}, 1, 'now')\n",
                 "[arg-type]", id="no-spec-for-a-round"),
    pytest.param("from serin.operator.executors import ConversionRequest\n"
                 "ConversionRequest('ns', 'm', 'u', 1, 'k', 1, {'uri': 'x'}, {})\n", "[arg-type]",
                 id="a-dict-where-the-typed-source-goes"),
    pytest.param("import serin.operator.no_such_module\n", "[import-not-found]", id="a-module-that-is-not-there"),
])
def test_mypy_reports_a_wrong_type_passed_across_modules(snippet: str, error: str) -> None:
    """The check can fail: each of these passed while every serin import was Any."""
    out = typecheck("-c", snippet)
    assert out.returncode == 1, out.stdout + out.stderr
    assert error in out.stdout, out.stdout
