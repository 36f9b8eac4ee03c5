"""What every conversion executor shares: the request, its one serialized form, and reading the
converter's summary back.

The converter receives the request as one JSON document in SERIN_CONVERSION_REQUEST (shaped as the
Model's spec.source and spec.conversion, plus `out`), and answers with one summary document: the
Job's termination message, or the local executor's summary.json. Both are parsed here, once."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from serin.operator.names import FILE_NAME_MAX, bounded
from serin.operator.observations import ConversionResult, ConversionState
from serin.operator.spec import ConversionSpec, S3Source, SourceSpec
from serin.operator.status import parse_conversion_summary

REQUEST_ENV = "SERIN_CONVERSION_REQUEST"
# The converter's error kinds that a later attempt may not meet (exit 4 and 5): the sources or the
# model store could not be reached, were busy or failed.
RETRYABLE_ERRORS = frozenset({"fetch-failed", "store-unavailable"})


@dataclass(frozen=True)
class ConversionRequest:
    namespace: str
    name: str
    uid: str
    generation: int
    versionKey: str
    attempt: int
    source: SourceSpec
    conversion: ConversionSpec
    # When its version was admitted (status.pending.startedAt): the conversion queue's order.
    requested_at: str = ""

    @property
    def slug(self) -> str:
        # Each retry writes to a place of its own: a failed attempt's report never answers for the next.
        # It names a directory of the model store: at most a file name's 255 bytes (a Model's name
        # may have 253), cut with a hash of the whole when longer (names.py).
        retry = f"-a{self.attempt}" if self.attempt > 1 else ""
        return bounded(f"{self.name}-g{self.generation}-{self.versionKey[:8]}{retry}", FILE_NAME_MAX)

    def document(self, out: str, out_s3: S3Source | None = None) -> str:
        """The request as the converter reads it (serin.converters.job.parse_request). `out`: a
        directory, or the version's place in the S3 store (s3://…) with the store's settings."""
        source = _present(asdict(self.source))
        tolerance = asdict(self.conversion.tolerance)
        doc: dict[str, Any] = {"source": source,
                               "conversion": {"targetOpset": self.conversion.targetOpset, "tolerance": tolerance},
                               "out": out}
        if out_s3 is not None:
            # secretName is the operator's (the publish step's keys come from that Secret).
            doc["outS3"] = _present({**asdict(out_s3), "secretName": None})
        return json.dumps(doc, sort_keys=True)


def _present(doc: dict[str, Any]) -> dict[str, Any]:
    """The fields that are set, nested objects included: the converter reads an absent field as
    its default, and a null as a mistake."""
    return {k: _present(v) if isinstance(v, dict) else v for k, v in doc.items() if v is not None}


class ConversionExecutor(Protocol):
    async def start(self, req: ConversionRequest) -> None: ...
    async def poll(self, req: ConversionRequest) -> ConversionResult: ...
    async def cancel(self, req: ConversionRequest) -> None: ...

    async def active(self) -> set[tuple[str, str]]:
        """(namespace, request slug) of every conversion running now, whoever started it."""
        ...

    @property
    def poll_seconds(self) -> float | None:
        """How often a running conversion is polled (its end is not watched), None: never."""
        ...


def result_from_summary(doc: Any, storage_uri: str) -> ConversionResult:
    """The converter's summary document → the result the decision reads."""
    if not doc:
        return ConversionResult(ConversionState.FAILED, reason="the conversion ended without a report")
    summary = parse_conversion_summary(doc)
    if summary is None:
        return ConversionResult(ConversionState.FAILED, reason="the conversion's report is malformed")
    if summary.passed:
        return ConversionResult(ConversionState.SUCCEEDED, storage_uri, summary.onnxSha256 or "", summary=summary)
    return ConversionResult(ConversionState.FAILED, reason=summary.reason or "parity proof failed", summary=summary,
                            # the converter's exit 4: the artifact or sample could not be fetched
                            retryable=summary.error in RETRYABLE_ERRORS)
