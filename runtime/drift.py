"""Input drift: a bounded window of recent rows, binned like the reference profile, and PSI.

The request path only appends a reference to the decoded feeds to a bounded deque (O(1));
binning, merging and PSI run in a background task. With several worker processes each keeps its
own window of `window / workers` rows and publishes its bin counts to a small file in the shared
state directory; every worker merges all live files, so whichever worker answers a scrape
exports the same PSI over the whole revision's traffic.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from serin.runtime.profile import Feature
from serin.runtime.signature import TensorSpec

log = logging.getLogger("serin.runtime.drift")

# Floor for empty bins: PSI's log(q/p) is infinite when a bin is empty on either side.
EPSILON = 1e-4


def psi(counts: np.ndarray, expected: np.ndarray, eps: float = EPSILON) -> float:
    """Population stability index of observed bin `counts` against `expected` proportions."""
    total = counts.sum()
    if total <= 0:
        return 0.0
    q = np.maximum(counts / total, eps)
    p = np.maximum(expected / max(expected.sum(), eps), eps)
    return float(np.sum((q - p) * np.log(q / p)))


# A bin whose expected count (both samples pooled) is below this is pooled with its neighbours
# for the chi-squared test: its approximation needs expected counts of about 5 or more.
MIN_EXPECTED = 5.0


def _reference_counts(proportions: np.ndarray, reference_rows: int) -> np.ndarray:
    return proportions / max(float(proportions.sum()), EPSILON) * reference_rows


def chi2_pvalue(counts: np.ndarray, proportions: np.ndarray, reference_rows: int) -> float:
    """p-value of a chi-squared test of homogeneity: the window's bin `counts` and the reference
    sample (its `proportions` of `reference_rows` rows) drawn from one distribution. A two-sample
    test: the reference's own sampling noise counts, so a small profile does not read as drift.
    Bins expected to hold fewer than MIN_EXPECTED rows are pooled."""
    from scipy.special import chdtrc  # only servers that test drift import scipy (Drift.__init__)

    window = counts.astype(np.float64)
    reference = _reference_counts(proportions, reference_rows)
    n, m = window.sum(), reference.sum()
    if n <= 0 or m <= 0:
        return 1.0
    # Pool small bins left to right (for a numeric feature, neighbours; for a categorical one,
    # the rare categories together).
    table: list[tuple[float, float]] = []
    acc_w = acc_r = 0.0
    for w, r in zip(window, reference, strict=True):
        acc_w, acc_r = acc_w + w, acc_r + r
        if (acc_w + acc_r) * min(n, m) / (n + m) >= MIN_EXPECTED:
            table.append((acc_w, acc_r))
            acc_w = acc_r = 0.0
    if acc_w + acc_r > 0:
        if table:
            last_w, last_r = table.pop()
            table.append((last_w + acc_w, last_r + acc_r))
        else:
            table.append((acc_w, acc_r))
    if len(table) < 2:
        return 1.0
    obs = np.asarray(table)  # (bins, 2): window, reference
    col = obs.sum(axis=0)
    expected = obs.sum(axis=1, keepdims=True) * col / col.sum()
    stat = float(((obs - expected) ** 2 / expected).sum())
    return float(chdtrc(len(table) - 1, stat))


def ks_pvalue(counts: np.ndarray, proportions: np.ndarray, reference_rows: int) -> float:
    """p-value of a two-sample Kolmogorov-Smirnov test on ordered bins (a numeric feature's): the
    largest gap between the window's and the reference's cumulative shares, against Kolmogorov's
    limiting distribution for n·m/(n+m) rows. On bins it sees the gaps at the cuts only, so it
    can only err towards "no drift"."""
    from scipy.special import kolmogorov

    n = float(counts.sum())
    if n <= 0 or reference_rows <= 0:
        return 1.0
    window_cdf = np.cumsum(counts) / n
    reference_cdf = np.cumsum(proportions) / max(float(proportions.sum()), EPSILON)
    gap = float(np.max(np.abs(window_cdf - reference_cdf)))
    effective = n * reference_rows / (n + reference_rows)
    return float(kolmogorov(np.sqrt(effective) * gap))


def holm(pvalues: Mapping[str, float]) -> dict[str, float]:
    """Holm's adjusted p-values: feature f drifted at family-wise error rate alpha (the chance
    that any feature is flagged when none drifted) when its adjusted p-value is <= alpha."""
    ordered = sorted(pvalues.items(), key=lambda kv: kv[1])
    m = len(ordered)
    adjusted: dict[str, float] = {}
    running = 0.0
    for i, (name, p) in enumerate(ordered):
        running = max(running, min(1.0, (m - i) * p))
        adjusted[name] = running
    return adjusted


class Binner:
    """Maps decoded feeds to one bin index per profiled feature (global, offset per feature)."""

    def __init__(self, features: Sequence[Feature], inputs: Mapping[str, TensorSpec]) -> None:
        kept: list[Feature] = []
        for f in features:
            spec = inputs.get(f.input)
            width = spec.shape[1] if spec and len(spec.shape) == 2 else 1
            if spec is None or (width is not None and f.column >= width):
                log.warning("profile feature %r (input %r, column %d) is not in the model: "
                            "not monitored", f.name, f.input, f.column)
                continue
            if f.kind == "numeric" and spec.is_string:
                log.warning("profile feature %r is numeric but input %r holds strings: not "
                            "monitored", f.name, f.input)
                continue
            kept.append(f)
        self.features = tuple(kept)
        self.inputs = tuple(dict.fromkeys(f.input for f in kept))
        sizes = [f.bins for f in kept]
        self.offsets = np.cumsum([0, *sizes[:-1]]).astype(np.int64)
        self.total_bins = int(sum(sizes))
        self._lookup = [
            {c: i for i, c in enumerate(f.categories)} if f.kind == "categorical" else {}
            for f in kept
        ]

    def bin(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        """(rows, features) int64 matrix of global bin indices."""
        cols = []
        for f, lookup, off in zip(self.features, self._lookup, self.offsets, strict=True):
            arr = feeds[f.input]
            col = arr[:, f.column] if arr.ndim == 2 else arr.reshape(-1)
            if f.kind == "numeric":
                # side="right" is the profile's contract; NaN sorts last, into the top bin.
                idx = np.searchsorted(f.cuts, col.astype(np.float64), side="right")
            else:
                other = len(f.categories)
                idx = np.fromiter((lookup.get(str(v), other) for v in col), np.int64, len(col))
            cols.append(idx + off)
        return np.stack(cols, axis=1) if cols else np.zeros((0, 0), np.int64)


class Window:
    """A ring buffer of the last `capacity` binned rows, fed lazily from pending feeds."""

    def __init__(self, binner: Binner, capacity: int) -> None:
        self.binner = binner
        self.capacity = max(1, capacity)
        self.ring = np.zeros((self.capacity, len(binner.features)), np.int64)
        self.head = 0
        self.filled = 0
        # Rows binned and not yet added to the exported per-bin counters (Monitor.flush takes them).
        self.unreported = np.zeros(binner.total_bins, np.int64)
        # Decoded feeds of recent requests, not binned yet. Single-row requests are appended
        # directly (`pending.append`: C, no Python frame): every request has at least one row, so
        # the newest `capacity` requests hold the newest `capacity` rows and older ones fall off
        # before they are ever binned. Batches go through `add`, which also drops requests whose
        # rows are older than one window, so big batches cannot pile up between updates.
        self.pending: deque[Mapping[str, np.ndarray]] = deque(maxlen=self.capacity)

    def add(self, feeds: Mapping[str, np.ndarray], rows: int) -> None:
        """Remember one request's feeds (`rows` >= 1)."""
        self.pending.append(feeds)
        if rows > 1:
            self._trim()

    def _trim(self) -> None:
        total = 0
        for kept, feeds in enumerate(reversed(self.pending), start=1):
            total += next(iter(feeds.values())).shape[0]
            if total >= self.capacity:
                for _ in range(len(self.pending) - kept):
                    self.pending.popleft()
                return

    def flush(self) -> None:
        if not self.pending:
            return
        batches = list(self.pending)
        self.pending.clear()
        # One concatenate per input, then one vectorised binning pass: binning each request's
        # feeds separately costs ~100 us per request in numpy call overhead alone.
        merged = {
            name: np.concatenate([f[name] for f in batches])[-self.capacity :]
            for name in self.binner.inputs
        }
        binned = self.binner.bin(merged)
        if binned.size:
            self.unreported += np.bincount(binned.ravel(), minlength=self.binner.total_bins)
        n = binned.shape[0]
        end = self.head + n
        if end <= self.capacity:
            self.ring[self.head : end] = binned
        else:
            split = self.capacity - self.head
            self.ring[self.head :] = binned[:split]
            self.ring[: n - split] = binned[split:]
        self.head = end % self.capacity
        self.filled = min(self.capacity, self.filled + n)

    def take_unreported(self) -> np.ndarray:
        taken, self.unreported = self.unreported, np.zeros_like(self.unreported)
        return taken

    def counts(self) -> np.ndarray:
        rows = self.ring[: self.filled]
        return np.bincount(rows.ravel(), minlength=self.binner.total_bins).astype(np.int64)


