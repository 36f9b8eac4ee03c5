"""The local platform's processes beyond the control plane: the KServe stand-in with its data plane,
and the operator. One place builds their command lines, for `serin dev` and the tests alike."""

from __future__ import annotations

import sys
from pathlib import Path

from serin.local.controlplane import _Proc


def standin_argv(kubeconfig: Path, workdir: Path, file_sd: Path | None, namespace: str | None = None,
                 data_plane: bool = True) -> list[str]:
    argv = [sys.executable, "-m", "serin.local.kserve_standin", "--kubeconfig", str(kubeconfig),
            "--workdir", str(workdir)]
    if data_plane:
        argv.append("--data-plane")
    if file_sd is not None:
        argv += ["--file-sd", str(file_sd)]
    if namespace:
        argv += ["--namespace", namespace]
    return argv


def operator_argv(prometheus_url: str, store: Path | str, namespace: str | None = None,
                  metrics_port: int = 0, executor: str = "local") -> list[str]:
    """`serin operator` as the local stack runs it. Its executor is asked for by name: the operator's
    own default is `job` (a converter unpickles models: not in the operator's process unless asked),
    and the local stack has no kubelet to run Jobs, so conversions are subprocesses writing to `store`."""
    argv = [sys.executable, "-m", "serin.operator.cli", "operator", "--executor", executor,
            "--prometheus-url", prometheus_url, "--model-store", str(store)]
    if namespace:
        argv += ["--namespace", namespace]
    if metrics_port:
        argv += ["--metrics-port", str(metrics_port)]
    return argv


def process(name: str, argv: list[str], log: Path) -> _Proc:
    log.parent.mkdir(parents=True, exist_ok=True)
    return _Proc(name, argv, log)
