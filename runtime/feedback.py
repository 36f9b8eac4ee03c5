"""Ground truth for earlier predictions: signed prediction ids and the feedback endpoint.

Every inference answer carries a prediction id (V2: the response `id`, or `parameters.
prediction_id` when the client chose the id; V1: `id`). The id is self-contained: it carries the
revision that answered, when, and what was predicted (labels and class probabilities, or values),
sealed with an HMAC over the model's name and a key every replica of the Model shares (the
operator keeps it in a Secret, docs/runtime.md#feedback). So `POST /v2/models/{name}/feedback`
with `{"id": ..., "truth": [...]}` can be scored by any replica of either revision, hours later,
after restarts, with no prediction store: nothing is kept per prediction but the ids that already
got their truth, on disk (SeenStore), so a duplicate is refused.

One count per prediction across replicas: each replica keeps its own SeenStore, so the same truth
sent to two replicas would count twice. An id therefore also names the replica that issued it
(Issuer: its Pod's address, $SERIN_POD_IP and the HTTP port, and its store's random identity, so
that a later Pod at the same address is another issuer; sealed so that clients do not learn the
cluster's addresses), and a replica given truth for another replica's id forwards it there
(Forwarder), encrypted and authenticated under a key derived from the Model's (AES-GCM, bound to
the issuer's identity) instead of with the sender's token: an address can be reused by another
tenant's Pod, which must learn neither a credential nor the truth, and whose answer is not
believed (the issuer's answer carries a tag). The issuer's SeenStore then decides once. Only when
the issuer cannot have taken it (its address has not answered for GONE_AFTER_S, or what answers
is not the issuer) is the truth taken where it arrived: docs/security.md says what that leaves open.

Scores go to counters labelled with the revision *in the id* (not the replica that took the
feedback), so accuracy per revision is `rate(correct) / rate(rows)` whichever pod counted it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import itertools
import logging
import math
import os
import sqlite3
import struct
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from serin.runtime.decode import RequestError
from serin.runtime.model import Task

log = logging.getLogger("serin.runtime.feedback")

KEY_ENV = "SERIN_FEEDBACK_KEY"
# The sender token: what a feedback request must carry (`Authorization: Bearer ...`). Apart from the
# key on purpose: the key mints ids (what was predicted), the token only tells truth about them.
TOKEN_ENV = "SERIN_FEEDBACK_TOKEN"
TOKEN_VERSION = 1  # an id without an issuer (a replica that does not know its address)
ISSUER_TOKEN_VERSION = 2  # an id naming the replica that issued it
# Where a replica learns its Pod's address (the downward API's status.podIP, set by the serving
# runtime's container spec); unset: its ids name no issuer and truth for them is taken anywhere.
POD_IP_ENV = "SERIN_POD_IP"
# A feedback request one replica forwards to the replica that issued its id carries this header (in
# place of the sender's token; its body sealed for the issuer), and the issuer's answer carries a
# tag over it in FORWARDED_ANSWER_HEADER.
FORWARDED_HEADER = b"serin-forwarded"
FORWARDED_ANSWER_HEADER = b"serin-forwarded-answer"
_NONCE_BYTES = 12
# An id carries the prediction itself: beyond this many bytes (a few hundred rows of a binary
# classifier) the answer gets no feedback id, and feedback must be sent per smaller request.
MAX_PAYLOAD_BYTES = 4096
# Probabilities travel quantised to 16 bits: 1.5e-5 resolution, far below what a log loss or Brier
# score averaged over many rows can show; they are left out beyond this many classes.
MAX_PROBABILITY_CLASSES = 32
PROBABILITY_SCALE = 65535
SMALL_ANSWER = 64  # probabilities in an answer up to which they are packed without numpy
# log(1 / p) of a true class given probability 0: capped at the quantisation's resolution.
MIN_PROBABILITY = 1.0 / PROBABILITY_SCALE
DEFAULT_MAX_AGE_S = 7 * 24 * 3600.0
_MAC_BYTES = 16
_KIND_CLASSIFICATION, _KIND_REGRESSION = 0, 1
_LABELS_INDEXED, _LABELS_RAW = 0, 1
_HEAD = struct.Struct(">BI8sIB")  # version, issued at (unix s), nonce (8 random bytes, counter), kind


class FeedbackError(RequestError):
    """A feedback request that cannot be taken: a 4xx with a message."""


@dataclass(frozen=True)
class Issuer:
    """The replica that issued an id: its Pod's address and port, and the random identity of its
    SeenStore (made with the store, kept with it: the same across container restarts where the
    store survives them, another for a later Pod that gets the same address)."""

    host: str
    port: int
    store: bytes  # STORE_IDENTITY_BYTES

    def packed(self) -> bytes:
        return ipaddress.ip_address(self.host).packed + struct.pack(">H", self.port) + self.store

    @staticmethod
    def unpack(packed: bytes) -> Issuer | None:
        address = len(packed) - 2 - STORE_IDENTITY_BYTES
        if address not in (4, 16):  # IPv4 or IPv6
            return None
        port = struct.unpack(">H", packed[address : address + 2])[0]
        return Issuer(str(ipaddress.ip_address(packed[:address])), port, packed[address + 2 :])


STORE_IDENTITY_BYTES = 8


@dataclass(frozen=True)
class Prediction:
    """What an id says was predicted."""

    revision: str
    issued_at: float
    tag: bytes  # the MAC: unique per id, the key a duplicate is recognised by
    rows: int
    kind: str  # "classification" | "regression"
    labels: tuple[str, ...] = ()  # classification: the predicted class of each row
    probabilities: np.ndarray | None = None  # rows x classes, in `Task.classes` order
    values: np.ndarray | None = None  # regression: the predicted value of each row
    issuer: Issuer | None = None  # the replica that issued the id


@dataclass(frozen=True)
class Scores:
    """One feedback's contribution to the performance counters."""

    rows: int
    correct: int = 0
    scored_rows: int = 0  # rows whose probabilities were known (log loss, Brier)
    log_loss: float = 0.0
    brier: float = 0.0
    absolute_error: float = 0.0
    squared_error: float = 0.0


