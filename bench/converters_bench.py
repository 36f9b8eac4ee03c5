"""Converter benchmark (not a test): per zoo model, conversion time, ONNX size, and native vs
onnxruntime latency for 1 row and 1,000 rows, measured side by side in one run.

    python bench/converters_bench.py [MODEL_ID ...]
    python bench/converters_bench.py --realistic [MODEL_ID ...]   # zoo.realistic(): 100-300 trees, 30 features

Both sides run single-threaded (OMP/BLAS and onnxruntime intra-op threads = 1) so the ratio
compares the engines, not the thread pools. Latency is the median of repeated calls; "native"
means the same outputs the parity proof compares (labels and probabilities, or values).
The zoo is serin.converters.zoo, shared with tests/converters.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import onnxruntime as ort  # noqa: E402
import pandas as pd  # noqa: E402
from serin.converters import artifacts, zoo  # noqa: E402
from serin.converters.conversion import Request, run  # noqa: E402
from serin.converters.registry import converter_for  # noqa: E402
from serin.converters.sample import read_sample  # noqa: E402


def median_seconds(call: Callable[[], Any], repeats: int) -> float:
    call()  # warm-up: first calls pay for lazy initialisation on both sides
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(entry: zoo.ZooModel, root: Path) -> dict[str, Any]:
    artifact, sample_path, _, _ = entry.materialize(root / entry.id)
    out = root / entry.id / "out"
    outcome = run(Request(str(artifact), str(sample_path), out))
    if not outcome.passed:
        return {"id": entry.id, "error": outcome.report["reason"]}
    loaded = artifacts.load(artifact, None)
    converter = converter_for(loaded.format)
    frame = read_sample(sample_path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(out / "model.onnx"), options,
                                   providers=["CPUExecutionProvider"])
    row: dict[str, Any] = {"id": entry.id, "convert_s": outcome.report["seconds"],
                           "onnx_kb": (out / "model.onnx").stat().st_size / 1024,
                           "inputs": "f64" if ":double[" in outcome.report["inputs"] else "f32"}
    for rows, repeats in ((1, 200), (1000, 20)):
        batch = pd.concat([frame] * (rows // len(frame) + 1), ignore_index=True).iloc[:rows]
        sample = converter.prepare(loaded.model, batch)
        types = {i.name: i.type for i in session.get_inputs()}
        sample = replace(sample, inputs=tuple(
            replace(s, dtype={"tensor(float)": "float32", "tensor(int64)": "int64",
                              "tensor(string)": "string", "tensor(double)": "float64"}[types[s.name]])
            for s in sample.inputs))
        feeds = sample.feeds()
        def native_call(s: Any = sample) -> Any:
            return converter.predict(loaded.model, s)

        def onnx_call(f: dict[str, Any] = feeds) -> Any:
            return session.run(None, f)

        # A passthrough has no native model (its "native" run is onnxruntime again): n/a.
        native = (float("nan") if entry.format == "onnx" else median_seconds(native_call, repeats))
        onnx = median_seconds(onnx_call, repeats)
        row[f"native_{rows}"], row[f"ort_{rows}"] = native, onnx
    return row


def main(args: list[str]) -> int:
    warnings.simplefilter("ignore")
    ids = [a for a in args if a != "--realistic"]
    tier = zoo.realistic() if "--realistic" in args else zoo.models()
    entries = [m for m in tier if not ids or m.id in ids]
    print(f"{'model':46} {'in':>3} {'conv s':>7} {'KB':>8} | {'1 row native':>12} {'ort':>9} {'x':>6} | "
          f"{'1k rows native':>14} {'ort':>9} {'x':>6}")
    print("-" * 132)
    with tempfile.TemporaryDirectory(prefix="serin-bench-") as tmp:
        for entry in entries:
            r = bench(entry, Path(tmp))
            if "error" in r:
                print(f"{r['id']:46} FAILED: {r['error']}")
                continue
            if entry.format == "onnx":  # no native model to time
                print(f"{r['id']:46} {r['inputs']:>3} {r['convert_s']:7.2f} {r['onnx_kb']:8.1f} | "
                      f"{'n/a':>12} {r['ort_1'] * 1e6:7.0f}us {'':>6} | "
                      f"{'n/a':>14} {r['ort_1000'] * 1e3:7.2f}ms", flush=True)
                continue
            print(f"{r['id']:46} {r['inputs']:>3} {r['convert_s']:7.2f} {r['onnx_kb']:8.1f} | "
                  f"{r['native_1'] * 1e6:10.0f}us {r['ort_1'] * 1e6:7.0f}us "
                  f"{r['native_1'] / r['ort_1']:5.1f}x | "
                  f"{r['native_1000'] * 1e3:12.2f}ms {r['ort_1000'] * 1e3:7.2f}ms "
                  f"{r['native_1000'] / r['ort_1000']:5.1f}x", flush=True)
    print("x = native time / onnxruntime time (above 1: onnxruntime is faster); "
          "in = the graph's float inputs (f64: float32 would change branch decisions)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
