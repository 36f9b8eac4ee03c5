"""The stand-in's data plane: what plays Knative's pods and ingress for each revision.

One small interface (as Flagger's router.go keeps traffic behind SetRoutes), two implementations:
`ControlPlaneOnly` here (a revision is ready when its model directory is servable; nothing runs)
and `serin.local.runtimes.RuntimeProcesses` (a real Serin runtime per revision plus a router per
InferenceService). The stand-in's watcher drives either one and never looks inside.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from serin.local.knative import READY, Readiness
from serin.local.kserve_status import Endpoints


@dataclass(frozen=True)
class IsvcRef:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class DataPlane(Protocol):
    async def start(self, isvc: IsvcRef, revision: str, storage_uri: str,
                    env: Mapping[str, str] | None = None) -> Readiness:
        """Brings a new revision up with the predictor container's environment (`env`, resolved);
        returns once it is ready or has failed (never Unknown)."""
        ...

    async def stop(self, isvc: IsvcRef, revision: str) -> None:
        """The revision is no longer referenced by traffic and is not the latest."""
        ...

    async def set_routes(self, isvc: IsvcRef, routes: dict[str, int], tags: dict[str, str] | None = None) -> None:
        """Serve the InferenceService's requests by these percentages (revision → percent);
        `tags` (tag → revision) are the Knative traffic tags, `prev` and maybe `latest`."""
        ...

    def endpoints(self, isvc: IsvcRef) -> Endpoints | None:
        """The URLs to publish in status; None: KServe's default hostnames."""
        ...

    async def forget(self, isvc: IsvcRef) -> None:
        """The InferenceService is gone: stop everything it had."""
        ...

    async def close(self) -> None: ...


def model_dir(storage_uri: str) -> Path | None:
    """The local directory behind a file:// storageUri, None for any other scheme."""
    parsed = urlparse(storage_uri)
    if parsed.scheme != "file":
        return None
    return Path(unquote(parsed.path))


def check_model_dir(storage_uri: str) -> Readiness:
    """What KServe's storage initializer would find. Reasons and messages follow what a failing
    storage-initializer container surfaces through the Knative revision (exit code 1)."""
    directory = model_dir(storage_uri)
    if directory is None:
        # Nothing here can download s3:// or gs://: the control-plane stand-in trusts them.
        return READY
    if not directory.is_dir():
        return Readiness("False", "ExitCode1", f"storage initializer: {directory} does not exist")
    if not (directory / "model.onnx").is_file():
        return Readiness("False", "ExitCode1", f"storage initializer: {directory} has no model.onnx")
    return READY


class ControlPlaneOnly:
    """No processes: a revision is ready when its model directory is servable."""

    async def start(self, isvc: IsvcRef, revision: str, storage_uri: str,
                    env: Mapping[str, str] | None = None) -> Readiness:
        return check_model_dir(storage_uri)

    async def stop(self, isvc: IsvcRef, revision: str) -> None:
        return None

    async def set_routes(self, isvc: IsvcRef, routes: dict[str, int], tags: dict[str, str] | None = None) -> None:
        return None

    def endpoints(self, isvc: IsvcRef) -> Endpoints | None:
        return None

    async def forget(self, isvc: IsvcRef) -> None:
        return None

    async def close(self) -> None:
        return None
