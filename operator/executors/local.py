"""The `local` conversion executor: `python -m serin.converters.job` as a subprocess of its own
session, writing under `store/NAMESPACE/SLUG/` (serin dev and the tests). The converter's summary
lands in summary.json there, the document the Job executor reads from a Pod's termination message."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from serin.operator.executors.base import REQUEST_ENV, ConversionRequest, result_from_summary
from serin.operator.observations import ConversionResult, ConversionState

SUMMARY_FILE = "summary.json"


class LocalExecutor:
    """Runs conversions as subprocesses writing under `store/NAMESPACE/SLUG/`."""

    def __init__(self, store: Path, python: str = sys.executable, poll_seconds: float = 1.0) -> None:
        self.store = store
        self.python = python
        # A subprocess's end is seen by polling its files (it outlives the operator that started
        # it, so no child watcher can report it); only running conversions are polled.
        self._poll_seconds = poll_seconds

    @property
    def poll_seconds(self) -> float | None:
        return self._poll_seconds

    async def active(self) -> set[tuple[str, str]]:
        if not self.store.is_dir():
            return set()
        # Alive, as poll() sees it: a converter that wrote its report but has not exited yet
        # still holds its memory and its slot.
        return {(ns.name, d.name) for ns in self.store.iterdir() if ns.is_dir() for d in ns.iterdir()
                if _pid_alive(d / ".pid")}

    def _dir(self, req: ConversionRequest) -> Path:
        return self.store / req.namespace / req.slug

    async def start(self, req: ConversionRequest) -> None:
        out = self._dir(req)
        if (out / SUMMARY_FILE).exists() or _pid_alive(out / ".pid"):
            return
        out.mkdir(parents=True, exist_ok=True)
        env = os.environ | {REQUEST_ENV: req.document(str(out)), "SERIN_TERMINATION_LOG": str(out / SUMMARY_FILE)}
        with (out / "job.log").open("ab") as log:
            # A session of its own: the conversion outlives an operator restart and reports
            # through its files, which the next operator reads.
            proc = subprocess.Popen([self.python, "-m", "serin.converters.job"], env=env,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        (out / ".pid").write_text(str(proc.pid))

    async def poll(self, req: ConversionRequest) -> ConversionResult:
        out = self._dir(req)
        summary_path = out / SUMMARY_FILE
        if _pid_alive(out / ".pid"):
            return ConversionResult(ConversionState.RUNNING)
        if summary_path.exists():
            try:
                summary = json.loads(summary_path.read_text())
            except ValueError:
                summary = None
            return result_from_summary(summary, out.as_uri())
        if (out / ".pid").exists():
            # It ran and died without a report (a native crash, an OOM kill): say why, do not retry
            # blindly; the same bytes would crash the same way.
            last = _last_line(out / "job.log")
            return ConversionResult(ConversionState.FAILED,
                                    reason=f"the conversion process exited without a report: {last}")
        return ConversionResult(ConversionState.MISSING)

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
