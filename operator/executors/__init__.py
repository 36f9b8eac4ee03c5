"""Conversion executors: where `python -m serin.converters.job` runs for a new version.

The operator process never imports the converters (they unpickle models, which runs arbitrary
code). Every executor gets the same ConversionRequest, hands the converter the same serialized
request, and reads back the same summary document into a ConversionResult, so the decision never
knows which one ran:

- `local` (local.py): a subprocess writing under a directory (serin dev, tests);
- `job` (job.py): a Kubernetes Job with the converter image and no API credentials.
"""

from __future__ import annotations

import os
from pathlib import Path

from kubernetes_asyncio import client
from serin.operator.executors.base import ConversionExecutor, ConversionRequest, result_from_summary
from serin.operator.executors.job import JobExecutor, JobSettings
from serin.operator.executors.local import LocalExecutor

__all__ = ["ConversionExecutor", "ConversionRequest", "JobExecutor", "JobSettings", "LocalExecutor",
           "from_environment", "result_from_summary"]


def from_environment(api: client.ApiClient, kind: str) -> ConversionExecutor:
    """The executor `serin operator --executor KIND` asked for, configured as the chart sets it."""
    if kind == "job":
        return JobExecutor(api, JobSettings(
            image=os.environ["SERIN_CONVERTER_IMAGE"],
            service_account=os.environ.get("SERIN_CONVERSION_SERVICE_ACCOUNT", "serin-converter"),
            model_store=os.environ.get("SERIN_MODEL_STORE", "pvc://serin-models")))
    if kind == "local":
        return LocalExecutor(Path(os.environ.get("SERIN_MODEL_STORE", Path.home() / ".serin" / "store")))
    raise ValueError(f"unknown conversion executor {kind!r} (local or job)")