@dataclass(frozen=True)
class DriftResult:
    rows: int
    feature_psi: dict[str, float]
    # Holm-adjusted p-values of each feature's test (KS for numeric, chi-squared for categorical);
    # empty when the profile does not say how many rows it was computed from.
    feature_pvalue: dict[str, float] = field(default_factory=dict)

    @property
    def input_psi(self) -> float:
        return max(self.feature_psi.values(), default=0.0)

    @property
    def input_pvalue(self) -> float | None:
        """The smallest adjusted p-value: "some feature drifted" at family-wise rate alpha when
        it is <= alpha."""
        return min(self.feature_pvalue.values(), default=None)


def feature_pvalues(features: Sequence[Feature], offsets: np.ndarray, counts: np.ndarray,
                    reference_rows: int) -> dict[str, float]:
    """Holm-adjusted p-values, one per feature, of the window's merged bin `counts`."""
    raw = {}
    for f, off in zip(features, offsets, strict=True):
        test = ks_pvalue if f.kind == "numeric" else chi2_pvalue
        raw[f.name] = test(counts[off : off + f.bins], f.proportions, reference_rows)
    return holm(raw)


class Drift:
    """One worker's share of the drift window, plus the merged result all workers export."""

    def __init__(
        self,
        binner: Binner,
        *,
        window: int,
        workers: int,
        min_rows: int,
        state_dir: Path,
        stale_after: float = 30.0,
        reference_rows: int = 0,
    ) -> None:
        self.binner = binner
        # Rows behind the profile's proportions (0: unknown, and no p-values: a test that took the
        # reference as exact would call its sampling noise drift).
        self.reference_rows = reference_rows
        if reference_rows > 0:
            # Now, at start-up: imported by the first update it would stall the event loop that
            # serves requests for ~0.25 s.
            import scipy.special  # noqa: F401
        self.window = Window(binner, math.ceil(window / max(1, workers)))
        self.min_rows = min_rows
        self.state_dir = Path(state_dir)
        self.stale_after = stale_after
        self.path = self.state_dir / f"drift-{os.getpid()}.bin"
        self.result: DriftResult | None = None  # None until the merged window has min_rows
        self.rows = 0

    def add(self, feeds: Mapping[str, np.ndarray], rows: int) -> None:
        self.window.add(feeds, rows)

    def _publish(self) -> None:
        state = np.concatenate([[self.window.filled], self.window.counts()]).astype(np.int64)
        tmp = self.path.with_suffix(".tmp")
        state.tofile(tmp)
        os.replace(tmp, self.path)  # atomic: readers never see a half-written file

    def _merged(self) -> tuple[int, np.ndarray]:
        rows, counts = 0, np.zeros(self.binner.total_bins, np.int64)
        now = time.time()
        for path in self.state_dir.glob("drift-*.bin"):
            try:
                if now - path.stat().st_mtime > self.stale_after:
                    continue  # a worker that died without cleaning up
                state = np.fromfile(path, dtype=np.int64)
            except OSError:
                continue  # removed between glob and read
            if state.shape[0] != self.binner.total_bins + 1:
                continue
            rows += int(state[0])
            counts += state[1:]
        return rows, counts

    def tick(self) -> None:
        self.window.flush()
        self._publish()
        rows, counts = self._merged()
        self.rows = rows
        if rows < self.min_rows:
            self.result = None
            return
        scores = {}
        for f, off in zip(self.binner.features, self.binner.offsets, strict=True):
            scores[f.name] = psi(counts[off : off + f.bins], f.proportions)
        pvalues = (feature_pvalues(self.binner.features, self.binner.offsets, counts, self.reference_rows)
                   if self.reference_rows > 0 else {})
        self.result = DriftResult(rows, scores, pvalues)

    def close(self) -> None:
        self.path.unlink(missing_ok=True)
