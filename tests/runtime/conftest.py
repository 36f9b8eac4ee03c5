"""Fixtures for the runtime tests: model directories built with skl2onnx, and real runtime
server processes on loopback ports (started as subprocesses, ready when /v2/health/ready says
so, stopped with SIGTERM)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import model_factory as mf

PYTHON = sys.executable
SERIN = str(Path(PYTHON).parent / "serin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Server:
    port: int
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def request(self, method: str, path: str, body: Any = None, *,
                headers: dict[str, str] | None = None, timeout: float = 30) -> Reply:
        raw = body if isinstance(body, bytes | None | Iterator) else json.dumps(body).encode()
        chunked = (headers or {}).get("Transfer-Encoding") == "chunked"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=raw, headers=headers or {}, encode_chunked=chunked)
            resp = conn.getresponse()
            return Reply(resp.status, resp.read(), dict(resp.getheaders()))
        finally:
            conn.close()

    def post(self, path: str, body: Any) -> Reply:
        return self.request("POST", path, body)

    def infer(self, inputs: list[dict[str, Any]], **extra: Any) -> Reply:
        return self.post(f"/v2/models/{self.name}/infer", {"inputs": inputs, **extra})

    def predict(self, instances: Any) -> Reply:
        return self.post(f"/v1/models/{self.name}:predict", {"instances": instances})

    def metrics(self) -> str:
        reply = self.request("GET", "/metrics")
        assert reply.status == 200, reply.body
        return reply.body.decode()

    def alive(self) -> bool:
        try:
            return self.proc.poll() is None and self.request(
                "GET", "/v2/health/ready", timeout=5).status == 200
        except OSError:
            return False

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(argv: list[str], name: str, port: int, log: Path,
                 env: dict[str, str] | None = None, timeout: float = 60) -> Server:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})
    server = Server(port, name, proc, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.logs()}")
        try:
            if server.request("GET", "/v2/health/ready", timeout=2).status == 200:
                return server
        except OSError:
            pass
        time.sleep(0.1)
    stop_server(server)
    raise RuntimeError(f"server not ready after {timeout}s:\n{server.logs()}")


def stop_server(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


def serve(tmp: Path, model_dir: Path, name: str, *extra: str,
          env: dict[str, str] | None = None) -> Server:
    """`serin serve` (the local spelling)."""
    port = free_port()
    argv = [SERIN, "serve", "--model-dir", str(model_dir), "--name", name, "--port", str(port),
            "--host", "127.0.0.1", *extra]
    return start_server(argv, name, port, tmp / f"{name}-{port}.log", env)


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "numeric": mf.numeric_classifier(root / "numeric"),
        "mixed": mf.mixed_classifier(root / "mixed"),
        "regressor": mf.regressor(root / "regressor"),
        "noprofile": mf.numeric_classifier(root / "noprofile", with_profile=False),
        "nan": mf.numeric_classifier(root / "nan", allow_nan=True),
    }


@pytest.fixture(scope="session")
def server(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The numeric classifier started the way KServe starts custom runtimes."""
    port = free_port()
    argv = [PYTHON, "-m", "serin.runtime", "--model_name", "iris", "--model_dir",
            str(models["numeric"]), "--http_port", str(port), "--grpc_port", str(free_port()),
            "--host", "127.0.0.1", "--max-body-bytes", "1000000"]
    srv = start_server(argv, "iris", port, tmp_path_factory.mktemp("logs") / "iris.log",
                       env={"K_REVISION": "iris-predictor-00001", "SERIN_REVISION": "ignored"})
    yield srv
    stop_server(srv)


@pytest.fixture(scope="session")
def mixed_server(models: dict[str, Path],
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = serve(tmp_path_factory.mktemp("logs"), models["mixed"], "mixed", "--revision", "r2")
    yield srv
    stop_server(srv)