def key_from(text: str) -> bytes:
    """Any shared secret text as a 32-byte HMAC key."""
    return hashlib.sha256(text.encode()).digest()


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64(raw: bytes) -> str:
    return binascii.b2a_base64(raw, newline=False).translate(_URLSAFE).rstrip(b"=").decode()


def _quantised(probabilities: list[float]) -> list[int]:
    """Probabilities as the 16-bit integers an id carries."""
    return [round(min(1.0, max(0.0, v)) * PROBABILITY_SCALE) for v in probabilities]  # inf is clipped too


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PredictionIds:
    """Issues and verifies the ids of one model's answers."""

    def __init__(self, key: bytes, model: str, revision: str, task: Task,
                 probability_output: str | None, issuer: Issuer | None = None) -> None:
        self.key = key
        self.model = model.encode()
        self.revision = revision.encode()[:255]
        self.task = task
        self.classes = task.classes
        self.probability_output = probability_output if len(self.classes) <= MAX_PROBABILITY_CLASSES else None
        # Unique without a urandom call per id: a random prefix per process, then a counter.
        self._prefix = os.urandom(8)
        self._counter = itertools.count(1)
        self._revision_field = bytes((len(self.revision),)) + self.revision
        # This replica's address, sealed once: the same bytes in every id of this process.
        self.issuer = issuer
        self._version = TOKEN_VERSION
        if issuer is not None:
            packed = issuer.packed()
            self._revision_field = (bytes((len(packed),)) + _xor(packed, self._issuer_mask(self._prefix, len(packed)))
                                    + self._revision_field)
            self._version = ISSUER_TOKEN_VERSION
        # Forwarding (Forwarder): requests sealed for the issuer, answers tagged by it.
        self._forward = AESGCM(hashlib.blake2b(b"serin-forwarded\0" + self.model, key=key, digest_size=32).digest())
        self._answer_key = hashlib.blake2b(b"serin-forwarded-answer\0" + self.model, key=key, digest_size=32).digest()
        # The key and the model name go through the hash once; each id copies that state.
        self._sealer = hashlib.blake2b(key=key, digest_size=_MAC_BYTES)
        self._sealer.update(self.model + b"\0")
        # One-row answers, the common case: the bytes after the row count, up to the probabilities,
        # per class column, and the column of each raw label.
        k = len(self.classes)
        self._one_row_heads = [struct.pack(">BHB", _LABELS_INDEXED, c, k) for c in range(k)]
        self._one_row_bare = [struct.pack(">BHB", _LABELS_INDEXED, c, 0) for c in range(k)]
        self._probabilities_format = struct.Struct(f">{k}H")
        self._column = ClassColumns(self.classes)
        self.class_index = self._column.index  # class (as the profile writes it) -> column

    @property
    def enabled(self) -> bool:
        return self.task.kind in ("classification", "regression") and self.task.output is not None

    # --- issuing: the request path ------------------------------------------------------------
    def issue(self, rows: int, results: dict[str, Any], now: float | None = None) -> str | None:
        """The id of an answer, None when it cannot carry one (not a known task, too large)."""
        predicted = results.get(self.task.output)  # type: ignore[arg-type]
        if predicted is None or rows <= 0 or rows > 0xFFFF:
            return None
        if self.task.kind == "classification":
            body = self._one_row(predicted, results) if rows == 1 else None
            if body is None:
                body = self._classification(rows, predicted, results)
            kind = _KIND_CLASSIFICATION
        else:
            values = np.asarray(predicted, dtype=">f4").reshape(-1)
            if values.size != rows:
                return None
            body, kind = values.tobytes(), _KIND_REGRESSION
        if body is None:
            return None
        issued = int(time.time() if now is None else now)
        head = _HEAD.pack(self._version, issued, self._prefix, next(self._counter) & 0xFFFFFFFF, kind)
        payload = b"".join((head, self._revision_field, struct.pack(">H", rows), body))
        if len(payload) > MAX_PAYLOAD_BYTES:
            return None
        return _b64(payload + self._mac(payload))

    def _one_row(self, labels: Any, results: dict[str, Any]) -> bytes | None:
        """The body of a one-row answer, the common case, without numpy; None: take the general path."""
        if getattr(labels, "size", -1) != 1:
            return None
        column = self._column(labels.item(0))
        if column < 0:
            return None
        p = results.get(self.probability_output) if self.probability_output is not None else None
        k = len(self.classes)
        if p is None or getattr(p, "shape", None) != (1, k):
            return self._one_row_bare[column]
        values = p.ravel().tolist()
        if values[column] < max(values):  # columns in another order than the classes
            return self._one_row_bare[column]
        try:  # a probability is in [0, 1]: no clipping needed, unless the model says otherwise
            quantised = self._probabilities_format.pack(*[int(v * PROBABILITY_SCALE + 0.5) for v in values])
        except (struct.error, ValueError, OverflowError):  # out of range (clipped), or NaN (left out)
            if any(math.isnan(v) for v in values):
                return self._one_row_bare[column]
            quantised = self._probabilities_format.pack(*_quantised(values))
        return self._one_row_heads[column] + quantised

    def _classification(self, rows: int, labels: Any, results: dict[str, Any]) -> bytes | None:
        if getattr(labels, "size", -1) != rows:
            return None
        keys = [class_key(v) for v in labels.ravel().tolist()]
        index = self.class_index
        indexed = all(k in index for k in keys)
        if indexed:
            labels_part = bytes((_LABELS_INDEXED,)) + struct.pack(f">{rows}H", *(index[k] for k in keys))
        else:  # a label the profile does not list (or no profile): the labels themselves
            raw = orjson.dumps(keys)
            labels_part = bytes((_LABELS_RAW,)) + struct.pack(">I", len(raw)) + raw
        probabilities = self._probabilities(rows, keys if indexed else None, results)
        if probabilities is None:
            return labels_part + b"\x00"
        return labels_part + bytes((len(self.classes),)) + probabilities

    def _probabilities(self, rows: int, keys: list[str] | None, results: dict[str, Any]) -> bytes | None:
        if self.probability_output is None or keys is None:
            return None
        p = results.get(self.probability_output)
        if p is None:
            return None
        k = len(self.classes)
        if getattr(p, "shape", None) != (rows, k):
            return None
        # The probability columns are taken to follow the profile's class order; a row whose most
        # probable column is not its predicted label says they do not (or the model thresholds
        # otherwise): then no probabilities, so no wrong log loss.
        index = self.class_index
        if rows * k <= SMALL_ANSWER:  # plain Python beats numpy's per-call overhead on a few values
            flat = p.ravel().tolist()
            if any(math.isnan(v) for v in flat):  # no probability to score a row by
                return None
            for row, key in enumerate(keys):
                values = flat[row * k : (row + 1) * k]
                if values[index[key]] < max(values):
                    return None
            return struct.pack(f">{rows * k}H", *_quantised(flat))
        p = np.asarray(p, dtype=np.float64)
        chosen = p[np.arange(rows), [index[key] for key in keys]]
        if np.isnan(p).any() or (chosen < p.max(axis=1)).any():
            return None
        return np.rint(np.clip(p, 0.0, 1.0) * PROBABILITY_SCALE).astype(">u2").tobytes()

    def _issuer_mask(self, prefix: bytes, size: int) -> bytes:
        """The bytes an issuer's address is sealed with: keyed by the Model's key and the issuing
        process's random prefix, so an id shows no address to a client, and computing it once per
        process costs the request path nothing."""
        return hashlib.blake2b(b"serin-issuer\0" + self.model + b"\0" + prefix, key=self.key,
                               digest_size=size).digest()

    def seal_for(self, issuer: Issuer, body: bytes) -> bytes:
        """A feedback body as forwarded to `issuer`: encrypted and authenticated under a key only
        the Model's replicas hold, bound to the issuer's identity (address and store), so that only
        that replica opens it: another tenant's Pod at a reused address learns nothing, and a
        captured request replayed to another replica (or a later Pod at the address) opens nowhere."""
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._forward.encrypt(nonce, body, b"serin-forwarded\0" + issuer.packed())

    def open_forwarded(self, sealed: bytes) -> tuple[bytes, bytes] | None:
        """(nonce, body) of a request forwarded to this replica, None when it does not open here."""
        if self.issuer is None or len(sealed) <= _NONCE_BYTES + 16:
            return None
        nonce = sealed[:_NONCE_BYTES]
        try:
            return nonce, self._forward.decrypt(nonce, sealed[_NONCE_BYTES:],
                                                b"serin-forwarded\0" + self.issuer.packed())
        except InvalidTag:
            return None

    def answer_tag(self, nonce: bytes, status: int, body: bytes) -> bytes:
        """The issuer's tag over its answer to the forwarded request `nonce`: an answer without it
        is not the issuer's, whatever it says."""
        return hashlib.blake2b(nonce + struct.pack(">H", status) + body, key=self._answer_key,
                               digest_size=_MAC_BYTES).hexdigest().encode()

    def _mac(self, payload: bytes) -> bytes:
        # Keyed BLAKE2b: a MAC by design (no HMAC construction needed), and the fastest in hashlib.
        # Over the model's name and the payload; the keyed state is built once (__init__).
        sealer = self._sealer.copy()
        sealer.update(payload)
        return sealer.digest()

    # --- verifying: the feedback path -----------------------------------------------------------
    def verify(self, token: Any, now: float, max_age: float) -> Prediction:
        if not isinstance(token, str) or not token:
            raise FeedbackError('"id" must be the id string of an earlier answer')
        try:
            raw = _unb64(token)
        except (ValueError, TypeError):
            raise FeedbackError(f"unknown prediction id {token[:40]!r}: not an id this model issued", 404) from None
        if len(raw) <= _MAC_BYTES + _HEAD.size or not hmac.compare_digest(
                raw[-_MAC_BYTES:], self._mac(raw[:-_MAC_BYTES])):
            raise FeedbackError(f"unknown prediction id {token[:40]!r}: not an id this model issued "
                                "(it has no valid signature)", 404)
        payload, tag = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        version, issued, process, _count, kind = _HEAD.unpack_from(payload)
        if version not in (TOKEN_VERSION, ISSUER_TOKEN_VERSION):
            raise FeedbackError(f"prediction id version {version} is not understood here", 404)
        age = now - issued
        if age > max_age:
            raise FeedbackError(f"prediction {token[:40]!r} is {age / 3600:.1f} h old: feedback is taken "
                                f"for {max_age / 3600:g} h", 410)
        pos = _HEAD.size
        issuer = None
        if version == ISSUER_TOKEN_VERSION:
            size = payload[pos]
            sealed = payload[pos + 1 : pos + 1 + size]
            issuer = Issuer.unpack(_xor(sealed, self._issuer_mask(process, size)))
            pos += 1 + size
        n = payload[pos]
        revision = payload[pos + 1 : pos + 1 + n].decode()
        pos += 1 + n
        (rows,) = struct.unpack_from(">H", payload, pos)
        pos += 2
        if kind == _KIND_REGRESSION:
            values = np.frombuffer(payload, dtype=">f4", count=rows, offset=pos).astype(np.float64)
            return Prediction(revision, float(issued), tag, rows, "regression", values=values, issuer=issuer)
        mode = payload[pos]
        pos += 1
        if mode == _LABELS_INDEXED:
            indexes = struct.unpack_from(f">{rows}H", payload, pos)
            pos += 2 * rows
            labels = tuple(self.classes[i] if i < len(self.classes) else str(i) for i in indexes)
        else:
            (size,) = struct.unpack_from(">I", payload, pos)
            labels = tuple(orjson.loads(payload[pos + 4 : pos + 4 + size]))
            pos += 4 + size
        k = payload[pos]
        pos += 1
        probabilities = None
        if k:
            probabilities = np.frombuffer(payload, dtype=">u2", count=rows * k, offset=pos).astype(
                np.float64).reshape(rows, k) / PROBABILITY_SCALE
        return Prediction(revision, float(issued), tag, rows, "classification", labels=labels,
                          probabilities=probabilities, issuer=issuer)


