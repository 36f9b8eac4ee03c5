"""Where conversions run when nobody said (security review, issue 32, item 14b): in a Job, never in
the operator's own Pod. The local executor runs the converter, which unpickles the model (arbitrary
code), as a child of the operator, with the operator's credentials: only an explicit
`--executor local` (the local stack, tests) asks for that."""

from __future__ import annotations

import os
from typing import Any

import kopf
import pytest
from serin.operator import executors
from serin.operator import main as operator_main


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A private copy of the environment (main() writes its settings there), with no executor set."""
    env = {k: v for k, v in os.environ.items() if k not in ("SERIN_EXECUTOR", "SERIN_CONVERTER_IMAGE")}
    monkeypatch.setattr(os, "environ", env)
    return env


@pytest.fixture
def kopf_run(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(kopf, "run", lambda **kwargs: calls.append(kwargs))
    return calls


@pytest.mark.parametrize(("argv", "setting", "kind"), [
    pytest.param([], None, "job", id="no-flag-no-setting-is-job"),
    pytest.param([], "", "job", id="empty-setting-is-job"),
    pytest.param([], "local", "local", id="setting-local"),
    pytest.param(["--executor", "local"], None, "local", id="flag-local"),
    pytest.param(["--executor", "job"], "local", "job", id="flag-beats-setting"),
])
def test_serin_operator_runs_conversions_in_jobs_unless_told_otherwise(
        environ: dict[str, str], kopf_run: list[dict[str, Any]], argv: list[str], setting: str | None,
        kind: str) -> None:
    if setting is not None:
        environ["SERIN_EXECUTOR"] = setting
    environ["SERIN_CONVERTER_IMAGE"] = "ghcr.io/serin/converter:test"
    assert operator_main.main(argv) == 0 and len(kopf_run) == 1
    assert environ["SERIN_EXECUTOR"] == kind  # what the operator's start-up reads
    assert executors.kind_from_environment() == kind


def test_the_default_job_executor_without_an_image_refuses_to_start(
        environ: dict[str, str], kopf_run: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]) -> None:
    """Plainly, before kopf starts: not a KeyError in a start-up handler, not a silent fallback to local."""
    with pytest.raises(SystemExit) as exited:
        operator_main.main([])
    assert exited.value.code == 2 and kopf_run == []
    assert "SERIN_CONVERTER_IMAGE, which is not set; --executor local" in capsys.readouterr().err


def test_start_up_without_a_setting_chooses_job(environ: dict[str, str]) -> None:
    """The operator started some other way than `serin operator` (no SERIN_EXECUTOR at all)."""
    assert executors.kind_from_environment() == "job"


def test_an_s3_store_without_its_storage_container_refuses_to_start(environ: dict[str, str]) -> None:
    """Issue 34 #3: without the container's name KServe would pick a storage initializer by URI
    (its own `default` one matches every s3:// URI, with the node's identity)."""
    environ.update(SERIN_CONVERTER_IMAGE="ghcr.io/serin/converter:test", SERIN_MODEL_STORE="s3://models/serin")
    environ.pop("SERIN_MODEL_STORE_CONTAINER", None)
    with pytest.raises(ValueError, match=r"SERIN_MODEL_STORE_CONTAINER \(.*\) is not set"):
        executors.from_environment(None, "job")  # type: ignore[arg-type]  # refused before any call
