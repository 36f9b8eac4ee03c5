"""Conversion executors: where `python -m serin.converters.job` runs for a new version.

The operator process never imports the converters (they unpickle models, which runs arbitrary
code): `local` runs the job as a subprocess (serin dev, tests), `job` as a Kubernetes Job with no
API credentials. Both are idempotent per (model, generation, versionKey) and report through the
same ConversionResult, so the decision never knows which one ran.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from serin.operator.observations import ConversionResult


@dataclass(frozen=True)
class ConversionRequest:
    namespace: str
    name: str
    uid: str
    generation: int
    versionKey: str
    attempt: int
    source: dict[str, Any]
    conversion: dict[str, Any]

    @property
    def slug(self) -> str:
        # Each retry writes to a place of its own: a failed attempt's report never answers for the next.
        retry = f"-a{self.attempt}" if self.attempt > 1 else ""
        return f"{self.name}-g{self.generation}-{self.versionKey[:8]}{retry}"

    def env(self, out: str) -> dict[str, str]:
        tol = self.conversion.get("tolerance") or {}
        pairs = {
            "SERIN_SOURCE_URI": self.source.get("uri"),
            "SERIN_SAMPLE_URI": self.source.get("sampleUri"),
            "SERIN_FORMAT": self.source.get("format"),
            "SERIN_SHA256": self.source.get("sha256"),
            "SERIN_OUT": out,
            "SERIN_TARGET_OPSET": self.conversion.get("targetOpset"),
            "SERIN_ATOL": tol.get("absolute"),
            "SERIN_RTOL": tol.get("relative"),
            "SERIN_MIN_LABEL_AGREEMENT": tol.get("labelAgreement"),
        }
        return {k: str(v) for k, v in pairs.items() if v is not None and v != ""}


class ConversionExecutor(Protocol):
    async def start(self, req: ConversionRequest) -> None: ...
    async def poll(self, req: ConversionRequest) -> ConversionResult: ...
    async def cancel(self, req: ConversionRequest) -> None: ...


def result_from_report(report: dict[str, Any] | None, storage_uri: str) -> ConversionResult:
    if not report:
        return ConversionResult("Failed", reason="the conversion ended without a report")
    if report.get("passed"):
        sha = report.get("onnxSha256") or (report.get("sha256") or {}).get("onnx", "")
        return ConversionResult("Succeeded", storage_uri, str(sha or ""), report=report)
    return ConversionResult("Failed", reason=str(report.get("reason") or "parity proof failed"), report=report,
                            # the converter's exit 4: the artifact or sample could not be fetched
                            retryable=report.get("error") == "fetch-failed")


class LocalExecutor:
    """Runs conversions as subprocesses writing under `store/NAMESPACE/SLUG/`."""

    def __init__(self, store: Path, python: str = sys.executable) -> None:
        self.store = store
        self.python = python

    def _dir(self, req: ConversionRequest) -> Path:
        return self.store / req.namespace / req.slug

    async def start(self, req: ConversionRequest) -> None:
        out = self._dir(req)
        if (out / "report.json").exists() or _pid_alive(out / ".pid"):
            return
        out.mkdir(parents=True, exist_ok=True)
        env = os.environ | req.env(str(out)) | {"SERIN_TERMINATION_LOG": str(out / "termination-log")}
        with (out / "job.log").open("ab") as log:
            # A session of its own: the conversion outlives an operator restart and reports
            # through its files, which the next operator reads.
            proc = subprocess.Popen([self.python, "-m", "serin.converters.job"], env=env,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        (out / ".pid").write_text(str(proc.pid))

    async def poll(self, req: ConversionRequest) -> ConversionResult:
        out = self._dir(req)
        report_path = out / "report.json"
        if _pid_alive(out / ".pid"):
            return ConversionResult("Running")
        if report_path.exists():
            try:
                report = json.loads(report_path.read_text())
            except ValueError:
                report = None
            return result_from_report(report, out.as_uri())
        if (out / ".pid").exists():
            # It ran and died without a report (a native crash, an OOM kill): say why, do not retry
            # blindly; the same bytes would crash the same way.
            last = _last_line(out / "job.log")
            return ConversionResult("Failed", reason=f"the conversion process exited without a report: {last}")
        return ConversionResult("Missing")

    async def cancel(self, req: ConversionRequest) -> None:
        pid = _read_pid(self._dir(req) / ".pid")
        if pid and _pid_alive(self._dir(req) / ".pid"):
            os.killpg(pid, signal.SIGTERM)


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return lines[-1][:300] if lines else "no output"


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


def _pid_alive(path: Path) -> bool:
    pid = _read_pid(path)
    if pid is None:
        return False
    try:
        # Reap it if it is our child that already exited (else it stays a zombie and looks alive).
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