def _xor(data: bytes, mask: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(data, mask, strict=True))


def own_address(pod_ip: str, port: int) -> tuple[str, int] | None:
    """This replica's address as ids name it, None when $SERIN_POD_IP is unset or not an address."""
    try:
        return (str(ipaddress.ip_address(pod_ip.strip())), port) if pod_ip.strip() else None
    except ValueError:
        log.warning("%s=%r is not an IP address: ids name no issuer, truth is taken by any replica",
                    POD_IP_ENV, pod_ip)
        return None


def class_key(label: Any) -> str:
    """As the converter's profile writes classes (converters/profile.py class_key)."""
    if type(label) is int:  # the common case first: ONNX labels are int64
        return str(label)
    if isinstance(label, bool):
        return str(int(label))
    if isinstance(label, (int, float)) and float(label).is_integer():
        return str(int(label))
    if isinstance(label, bytes):
        return label.decode()
    return str(label)


class ClassColumns:
    """The column of a raw label as a model answers it (a plain int or str) among the profile's
    classes, -1 when it has none; cached per raw label for the request path, bounded so that a
    model answering ever new labels does not grow it."""

    def __init__(self, classes: tuple[str, ...]) -> None:
        self.index = {c: i for i, c in enumerate(classes)}
        self.limit = 4 * len(classes) + 16
        self._seen: dict[Any, int] = {}

    def __call__(self, label: Any) -> int:
        try:
            return self._seen[label]
        except KeyError:
            column = self.index.get(class_key(label), -1)
            if len(self._seen) < self.limit:
                self._seen[label] = column
            return column
        except TypeError:  # not hashable: not a label of any profile
            return -1

    def __len__(self) -> int:
        return len(self._seen)


