"""The stand-in's real data plane: one Serin runtime process per revision (what Knative's pod
would run, with K_REVISION set as Knative sets it), a router per InferenceService, and a
Prometheus file_sd file listing every ready runtime's /metrics endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from serin.local.controlplane import free_port
from serin.local.dataplane import IsvcRef, check_model_dir, model_dir
from serin.local.knative import READY, Readiness
from serin.local.kserve_status import Endpoints
from serin.local.router import Router


@dataclass
class _Runtime:
    isvc: IsvcRef
    revision: str
    port: int
    proc: asyncio.subprocess.Process
    log: Path
    ready: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tail(self) -> str:
        """The log's last line (a traceback ends with the exception) and where the rest is."""
        try:
            last = self.log.read_text(errors="replace").strip().splitlines()[-1:]
        except OSError:
            last = []
        return f"{last[0] if last else 'no output'} (log: {self.log})"


class RuntimeProcesses:
    def __init__(self, workdir: Path, file_sd: Path | None = None, python: str = sys.executable,
                 ready_timeout: float = 180.0, runtime_args: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.file_sd = file_sd
        self.python = python
        self.ready_timeout = ready_timeout
        self.runtime_args = runtime_args
        self._runtimes: dict[tuple[IsvcRef, str], _Runtime] = {}
        self._routers: dict[IsvcRef, Router] = {}
        self._router_lock = asyncio.Lock()  # a revision start and a route update may race to create it
        workdir.mkdir(parents=True, exist_ok=True)
        self._write_file_sd()

    # -- DataPlane --------------------------------------------------------------------------

    async def start(self, isvc: IsvcRef, revision: str, storage_uri: str,
                    env: Mapping[str, str] | None = None) -> Readiness:
        directory = model_dir(storage_uri)
        if directory is None:
            return Readiness("False", "ExitCode1", f"storage initializer: {storage_uri}: only file:// "
                             "models can be served locally")
        found = check_model_dir(storage_uri)
        if not found.ready:
            return found
        await self._router(isvc)
        if (isvc, revision) in self._runtimes:
            await self.stop(isvc, revision)
        rt = await self._spawn(isvc, revision, directory, env or {})
        self._runtimes[(isvc, revision)] = rt
        state = await self._wait_ready(rt)
        if state.ready:
            rt.ready = True
            self._write_file_sd()
        else:
            await self.stop(isvc, revision)
        return state

    async def stop(self, isvc: IsvcRef, revision: str) -> None:
        rt = self._runtimes.pop((isvc, revision), None)
        if rt is None:
            return
        self._write_file_sd()
        await _terminate(rt.proc)

    async def set_routes(self, isvc: IsvcRef, routes: dict[str, int], tags: dict[str, str] | None = None) -> None:
        router = await self._router(isvc)
        backends = {r.revision: r.url for (ref, _), r in self._runtimes.items() if ref == isvc and r.ready}
        router.set_routes(routes, backends, tags)

    def endpoints(self, isvc: IsvcRef) -> Endpoints | None:
        router = self._routers.get(isvc)
        if router is None:
            return None
        return Endpoints(router.url, router.url, router.url)

    async def forget(self, isvc: IsvcRef) -> None:
        for ref, revision in [k for k in self._runtimes if k[0] == isvc]:
            await self.stop(ref, revision)
        router = self._routers.pop(isvc, None)
        if router:
            await router.stop()

    async def close(self) -> None:
        for isvc in {k[0] for k in self._runtimes} | set(self._routers):
            await self.forget(isvc)

    # -- internals --------------------------------------------------------------------------

    async def _router(self, isvc: IsvcRef) -> Router:
        # One port per InferenceService for the stand-in's lifetime: status.url stays put while
        # revisions come and go behind it.
        async with self._router_lock:
            router = self._routers.get(isvc)
            if router is None:
                router = Router(str(isvc))
                await router.start()
                self._routers[isvc] = router
            return router

    async def _spawn(self, isvc: IsvcRef, revision: str, directory: Path, container_env: Mapping[str, str]) -> _Runtime:
        port = free_port()
        log = self.workdir / f"{isvc.namespace}_{revision}.log"
        # The container's environment as a kubelet would give it, then what Knative adds.
        env = {**os.environ, **container_env, "K_REVISION": revision}
        argv = [self.python, "-m", "serin.runtime", "--model_name", isvc.name, "--model_dir", str(directory),
                "--http_port", str(port), "--host", "127.0.0.1", *self.runtime_args]
        with log.open("ab") as out:
            # A session of its own so that stopping it also stops its worker processes.
            proc = await asyncio.create_subprocess_exec(*argv, env=env, stdout=out, stderr=asyncio.subprocess.STDOUT,
                                                        start_new_session=True)
        return _Runtime(isvc, revision, port, proc, log)

    async def _wait_ready(self, rt: _Runtime) -> Readiness:
        """Knative's readiness probe: the revision is ready when /v2/health/ready answers 200."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ready_timeout
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while loop.time() < deadline:
                if rt.proc.returncode is not None:
                    return Readiness("False", f"ExitCode{rt.proc.returncode}", rt.tail())
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(rt.url + "/v2/health/ready") as resp:
                        if resp.status == 200:
                            return READY
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(rt.proc.wait(), 0.2)
        return Readiness("False", "ProgressDeadlineExceeded",
                         f"not ready within {self.ready_timeout:.0f}s: {rt.tail()}")

    def _write_file_sd(self) -> None:
        if self.file_sd is None:
            return
        groups = [{"targets": [f"127.0.0.1:{rt.port}"],
                   "labels": {"namespace": rt.isvc.namespace, "isvc": rt.isvc.name, "revision": rt.revision}}
                  for rt in self._runtimes.values() if rt.ready]
        self.file_sd.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.file_sd.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups, indent=1))
        tmp.replace(self.file_sd)  # Prometheus must never read a half-written file


async def _terminate(proc: asyncio.subprocess.Process, grace: float = 10.0) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
