"""What the feedback endpoint's bounds cost (issue 32 #6), measured side by side in one run.

The store of ids that got their truth (runtime/feedback.py SeenStore) now reads an id before it
inserts it (so a full store can still answer "already recorded") and keeps a count against
`--feedback-max-ids`; the endpoint charges a token bucket per verified id. This times one
feedback taken end to end (verify the id, score the truth, rate, record in SQLite on disk), with
the bounds and with the store as it was before them (insert first, no count, no rate), in
alternating rounds on the same disk, and prints the ratio.

    python bench/feedback_bench.py [--feedback 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from serin.runtime import feedback as fb
from serin.runtime.model import Task


class UnboundedStore(fb.SeenStore):
    """The store before issue 32 #6: insert first, read back only on a duplicate; no count."""

    def record(self, prediction: fb.Prediction, now: float) -> float | None:
        with self._lock:
            if now - self._pruned > self.PRUNE_EVERY_S:
                self._db.execute("DELETE FROM seen WHERE issued < ?", (now - self.max_age - 3600,))
                self._pruned = now
            cur = self._db.execute("INSERT OR IGNORE INTO seen VALUES (?, ?, ?)",
                                   (prediction.tag, prediction.issued_at, now))
            if cur.rowcount == 1:
                return None
            row = self._db.execute("SELECT at FROM seen WHERE tag = ?", (prediction.tag,)).fetchone()
            return float(row[0]) if row else now


def tokens(ids: fb.PredictionIds, n: int, start: float) -> list[str]:
    p = np.array([[0.8, 0.15, 0.05]])
    out = []
    for i in range(n):
        token = ids.issue(1, {"label": np.array([i % 3]), "probabilities": p}, now=start + i * 1e-3)
        assert token is not None
        out.append(token)
    return out


def seconds_per_feedback(take: fb.Feedback, batch: list[str], now: float) -> float:
    t = time.perf_counter()
    for i, token in enumerate(batch):
        take.take({"id": token, "truth": [i % 3]}, now=now)
    return (time.perf_counter() - t) / len(batch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--feedback", type=int, default=20000, help="feedback per round and variant")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    task = Task(kind="classification", output="label", classes=("0", "1", "2"))
    ids = fb.PredictionIds(fb.key_from("bench"), "m", "r1", task, "probabilities")
    now = time.time()
    results: dict[str, list[float]] = {"bounded": [], "unbounded": []}
    with tempfile.TemporaryDirectory() as d:
        stores = {"bounded": fb.SeenStore(Path(d) / "bounded.sqlite", max_age=7 * 86400),
                  "unbounded": UnboundedStore(Path(d) / "unbounded.sqlite", max_age=7 * 86400)}
        # A rate high enough never to refuse: what is timed is the bucket's bookkeeping.
        takers = {"bounded": fb.Feedback(ids, stores["bounded"], None, 7 * 86400, rate=1e9),
                  "unbounded": fb.Feedback(ids, stores["unbounded"], None, 7 * 86400, rate=0)}
        for r in range(args.rounds):
            batch = tokens(ids, args.feedback, now - 3600 + r * args.feedback * 1e-3)
            order = ("bounded", "unbounded") if r % 2 == 0 else ("unbounded", "bounded")
            for name in order:
                results[name].append(seconds_per_feedback(takers[name], batch, now))
        for store in stores.values():
            store.close()
    bounded, unbounded = (statistics.median(results[k]) for k in ("bounded", "unbounded"))
    print(f"feedback taken end to end, median of {args.rounds} rounds of {args.feedback}:")
    print(f"  with the bounds (read, count, rate): {bounded * 1e6:8.1f} us")
    print(f"  as before (insert first, unbounded): {unbounded * 1e6:8.1f} us")
    print(f"  ratio bounded / unbounded: {bounded / unbounded:.2f}")


if __name__ == "__main__":
    main()