def score(prediction: Prediction, classes: tuple[str, ...], truth: Any) -> Scores:
    """The prediction scored against `truth`, one label or value per row; 400 when it does not fit."""
    if prediction.rows == 1 and isinstance(truth, (str, int, float, bool)):
        truth = [truth]  # one row: its label alone will do
    if not isinstance(truth, list):
        raise FeedbackError(f'"truth" must be a list of {prediction.rows} '
                            f'{"labels" if prediction.kind == "classification" else "numbers"}, one per row')
    if len(truth) != prediction.rows:
        raise FeedbackError(f'"truth" has {len(truth)} entries, the prediction has {prediction.rows} rows')
    if prediction.kind == "regression":
        assert prediction.values is not None
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in truth):
            bad = next(i for i, v in enumerate(truth) if not isinstance(v, (int, float)) or isinstance(v, bool))
            raise FeedbackError(f'"truth"[{bad}]: {truth[bad]!r} is not a number (this model is a regressor)')
        t = np.asarray(truth, dtype=np.float64)
        if not np.all(np.isfinite(t)):
            raise FeedbackError('"truth" must hold finite numbers')
        err = prediction.values - t
        return Scores(prediction.rows, absolute_error=float(np.abs(err).sum()),
                      squared_error=float((err * err).sum()))
    keys = []
    for i, v in enumerate(truth):
        if not isinstance(v, (str, int, float, bool)) or (isinstance(v, float) and not math.isfinite(v)):
            raise FeedbackError(f'"truth"[{i}]: {v!r} is not a class label')
        key = class_key(v)
        if classes and key not in classes:
            raise FeedbackError(f'"truth"[{i}]: {v!r} is not a class of this model '
                                f'(classes: {", ".join(classes[:20])}{", ..." if len(classes) > 20 else ""})')
        keys.append(key)
    correct = sum(1 for p, t in zip(prediction.labels, keys, strict=True) if p == t)
    p = prediction.probabilities
    if p is None:
        return Scores(prediction.rows, correct=correct)
    index = {c: i for i, c in enumerate(classes)}
    true_column = np.fromiter((index[k] for k in keys), dtype=np.int64, count=len(keys))
    rows = np.arange(len(keys))
    p_true = p[rows, true_column]
    onehot = np.zeros_like(p)
    onehot[rows, true_column] = 1.0
    return Scores(prediction.rows, correct=correct, scored_rows=prediction.rows,
                  log_loss=float(-np.log(np.maximum(p_true, MIN_PROBABILITY)).sum()),
                  brier=float(((p - onehot) ** 2).sum()))


