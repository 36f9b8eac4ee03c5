"""Payload capture: a sampled share of the answered requests (inputs, outputs, prediction id,
revision, time) and the ground truth sent back for them, written in batches to object storage or a
directory, under one prefix per Model, revision, kind and hour:

    {prefix}/{namespace}/{model}/{revision}/predictions/{YYYY-MM-DD}/{HH}/{ns}-{worker}.jsonl.gz
    {prefix}/{namespace}/{model}/{revision}/truth/{YYYY-MM-DD}/{HH}/{ns}-{worker}.jsonl.gz

A prediction record holds one request (its rows as lists per input and output); a truth record the
id and truth the feedback endpoint took; they join on `id` (export.py). Gzipped JSON lines rather
than Parquet: the runtime image has no pyarrow (40 MB), every record is written as it comes with
no schema to agree across the inputs of a Model's versions, and pandas reads them as they are
(`pd.read_json(path, lines=True)`); `serin capture export` writes the joined table as Parquet or CSV.

Capture never blocks or fails an answer: the request thread only samples and appends a reference
to a bounded queue (O(1)); a thread of its own serialises and writes. A full queue (the store is
slow or down) drops the newest rows and counts them, as does a write that fails; the remaining
rows are written at shutdown (uvicorn drains requests first), within a bound.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import numpy as np
import orjson

log = logging.getLogger("serin.capture")

CAPTURE_ENV = "SERIN_CAPTURE"  # the settings, one JSON object (CaptureSettings.parse)
PREDICTIONS, TRUTH = "predictions", "truth"
DROP_QUEUE_FULL, DROP_WRITE_FAILED, DROP_UNSERIALISABLE = "queue_full", "write_failed", "unserialisable"
DROP_TOO_LARGE, DROP_SHUTDOWN = "too_large", "shutdown"


@dataclass(frozen=True)
class CaptureSettings:
    """Where and how much (the Model's spec.serving.capture, with the operator's names added)."""

    share: float  # of requests, 0 < share <= 1
    uri: str  # s3://bucket[/prefix], file:///dir or a directory
    namespace: str = "default"
    model: str = "model"
    revision: str = "local"
    endpoint: str | None = None  # S3 only, as spec.source.s3
    region: str | None = None
    addressing: str | None = None
    verify_tls: bool = True
    retention_seconds: float = 30 * 24 * 3600.0
    flush_seconds: float = 30.0  # a batch is written at least this often while rows wait
    batch_rows: int = 20_000  # or as soon as it holds this many rows
    # The bounds on what waits or is being written: rows beyond either are dropped and counted.
    max_pending_rows: int = 100_000
    max_pending_bytes: int = 256 << 20

    @classmethod
    def parse(cls, text: str, model: str, revision: str) -> CaptureSettings:
        """The JSON of $SERIN_CAPTURE; raises ValueError naming the field."""
        doc = json.loads(text)
        if not isinstance(doc, dict):
            raise ValueError(f"{CAPTURE_ENV} must be a JSON object")
        share = float(doc.get("share", 0))
        if not 0 < share <= 1:
            raise ValueError(f"{CAPTURE_ENV}: share must be above 0 and at most 1, not {share}")
        uri = str(doc.get("uri") or "")
        if not uri:
            raise ValueError(f"{CAPTURE_ENV}: uri is required")
        s3 = doc.get("s3") or {}
        return cls(share=share, uri=uri, namespace=str(doc.get("namespace") or "default"), model=model,
                   revision=revision, endpoint=s3.get("endpoint") or None, region=s3.get("region") or None,
                   addressing=s3.get("addressing") or None, verify_tls=bool(s3.get("verifyTls", True)),
                   retention_seconds=float(doc.get("retentionSeconds", cls.retention_seconds)),
                   flush_seconds=float(doc.get("flushSeconds", cls.flush_seconds)))

    @property
    def prefix(self) -> str:
        """The Model's revision's prefix inside the sink."""
        return f"{self.namespace}/{self.model}/{self.revision}"

    @property
    def model_prefix(self) -> str:
        """Every revision of the Model (the trailing / keeps `fraud` from matching `fraud2`)."""
        return f"{self.namespace}/{self.model}/"


class Sink(Protocol):
    def put(self, key: str, data: bytes) -> None: ...
    def expire(self, prefix: str, before: float) -> int:
        """Deletes the objects under `prefix` written before `before` (unix seconds); how many."""
        ...


@dataclass
class DirectorySink:
    root: Path

    def put(self, key: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".part")
        partial.write_bytes(data)
        os.replace(partial, path)

    def expire(self, prefix: str, before: float) -> int:
        gone = 0
        base = self.root / prefix
        for path in sorted(base.rglob("*.jsonl.gz")) if base.is_dir() else ():
            if path.stat().st_mtime < before:
                path.unlink(missing_ok=True)
                gone += 1
                for parent in path.parents:  # the hour and day folders it leaves empty
                    if parent == base or not parent.is_relative_to(base):
                        break
                    try:
                        parent.rmdir()
                    except OSError:
                        break
        return gone


@dataclass
class S3Sink:
    bucket: str
    prefix: str
    client: Any  # boto3 S3 client

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data,
                               ContentType="application/x-ndjson", ContentEncoding="gzip")

    def expire(self, prefix: str, before: float) -> int:
        """Lists the prefix (a bucket lifecycle rule on it does the same job at no cost to the
        runtime: prefer one for months of captures) and deletes what is older."""
        old: list[dict[str, str]] = []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._key(prefix.rstrip("/")) + "/")
        for page in pages:
            old += [{"Key": o["Key"]} for o in page.get("Contents", []) if o["LastModified"].timestamp() < before]
        gone = 0
        for start in range(0, len(old), 1000):  # DeleteObjects takes at most 1000 keys
            chunk = old[start:start + 1000]
            try:
                answer = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True})
                failed = {e["Key"] for e in answer.get("Errors", [])}
            except Exception as exc:  # some S3 servers refuse the batch form's checksum: one by one
                log.info("capture: DeleteObjects refused (%s): deleting one object at a time", exc)
                failed = set()
                for o in chunk:
                    self.client.delete_object(Bucket=self.bucket, Key=o["Key"])
            gone += len(chunk) - len(failed)
        return gone

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key


def sink_for(settings: CaptureSettings, env: Mapping[str, str] = os.environ) -> Sink:
    """The sink `settings.uri` names: S3 (keys from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, else
    unsigned, never the default credential chain), or a directory."""
    if settings.uri.startswith("s3://"):
        # The conversion's S3 client (its signing, and its refusal of the default chain), with
        # shorter timeouts: a capture write waits for no request, but should not hold its batch long.
        from serin.converters import s3

        bucket, _, prefix = settings.uri[len("s3://"):].partition("/")
        key_id, secret = env.get("AWS_ACCESS_KEY_ID", "").strip(), env.get("AWS_SECRET_ACCESS_KEY", "").strip()
        keys = s3.Keys(key_id, secret, (env.get("AWS_SESSION_TOKEN") or "").strip() or None) \
            if key_id and secret else None
        where = s3.S3Settings(settings.endpoint, settings.region, settings.addressing, settings.verify_tls)
        return S3Sink(bucket, prefix.strip("/"), s3.client(where, keys, connect_timeout=5, read_timeout=30))
    root = Path(urlparse(settings.uri).path) if settings.uri.startswith("file://") else Path(settings.uri)
    return DirectorySink(root)


class CaptureMetrics(Protocol):
    def captured(self, kind: str, rows: int) -> None: ...
    def dropped(self, reason: str, rows: int) -> None: ...


@dataclass
class _Pending:
    kind: str
    at: float
    rows: int
    size: int  # bytes of its arrays: what it holds in memory until written
    record: dict[str, Any]


def _nbytes(arrays: Mapping[str, Any]) -> int:
    return sum(int(getattr(a, "nbytes", 64)) for a in arrays.values())


@dataclass
class Capture:
    settings: CaptureSettings
    sink: Sink
    metrics: CaptureMetrics | None = None
    clock: Callable[[], float] = time.time
    chance: Callable[[], float] = random.random
    worker: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    _queue: deque[_Pending] = field(default_factory=deque)
    # Rows and bytes held: queued, or taken by the writer and not yet written (both count against
    # the bounds, so a slow write cannot let a second full queue build up behind it).
    _held_rows: int = 0
    _held_bytes: int = 0
    _waiting_rows: int = 0  # of those, still in the queue
    _lock: threading.Condition = field(default_factory=threading.Condition)
    _stopping: bool = False
    _thread: threading.Thread | None = None
    _expiry: threading.Thread | None = None
    _warned: bool = False

    # -- the request path: O(1), never raises, never waits on the sink ----------------------------

    def offer_prediction(self, feeds: Mapping[str, Any], results: Mapping[str, Any], rows: int,
                         prediction_id: str | None) -> None:
        """A request answered 200: kept with probability `share` (its arrays by reference: neither
        the decoder nor onnxruntime changes them after the answer)."""
        try:
            if rows <= 0 or self.chance() >= self.settings.share:
                return
            self._put(_Pending(PREDICTIONS, self.clock(), rows, _nbytes(feeds) + _nbytes(results), {
                "id": prediction_id, "revision": self.settings.revision, "rows": rows,
                "inputs": dict(feeds), "outputs": dict(results)}))
        except Exception as exc:  # capture must never cost an answer
            self._warn(exc)

    def offer_truth(self, prediction_id: Any, truth: Any, predicted_revision: str, rows: int) -> None:
        """Ground truth the feedback endpoint took, with the revision that made the prediction (the
        object's prefix is this replica's). A single row's truth sent as a bare value is stored as
        a list of one, as every other truth is."""
        try:
            if rows == 1 and not isinstance(truth, list):
                truth = [truth]
            self._put(_Pending(TRUTH, self.clock(), rows, 64 * max(rows, 1), {
                "id": prediction_id, "revision": predicted_revision, "rows": rows, "truth": truth}))
        except Exception as exc:
            self._warn(exc)

    def _put(self, item: _Pending) -> None:
        reason = None
        with self._lock:
            if self._stopping:
                reason = DROP_QUEUE_FULL
            elif item.rows > self.settings.max_pending_rows or item.size > self.settings.max_pending_bytes:
                reason = DROP_TOO_LARGE  # would never fit: not a sign of a slow store
            elif (self._held_rows + item.rows > self.settings.max_pending_rows
                  or self._held_bytes + item.size > self.settings.max_pending_bytes):
                reason = DROP_QUEUE_FULL
            else:
                self._queue.append(item)
                self._held_rows += item.rows
                self._held_bytes += item.size
                self._waiting_rows += item.rows
                if self._waiting_rows >= self.settings.batch_rows:
                    self._lock.notify()
        if reason is not None and self.metrics is not None:
            self.metrics.dropped(reason, item.rows)

    def _warn(self, exc: Exception) -> None:
        if not self._warned:
            self._warned = True
            log.warning("capture: a request could not be captured (%s); answers are unaffected", exc, exc_info=exc)

    # -- the writer thread ---------------------------------------------------------------------

    def start(self) -> Capture:
        self._thread = threading.Thread(target=self._run, name="serin-capture", daemon=True)
        self._thread.start()
        # Retention on a thread of its own: listing a month of objects must not hold up writes.
        self._expiry = threading.Thread(target=self._expire_hourly, name="serin-capture-expiry", daemon=True)
        self._expiry.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Writes what waits (within `timeout`), then stops; rows offered afterwards, and rows
        still unwritten when the time is up, are dropped and counted."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                with self._lock:
                    lost = self._held_rows
                log.warning("capture: %d rows still unwritten after %.0f s at shutdown: dropped", lost, timeout)
                if self.metrics is not None and lost:
                    self.metrics.dropped(DROP_SHUTDOWN, lost)

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._stopping and self._waiting_rows < self.settings.batch_rows:
                    self._lock.wait(self.settings.flush_seconds)
                taken, self._queue = list(self._queue), deque()
                self._waiting_rows = 0
                stopping = self._stopping
            if taken:
                try:
                    self.write(taken)
                finally:
                    with self._lock:
                        self._held_rows -= sum(i.rows for i in taken)
                        self._held_bytes -= sum(i.size for i in taken)
            if stopping:
                return

    def write(self, items: list[_Pending]) -> None:
        """One object per (kind, hour) of `items`; a failed write drops its rows and counts them."""
        groups: dict[tuple[str, str], list[_Pending]] = {}
        for item in items:
            hour = time.strftime("%Y-%m-%d/%H", time.gmtime(item.at))
            groups.setdefault((item.kind, hour), []).append(item)
        for (kind, hour), group in groups.items():
            lines, rows, bad = [], 0, 0
            for item in group:
                line = _line(item)
                if line is None:
                    bad += item.rows
                    continue
                lines.append(line)
                rows += item.rows
            if bad and self.metrics is not None:
                self.metrics.dropped(DROP_UNSERIALISABLE, bad)
            if not lines:
                continue
            key = f"{self.settings.prefix}/{kind}/{hour}/{time.time_ns()}-{self.worker}.jsonl.gz"
            try:
                self.sink.put(key, gzip.compress(b"".join(lines), compresslevel=5))
            except Exception as exc:  # whatever the store says, the rows are lost: counted, logged
                log.warning("capture: %d rows not written to %s: %s", rows, key, exc)
                if self.metrics is not None:
                    self.metrics.dropped(DROP_WRITE_FAILED, rows)
                continue
            if self.metrics is not None:
                self.metrics.captured(kind, rows)

    def _expire_hourly(self) -> None:
        while True:
            self.expire()
            with self._lock:
                if self._stopping or self._lock.wait_for(lambda: self._stopping, timeout=3600):
                    return

    def expire(self) -> int:
        """The Model's objects older than the retention, deleted: every revision's, so that a
        version no longer served has its captures expire too (idempotent: every replica may)."""
        now = self.clock()
        try:
            gone = self.sink.expire(self.settings.model_prefix, now - self.settings.retention_seconds)
        except Exception as exc:
            log.warning("capture: expiring objects older than the retention failed: %s", exc)
            return 0
        if gone:
            log.info("capture: deleted %d objects older than %.0f days", gone, self.settings.retention_seconds / 86400)
        return gone


def _line(item: _Pending) -> bytes | None:
    record = {"kind": item.kind, "time": round(item.at, 6), **item.record}
    try:
        return orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE,
                            default=_plain)
    except TypeError:
        return None


def _plain(value: Any) -> Any:
    """What orjson cannot take itself: arrays of strings or objects, numpy scalars."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(type(value).__name__)
