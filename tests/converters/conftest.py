"""Fixtures for the converter tests: zoo artifacts written once per session, a helper to convert.

The model zoo itself lives in serin.converters.zoo (shared with bench/converters_bench.py).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from serin.converters import zoo
from serin.converters.conversion import Outcome, Request, run
from serin.converters.parity import Tolerance

# Two busy cores: keep BLAS/OpenMP libraries from oversubscribing them.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

PYTHON = sys.executable


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("zoo")


@pytest.fixture(scope="session")
def logreg(zoo_dir: Path) -> tuple[Path, Path]:
    """A small LogisticRegression artifact and its sample, for the failure-mode tests."""
    artifact, sample, _, _ = zoo.by_id("logistic_regression").materialize(zoo_dir / "logreg")
    return artifact, sample


Convert = Callable[..., Outcome]


@pytest.fixture
def convert(tmp_path: Path) -> Convert:
    def _convert(source: str | Path, sample: str | Path, **kwargs: Any) -> Outcome:
        out = kwargs.pop("out", tmp_path / "out")
        tolerance = kwargs.pop("tolerance", Tolerance())
        return run(Request(str(source), str(sample), Path(out), tolerance=tolerance, **kwargs))

    return _convert


def read_report(out: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    return report