# The ids a Pod keeps at most (issue 32 #6): about 100 bytes each in SQLite with its index, so
# 1,000,000 fit the predictor's 256Mi state volume with room for the write-ahead log. Beyond it,
# feedback is refused (503) until ids age out: dropping unexpired ids instead would let a replayed
# id count twice.
DEFAULT_MAX_IDS = 1_000_000
# How long the address of the replica that issued an id may refuse connections (a container
# restarting keeps its address and its store) before its truth is taken by the others instead.
GONE_AFTER_S = 60.0
# Feedback taken per second by one worker process, with bursts of twice that: a sender flooding
# the endpoint gets 429s, not the Pod's CPU or disk.
DEFAULT_RATE = 50.0


class SeenStore:
    """The ids that already got their truth, in SQLite on disk: shared by the worker processes of a
    pod, kept over restarts (an emptyDir), bounded by the max age (older ids are refused anyway, so
    they are pruned) and by a count. Exact, unlike a Bloom filter: a legitimate feedback is never
    taken twice nor refused while the store has room.

    The count is read from the table at every prune and grown by this process's own inserts in
    between: other workers' inserts are seen at the next prune, so the store can exceed `max_ids`
    by what the other workers take in PRUNE_EVERY_S (their rate bounds that)."""

    PRUNE_EVERY_S = 60.0

    def __init__(self, path: Path, max_age: float, max_ids: int = DEFAULT_MAX_IDS) -> None:
        self.path = path
        self.max_age = max_age
        self.max_ids = max_ids
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), timeout=10.0, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS seen (tag BLOB PRIMARY KEY, issued REAL, at REAL)")
        # The store's identity, made once with it (whichever worker comes first): ids name it, so
        # truth is forwarded to this store and to no later one at the same address (Issuer).
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB)")
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('identity', ?)", (os.urandom(STORE_IDENTITY_BYTES),))
        self.identity = bytes(self._db.execute("SELECT value FROM meta WHERE key = 'identity'").fetchone()[0])
        self._pruned = 0.0
        self._count = 0

    def record(self, prediction: Prediction, now: float) -> float | None:
        """None when this is the prediction's first feedback (now recorded), else when the first
        one was recorded. Raises FeedbackError (503) when the store is full."""
        with self._lock:
            if now - self._pruned > self.PRUNE_EVERY_S:
                self._db.execute("DELETE FROM seen WHERE issued < ?", (now - self.max_age - 3600,))
                self._count = int(self._db.execute("SELECT COUNT(*) FROM seen").fetchone()[0])
                self._pruned = now
            row = self._db.execute("SELECT at FROM seen WHERE tag = ?", (prediction.tag,)).fetchone()
            if row is not None:
                return float(row[0])
            if self._count >= self.max_ids:
                raise FeedbackError(
                    f"this replica keeps the truth of {self.max_ids} predictions at most and is full; "
                    f"older ones age out after {self.max_age:.0f} s (--feedback-max-age): retry later", 503)
            cur = self._db.execute("INSERT OR IGNORE INTO seen VALUES (?, ?, ?)",
                                   (prediction.tag, prediction.issued_at, now))
            if cur.rowcount == 1:
                self._count += 1
                return None
            # Another worker recorded it between the read and the insert.
            row = self._db.execute("SELECT at FROM seen WHERE tag = ?", (prediction.tag,)).fetchone()
            return float(row[0]) if row else now

    def close(self) -> None:
        self._db.close()


