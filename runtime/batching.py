"""Requests that arrived together, run as one onnxruntime call (adaptive batching).

Under load a worker finds several complete requests on its connections each time it polls them.
Run one by one, each run starts cold: the network stack and the event loop have pushed the model
(a forest's nodes, an MLP's weights) out of the CPU caches since the last one, and for models
like those the run costs several times what it costs in a tight loop. One run over the rows of
all of them pays that once (bench/runtime_bench.py measures the gain). No request waits for
others: the batch is whatever has arrived when the loop gets to it (what MLServer's adaptive
batching and Triton's dynamic batcher do with a zero queue delay), so a lone request is run at
once as before.

Only models whose rows are independent may be batched: the runtime batches when the conversion
proved it (profile.json `batching.rowsIndependent`, checked by running the reference sample row
by row and as one batch) or when asked to (`--batch-rows`). A result that does not split by rows
(an output whose first dimension is not the batch's row count) is never split: the requests are
then run one by one, and batching stops for this process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# Rows in one batched run, unless configured. 32 single-row requests of the benchmark's forest
# run in ~0.4 ms: far inside the inline budget (app.INLINE_RUN_BUDGET_S).
DEFAULT_BATCH_ROWS = 32


def batch_key(feeds: dict[str, np.ndarray]) -> tuple[Any, ...]:
    """Requests with the same key can be concatenated row-wise. (Inputs in another order give
    another key: at worst a smaller batch.)"""
    return tuple([(name, arr.dtype, arr.shape[1:]) for name, arr in feeds.items()])


def merge(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The feeds of several requests (same batch_key) as one batch, in order."""
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def split(results: dict[str, Any], rows: Sequence[int]) -> list[dict[str, Any]] | None:
    """One batched run's outputs back into one result per request (`rows` of each, in order);
    None when an output does not have one entry per row along its first dimension."""
    total = sum(rows)
    for value in results.values():
        shape = getattr(value, "shape", None)
        if not shape or shape[0] != total:
            return None
    if len(rows) == 1:
        return [results]
    parts, start = [], 0
    for n in rows:  # slices are views: nothing is copied
        parts.append({name: value[start:start + n] for name, value in results.items()})
        start += n
    return parts
