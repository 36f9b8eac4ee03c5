"""Conversion executors: where `python -m serin.converters.job` runs for a new version.

The operator process never imports the converters (they unpickle models, which runs arbitrary
code). Every executor gets the same ConversionRequest, hands the converter the same serialized
request, and reads back the same summary document into a ConversionResult, so the decision never
knows which one ran:

- `job` (job.py): a Kubernetes Job with the converter image and no API credentials: the default;
- `local` (local.py): a subprocess writing under a directory (serin dev, tests), only when asked for.
"""

from __future__ import annotations

import os
from pathlib import Path

from kubernetes_asyncio import client
from serin.operator.executors.base import ConversionExecutor, ConversionRequest, result_from_summary
from serin.operator.executors.job import JobExecutor, JobSettings, parse_store_s3
from serin.operator.executors.local import LocalExecutor
from serin.operator.executors.queue import ConversionQueue

__all__ = ["DEFAULT_KIND", "ConversionExecutor", "ConversionQueue", "ConversionRequest", "JobExecutor", "JobSettings",
           "LocalExecutor", "default_limit", "from_environment", "kind_from_environment", "result_from_summary"]

# A converter unpickles the model it is given, which runs whatever code the pickle holds. The local
# executor runs it as a child of the operator, in the operator's Pod with its credentials; a Job
# runs it in a Pod of its own without any. So nothing but an explicit `local` gets the former.
DEFAULT_KIND = "job"


def kind_from_environment() -> str:
    """The executor SERIN_EXECUTOR names (`serin operator --executor` sets it), `job` when unset."""
    return os.environ.get("SERIN_EXECUTOR") or DEFAULT_KIND


def from_environment(api: client.ApiClient, kind: str, namespaces: tuple[str, ...] = ()) -> ConversionExecutor:
    """The executor `serin operator --executor KIND` asked for, configured as the chart sets it."""
    poll = float(os.environ.get("SERIN_TICK_SECONDS", "1"))
    if kind == "job":
        store = os.environ.get("SERIN_MODEL_STORE", "pvc://serin-models")
        if store.startswith("s3://") and not os.environ.get("SERIN_MODEL_STORE_CONTAINER"):
            # Without it KServe picks a storage initializer by URI: maybe its own, with the node's identity.
            raise ValueError("SERIN_MODEL_STORE is an s3:// store but SERIN_MODEL_STORE_CONTAINER (the "
                             "ClusterStorageContainer predictors fetch it with) is not set")
        return JobExecutor(api, JobSettings(
            image=os.environ["SERIN_CONVERTER_IMAGE"],
            service_account=os.environ.get("SERIN_CONVERSION_SERVICE_ACCOUNT", "serin-converter"),
            model_store=store,
            store_s3=parse_store_s3(os.environ.get("SERIN_MODEL_STORE_S3", ""))), namespaces, poll_seconds=2 * poll)
    if kind == "local":
        return LocalExecutor(Path(os.environ.get("SERIN_MODEL_STORE", Path.home() / ".serin" / "store")),
                             poll_seconds=poll)
    raise ValueError(f"unknown conversion executor {kind!r} (local or job)")


def default_limit(kind: str) -> int:
    """Conversions at once by default: locally one per core (a converter is one busy process); in a
    cluster 4 Jobs (each asks for half a core and 1 GiB, and may use 2 cores and 4 GiB)."""
    return 4 if kind == "job" else max(1, os.cpu_count() or 1)