def probability_output(task: Task, outputs: dict[str, Any]) -> str | None:
    """The output holding class probabilities (rows x classes floats), if the model has one."""
    if task.kind != "classification" or not task.classes:
        return None
    candidates = [name for name, spec in outputs.items()
                  if name != task.output and spec.is_float and len(spec.shape) == 2
                  and spec.shape[1] in (None, len(task.classes))]
    if "probabilities" in candidates:
        return "probabilities"
    return candidates[0] if len(candidates) == 1 else None


class TokenBucket:
    """`rate` takes per second, up to `burst` at once."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst = rate, burst
        self._tokens, self._at = burst, now

    def take(self, now: float) -> bool:
        self._tokens = min(self.burst, self._tokens + max(0.0, now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


@dataclass(frozen=True)
class Senders:
    """Who may send truth. An id proves which prediction it names, not who sends its truth: anyone
    who got an answer (any inference client reaching the Gateway) holds ids, and with them could
    tell a canary it was right every time. So truth is taken only from holders of the Model's sender
    token (the operator's Secret, key `token`, read by the team's labelling pipeline), or from anyone
    when the runtime is told so (`--feedback-senders anyone`: a runtime of one's own, not Serin's)."""

    token: str = ""
    anyone: bool = False
    secret: str = "{model}-serin-feedback-sender"  # where Serin keeps the token: named in refusals

    def check(self, authorization: bytes | None) -> None:
        """Raises FeedbackError (401, or 403 when no token is configured) unless the request's
        Authorization header value lets it send truth."""
        if self.anyone:
            return
        if not self.token:
            raise FeedbackError(f"this replica has no feedback sender token ({TOKEN_ENV}, the key 'token' of "
                                f"Secret {self.secret}): feedback is refused", 403)
        scheme, _, given = (authorization or b"").strip().partition(b" ")
        if scheme.lower() != b"bearer" or not given.strip():
            raise FeedbackError(f"feedback needs 'Authorization: Bearer <token>', the key 'token' of "
                                f"Secret {self.secret}", 401)
        # Bytes against bytes, in constant time: the header as sent, the token as UTF-8.
        if not hmac.compare_digest(given.strip(), self.token.encode("utf-8")):
            raise FeedbackError("wrong feedback sender token", 401)


class Feedback:
    """The feedback endpoint's logic for one worker: limit, verify, deduplicate, score, count."""

    def __init__(self, ids: PredictionIds, store: SeenStore, metrics: Any, max_age: float,
                 rate: float = DEFAULT_RATE, senders: Senders | None = None, gone_after: float = GONE_AFTER_S) -> None:
        # Truth for another replica's prediction goes on to that replica (per worker: async state).
        self.forwarder = Forwarder(gone_after=gone_after)
        self.senders = senders if senders is not None else Senders()
        self.ids = ids
        self.store = store
        self.metrics = metrics  # serin.runtime.monitoring.FeedbackMetrics, or None
        self.max_age = max_age
        self.rate = rate
        self._bucket = TokenBucket(rate, 2 * rate, time.monotonic()) if rate > 0 else None

    def issuer_to_ask(self, payload: Any, now: float | None = None) -> Issuer | None:
        """The replica this feedback must be forwarded to: the one that issued its id, when that is
        not this one; None: take it here. Raises FeedbackError for feedback no replica would take
        (misshapen, an unknown or expired id, truth that does not fit), so it is refused here."""
        prediction, _ = self._checked(payload, time.time() if now is None else now)
        issuer = prediction.issuer
        return issuer if issuer is not None and issuer != self.ids.issuer else None

    def _checked(self, payload: Any, now: float) -> tuple[Prediction, Scores]:
        if not isinstance(payload, dict):
            raise FeedbackError('feedback must be a JSON object {"id": ..., "truth": [...]}')
        if "id" not in payload or "truth" not in payload:
            missing = [k for k in ("id", "truth") if k not in payload]
            raise FeedbackError(f"feedback has no {' and no '.join(repr(k) for k in missing)}")
        prediction = self.ids.verify(payload["id"], now, self.max_age)
        return prediction, score(prediction, self.ids.classes, payload["truth"])

    def take(self, payload: Any, now: float | None = None, clock: float | None = None) -> dict[str, Any]:
        """A parsed feedback body → the answer's JSON; raises FeedbackError (4xx, 503). `clock`: a
        monotonic reading for the rate limit (time.monotonic() when None)."""
        now = time.time() if now is None else now
        prediction, scores = self._checked(payload, now)
        # Charged only for a verified id with well-formed truth: a flood of junk is refused by the
        # checks above (cheap, no disk) and cannot use up the rate of legitimate senders.
        if self._bucket is not None and not self._bucket.take(time.monotonic() if clock is None else clock):
            raise FeedbackError(f"too much feedback: this replica takes {self.rate:g} per second per worker "
                                "(--feedback-rate); slow down and retry", 429)
        first = self.store.record(prediction, now)
        if first is not None:
            raise FeedbackError(f"feedback for this prediction was already recorded "
                                f"{max(0.0, now - first):.0f} s ago", 409)
        if self.metrics is not None:
            self.metrics.count(prediction.revision, scores)
        return {"id": payload["id"], "revision": prediction.revision, "rows": scores.rows}

    def close(self) -> None:
        self.store.close()


@dataclass(frozen=True)
class Forwarded:
    """The issuing replica's answer to forwarded feedback, passed on to the sender."""

    status: int
    body: bytes


class Forwarder:
    """Sends feedback on to the replica that issued its id (PredictionIds.seal_for): one HTTP/1.1
    request each, no pooling (feedback is rare next to inference). Bounded: at most `max_in_flight`
    at once (429 beyond, never queued), CONNECT_TIMEOUT_S to connect, ANSWER_TIMEOUT_S for the
    answer, MAX_ANSWER_BYTES of it.

    `send` returns None only when the issuer cannot have taken the truth, so that it is taken where
    it arrived instead: what answers at the address is not the issuer (its answer lacks the
    issuer's tag, or says the request does not open there: 421), or the address has not taken a
    connection for GONE_AFTER_S (longer than a container restart: the Pod is gone). Before that the
    sender gets 503 and retries: a restarting issuer keeps its store (an emptyDir), and counting
    the truth elsewhere meanwhile would count a later retry twice. An address found gone is
    remembered for GONE_FOR_S. Once the request may have reached the issuer, its answer or a
    502/504 goes to the sender, never a local count: a retry is refused with 409 if it was taken."""

    CONNECT_TIMEOUT_S = 2.0
    ANSWER_TIMEOUT_S = 10.0
    GONE_FOR_S = 30.0
    MAX_ADDRESSES = 1024  # addresses remembered as failing or gone
    MAX_ANSWER_BYTES = 65536
    # The issuer's answers passed on as they are: it took the truth, or refused it for a reason the
    # sender must see. Any other status of the issuer's is a 502.
    PASSED_ON = frozenset({200, 400, 409, 410, 413, 429, 503})

    def __init__(self, max_in_flight: int = 32, gone_after: float = GONE_AFTER_S) -> None:
        self.max_in_flight = max_in_flight
        self.gone_after = gone_after
        self._in_flight = 0
        self._failing_since: OrderedDict[Issuer, float] = OrderedDict()
        self._gone: OrderedDict[Issuer, float] = OrderedDict()

    async def send(self, issuer: Issuer, path: str, body: bytes, ids: PredictionIds) -> Forwarded | None:
        now = time.monotonic()
        until = self._gone.get(issuer)
        if until is not None:
            if until > now:
                return None
            del self._gone[issuer]
        if self._in_flight >= self.max_in_flight:
            raise FeedbackError(f"too much feedback in flight to the replicas that issued its ids "
                                f"({self.max_in_flight}); slow down and retry", 429)
        sealed = ids.seal_for(issuer, body)
        nonce = sealed[:_NONCE_BYTES]
        self._in_flight += 1
        try:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(issuer.host, issuer.port),
                                                        self.CONNECT_TIMEOUT_S)
            except (TimeoutError, OSError):
                self._unreachable(issuer, now)  # 503 until it has been silent for GONE_AFTER_S
                return None
            self._failing_since.pop(issuer, None)
            try:
                host = f"[{issuer.host}]" if ":" in issuer.host else issuer.host
                writer.write(b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/octet-stream\r\n"
                             b"Content-Length: %d\r\n%s: 1\r\nConnection: close\r\n\r\n"
                             % (path.encode(), host.encode(), issuer.port, len(sealed), FORWARDED_HEADER))
                writer.write(sealed)
                status, tag, answer = await asyncio.wait_for(self._answer(reader), self.ANSWER_TIMEOUT_S)
            except TimeoutError:
                raise FeedbackError("the replica that issued this prediction did not answer in time; retry "
                                    "(a retry is refused with 409 if the truth was taken)", 504) from None
            except (ValueError, asyncio.LimitOverrunError):  # not HTTP as Serin's runtime answers it
                status, tag, answer = 0, None, b""
            except (OSError, asyncio.IncompleteReadError) as exc:  # cut off: it may have taken the truth
                raise FeedbackError(f"the replica that issued this prediction failed to answer "
                                    f"({type(exc).__name__}); retry", 502) from None
            finally:
                writer.close()
        finally:
            self._in_flight -= 1
        if tag is None or not hmac.compare_digest(tag, ids.answer_tag(nonce, status, answer)) or status == 421:
            # Not the issuer: another Pod holds the address, or this Model's replica that did not
            # issue the id. Whatever it answered, the truth was not taken there.
            self._remember(self._gone, issuer, now + self.GONE_FOR_S)
            return None
        if status not in self.PASSED_ON:
            raise FeedbackError(f"the replica that issued this prediction answered {status}; retry", 502)
        return Forwarded(status, answer)

    def _unreachable(self, issuer: Issuer, now: float) -> None:
        since = self._failing_since.get(issuer)
        if since is None:
            since = now
            self._remember(self._failing_since, issuer, now)
        if now - since < self.gone_after:
            raise FeedbackError(f"the replica that issued this prediction does not answer (restarting?); retry in "
                                f"a few seconds: after {self.gone_after:g} s without an answer its truth is "
                                "taken by the other replicas", 503)
        del self._failing_since[issuer]
        self._remember(self._gone, issuer, now + self.GONE_FOR_S)

    def _remember(self, table: OrderedDict[Issuer, float], issuer: Issuer, value: float) -> None:
        table[issuer] = value
        table.move_to_end(issuer)
        while len(table) > self.MAX_ADDRESSES:
            table.popitem(last=False)

    async def _answer(self, reader: Any) -> tuple[int, bytes | None, bytes]:
        """(status, the answer tag header or None, body) of an HTTP/1.1 answer; ValueError when it
        is not one, or too large."""
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise ValueError("not an HTTP answer")
        status = int(parts[1])
        if not 200 <= status <= 599:
            raise ValueError(f"status {status}")
        length, tag = None, None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value.strip())
            elif name == FORWARDED_ANSWER_HEADER.decode():
                tag = value.strip().encode()
        if length is None:  # to the end of the connection (Connection: close), within the bound
            body = b""
            while chunk := await reader.read(self.MAX_ANSWER_BYTES + 1 - len(body)):
                body += chunk
                if len(body) > self.MAX_ANSWER_BYTES:
                    raise ValueError("answer too large")
        elif not 0 <= length <= self.MAX_ANSWER_BYTES:
            raise ValueError("answer too large")
        else:
            body = await reader.readexactly(length)
        return status, tag, body
